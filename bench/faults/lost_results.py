"""R10, finished points whose result or checkpoint is later deleted or corrupted: a rerun must
not take MLflow's FINISHED at its word. It restores each damaged file from the copy the MLflow run
keeps; when that copy is damaged too, it marks the run FAILED and trains the point again (from
its saved state); either way the folder ends with the uninterrupted sweep's results, one FINISHED
run per point. A damaged checkpoint given to ``python -m ituning.caption`` is one error line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from bench import SPECS_DIR
from bench.faults import stores
from bench.faults.harness import FaultHarness
from bench.faults.trials import RowResult, Trial, error_line, expect, run_trial
from bench.sweep.folders import run_dir

SPEC = "smoke"


def flip_byte(path: Path) -> None:
    """One byte in the middle of ``path`` inverted: damage no size check sees."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def check_lost_results(h: FaultHarness, row: RowResult) -> None:
    reference = h.reference()
    spec = SPECS_DIR / f"{SPEC}.yaml"
    runs = h.runs_dir("r10")
    plans = h.plans(runs, spec)
    first = h.run(h.sweep_args(spec, runs))
    if first.rc != 0:
        raise RuntimeError(f"the sweep to damage failed: {first.tail()}")
    folder = run_dir(runs, plans[0].run_id)  # the point each trial damages

    def mlflow_copy(name: str) -> Path:
        """The MLflow artifact copy of ``name`` of the damaged point's FINISHED run."""
        (run,) = [
            r
            for r in stores.runs_of_point(stores.sweep_mlflow_runs(runs, SPEC), plans[0].run_id)
            if r.status == "FINISHED"
        ]
        (path,) = (runs / "mlartifacts").glob(f"{run.run_id}/artifacts/{name}")
        return path

    def case(damage: Callable[[], None], said: str, *, retrained: bool = False):
        def trial(t: Trial) -> None:
            state = folder / "state" / "train_state.pt"
            stamp = state.stat().st_mtime_ns if state.exists() else None
            damage()
            proc = h.run(h.sweep_args(spec, runs))
            expect(proc.rc == 0, f"exit {proc.rc}: {proc.tail()}")
            expect(said in proc.text, f"it did not say {said!r}: {proc.tail()}")
            wrong = stores.outcome_differences(stores.sweep_outcomes(runs, plans), reference)
            t.lost += len(wrong)
            expect(not wrong, f"not rebuilt as the uninterrupted sweep's: {wrong}")
            shot = stores.snapshot(runs, plans, SPEC)
            for plan in plans:
                n = len(stores.finished_runs(shot, plan.run_id))
                expect(n == 1, f"{plan.point.label()}: {n} FINISHED MLflow runs")
            expect(stores.running_runs(shot) == 0, "an MLflow run left RUNNING")
            if stamp is not None and not retrained:
                expect(state.stat().st_mtime_ns == stamp, "it trained again")
            again = h.run(h.sweep_args(spec, runs))  # and now it is intact: nothing to do
            expect(again.rc == 0 and "restored" not in again.text, f"rerun: {again.tail()}")
            t.notes.append(said)

        return trial

    def caption_refuses(t: Trial) -> None:
        ckpt = h.scratch("r10-ckpt")
        shutil.copytree(folder / "checkpoint", ckpt)
        flip_byte(ckpt / "modules.safetensors")
        image = next((h.template() / "data" / "shapes-tiny" / "test").glob("*.png"))
        proc = h.run(["-m", "ituning.caption", str(image), "--checkpoint", str(ckpt)])
        line = error_line(proc, "modules.safetensors", "sha256")
        t.notes.append(line[-90:])

    def edit_recorded_digest() -> None:
        meta = folder / "checkpoint" / "ituning.json"
        raw = json.loads(meta.read_text())
        raw["modules_sha256"] = "0" * 64
        meta.write_text(json.dumps(raw))

    def both_copies() -> None:
        flip_byte(mlflow_copy("checkpoint/modules.safetensors"))
        flip_byte(folder / "checkpoint" / "modules.safetensors")

    restored = "restored from its MLflow run"
    cases = [
        ("result.json deleted", lambda: (folder / "result.json").unlink(), restored, False),
        (
            "result.json truncated",
            lambda: (folder / "result.json").write_text('{"metrics": {'),
            restored,
            False,
        ),
        (
            "a byte of the module weights flipped",
            lambda: flip_byte(folder / "checkpoint" / "modules.safetensors"),
            restored,
            False,
        ),
        ("the recorded weights digest edited", edit_recorded_digest, restored, False),
        (
            "the checkpoint folder deleted",
            lambda: shutil.rmtree(folder / "checkpoint"),
            restored,
            False,
        ),
        (
            "the weights flipped in the folder and in MLflow's copy",
            both_copies,
            "it is trained again",
            True,
        ),
        ("the whole run folder deleted", lambda: shutil.rmtree(folder), restored, True),
    ]
    for name, damage, said, retrained in cases:
        run_trial(row, name, case(damage, said, retrained=retrained))
    run_trial(row, "python -m ituning.caption on flipped weights", caption_refuses)
    row.notes.append(
        "smoke sweep (2 points) run once; then one point's files damaged and the sweep rerun, "
        "case after case; results compared with an uninterrupted sweep"
    )
