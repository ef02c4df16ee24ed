"""R9, a full disk: the runs folder (stores, run folders, artifacts) on a real tmpfs of 1-2 MB
(its empty MLflow store alone is 0.95 MB), so that a write fails with ENOSPC wherever the sweep
happens to be; or only the MLflow artifact store full, so that a trained point cannot record its
result. The sweep must exit 1
naming the points it could not finish (a dead worker is never "pending"), mark nothing FINISHED
without its result, and, once the disk has room (the tmpfs remounted larger), a rerun must finish
every point with results equal to the uninterrupted sweep's.

Mounting a tmpfs needs root (or CAP_SYS_ADMIN): elsewhere each trial fails saying so.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from bench import SPECS_DIR
from bench.faults import stores
from bench.faults.harness import FaultHarness
from bench.faults.sweep_kills import expect_recovered
from bench.faults.trials import RowResult, Trial, TrialFailed, expect, run_trial

SPEC = "smoke"
ROOMY = "256m"


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (created) for the block, lazily unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise TrialFailed(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def make_room(path: Path) -> None:
    """The fix a user makes: free space (here, the tmpfs grown in place)."""
    subprocess.run(["mount", "-o", f"remount,size={ROOMY}", str(path)], check=True)


def check_disk_full(h: FaultHarness, row: RowResult) -> None:
    reference = h.reference()
    spec = SPECS_DIR / f"{SPEC}.yaml"

    def runs_on(disk: Path) -> Path:
        """A runs folder on ``disk`` sharing the template's backbones and world."""
        runs = disk / "runs"
        runs.mkdir()
        for sub in ("backbones", "data"):
            (runs / sub).symlink_to(h.template() / sub)
        shutil.copy(h.empty_store(), runs / "mlflow.db")
        return runs

    def failed_cleanly(t: Trial, proc, runs: Path, plans: list) -> None:
        expect(proc.rc == 1, f"exit {proc.rc} on a full disk: {proc.tail()}")
        expect("Traceback" not in proc.text, f"traceback: {proc.tail()}")
        expect("disk full" in proc.text, f"the reason is not named: {proc.tail()}")
        shot = stores.snapshot(runs, plans, SPEC)
        for plan in plans:
            finished = stores.finished_runs(shot, plan.run_id)
            if finished and shot[plan.run_id]["result"] is None:
                t.lost += 1
                raise TrialFailed(f"{plan.point.label()}: FINISHED without its result.json")
            if not finished:
                expect(f"failed {plan.run_id}" in proc.out, f"{plan.run_id} not named failed")
        t.notes.append(f"{stores.finished_points(shot, plans)} of {len(plans)} points finished")

    def whole_folder(t: Trial, size: str, workers: str) -> None:
        with small_disk(h.scratch("r9-disk"), size) as disk:
            runs = runs_on(disk)
            plans = h.plans(runs, spec)
            proc = h.run(h.sweep_args(spec, runs, "--workers", workers))
            failed_cleanly(t, proc, runs, plans)
            make_room(disk)
            before = stores.snapshot(runs, plans, SPEC)
            expect_recovered(t, runs, plans, before, h.run(h.sweep_args(spec, runs)), SPEC)
            wrong = stores.outcome_differences(stores.sweep_outcomes(runs, plans), reference)
            expect(not wrong, f"results differ from the uninterrupted sweep: {wrong}")

    def artifact_store(t: Trial) -> None:
        runs = h.runs_dir("r9")
        plans = h.plans(runs, spec)
        with small_disk(runs / "mlartifacts", "64k") as disk:
            proc = h.run(h.sweep_args(spec, runs))
            failed_cleanly(t, proc, runs, plans)
            expect("could not be recorded" in proc.text, f"reason: {proc.tail()}")
            make_room(disk)
            before = stores.snapshot(runs, plans, SPEC)
            rerun = h.run(h.sweep_args(spec, runs))
            expect_recovered(t, runs, plans, before, rerun, SPEC)
            expect("reused the finished run folder" in rerun.text, "it trained again")
            wrong = stores.outcome_differences(stores.sweep_outcomes(runs, plans), reference)
            expect(not wrong, f"results differ from the uninterrupted sweep: {wrong}")

    for size, workers in [("1100k", "1"), ("1300k", "2"), ("1800k", "2")]:
        run_trial(
            row,
            f"runs folder on a {size.upper()}B disk, {workers} worker(s)",
            lambda t, size=size, workers=workers: whole_folder(t, size, workers),
        )
    run_trial(row, "only the MLflow artifact store full (64 KB)", artifact_store)
    row.notes.append(
        "smoke sweep (2 points) with its runs folder, or only its MLflow artifacts, on a real "
        f"tmpfs; then the tmpfs remounted at {ROOMY} and the sweep rerun; results compared with "
        "an uninterrupted sweep"
    )
