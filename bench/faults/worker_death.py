"""R12, a sweep worker that dies in the middle of a point: the executor (``--executor``) below SIGKILLs
its own process once the point's training starts, for one seed only. The coordinator must then
exit 1 naming that point (never count it "pending"), and a rerun must finish it once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.faults import stores
from bench.faults.harness import KILL_TIMEOUT_S, FaultHarness, Proc, log_tail
from bench.faults.sweep_kills import expect_recovered
from bench.faults.trials import RowResult, Trial, expect, run_trial
from ituning.faultpoints import MARKER_ENV, PAUSE_ENV

#: The seed whose worker is killed.
DYING_SEED = 1
#: The sweep executor that does it.
EXECUTOR = "bench.faults.worker_death:killed_for_one_seed"


def killed_for_one_seed(
    config,
    out_dir: Path,
    *,
    on_metric=None,
    on_stage=None,
    progress: bool = True,
    scorer=None,
):
    """``run_experiment``; for the seed-1 point, a SIGKILL of this worker when training starts
    (after loading and feature extraction: its MLflow run and optuna trial are RUNNING)."""
    from ituning.train import run_experiment

    def stage(name: str) -> None:
        if on_stage is not None:
            on_stage(name)
        if name == "train" and config.seed == DYING_SEED:
            os.kill(os.getpid(), signal.SIGKILL)

    return run_experiment(
        config, out_dir, on_metric=on_metric, on_stage=stage, progress=progress, scorer=scorer
    )


def check_worker_death(h: FaultHarness, row: RowResult) -> None:
    """Two ways a worker dies while the coordinator lives: it SIGKILLs itself when a point's
    training starts (``--executor``), or it is SIGKILLed from outside at a pause point in the
    middle of training. Either way: exit 1 naming the point, then a clean rerun."""
    two_seeds = h.spec_file("dying", "name: dying\naxes: {seed: [0, 1]}\n")
    one_point = h.spec_file("dying", "name: dying\naxes: {seed: [1]}\n")

    def recovered(t: Trial, runs: Path, spec: Path, proc, dying: str) -> None:
        plans = h.plans(runs, spec)
        expect(proc.rc == 1, f"exit {proc.rc} after a worker died: {proc.tail()}")
        expect(f"failed {dying}" in proc.out, f"the point is not named failed: {proc.tail()}")
        expect("its worker died" in proc.out, f"no reason given: {proc.tail()}")
        expect("still queued or running elsewhere" not in proc.out, "counted as pending")
        before = stores.snapshot(runs, plans, "dying")
        rerun = h.run(h.sweep_args(spec, runs))
        expect_recovered(t, runs, plans, before, rerun, "dying")

    def self_killed(t: Trial) -> None:
        runs = h.runs_dir("r12")
        (dying,) = [p.run_id for p in h.plans(runs, two_seeds) if p.point["seed"] == DYING_SEED]
        proc = h.run(h.sweep_args(two_seeds, runs, "--workers", "2", "--executor", EXECUTOR))
        recovered(t, runs, two_seeds, proc, dying)

    def killed_from_outside(t: Trial) -> None:
        runs = h.runs_dir("r12")
        (dying,) = [p.run_id for p in h.plans(runs, one_point)]
        marker = h.scratch("marker")
        # the tiny budget trains 4 steps: pause at one of the first 3 (not after the last)
        env = h.env({PAUSE_ENV: f"train.step@{h.rng.randint(1, 3)}", MARKER_ENV: str(marker)})
        args = h.sweep_args(one_point, runs, "--workers", "2")
        with open(runs / "sweep.log", "w") as log:
            sweep = subprocess.Popen(
                [sys.executable, *args], cwd=h.work, env=env, stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + KILL_TIMEOUT_S
            while not marker.exists():
                expect(
                    sweep.poll() is None, f"the sweep ended first: {log_tail(runs / 'sweep.log')}"
                )
                expect(time.monotonic() < deadline, "never reached the pause point")
                time.sleep(0.05)
            where, pid = marker.read_text().split()
            os.kill(int(pid), signal.SIGKILL)  # the worker only: the coordinator lives on
            rc = sweep.wait(timeout=120)
        finally:
            if sweep.poll() is None:
                os.killpg(sweep.pid, signal.SIGKILL)
                sweep.wait()
        text = (runs / "sweep.log").read_text(errors="replace")
        recovered(t, runs, one_point, Proc(rc, text, text, 0.0), dying)
        t.notes.append(f"worker killed at {where}")

    run_trial(row, "a worker SIGKILLs itself as training starts (2 workers, 2 points)", self_killed)
    run_trial(row, "a worker SIGKILLed from outside mid-training", killed_from_outside)
    row.notes.append(
        "a worker process dies while the coordinator lives; then the sweep is rerun as is"
    )
