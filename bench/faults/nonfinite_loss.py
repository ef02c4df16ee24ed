"""R4, a non-finite loss in one point of a sweep: that point's MLflow run is FAILED with the
reason, the other points finish, the sweep exits 1 listing the failure, and a rerun (the fault
gone) finishes that point without rerunning the others. One diverging configuration must not
cost the rest of a sweep, nor be mistaken for a result."""

from __future__ import annotations

import os
from pathlib import Path

from bench.faults import stores
from bench.faults.harness import FaultHarness
from bench.faults.trials import RowResult, Trial, expect, run_trial

#: The seed whose point gets the NaN loss.
NONFINITE_SEED = 1
#: The sweep executor (``--executor``) that injects it: this module's function below.
EXECUTOR = "bench.faults.nonfinite_loss:nonfinite_for_one_seed"
#: The spec swept, by its ``name``.
SPEC = "nonfinite"


def nonfinite_for_one_seed(
    config,
    out_dir: Path,
    *,
    on_metric=None,
    on_stage=None,
    progress: bool = True,
    scorer=None,
):
    """Sweep executor for R4: ``run_experiment``, with a NaN loss injected at step 1 of the
    seed-1 point only (``ITUNING_INJECT_NONFINITE_AT_STEP``, read by the real training loop)."""
    from ituning.stage_loop import INJECT_NONFINITE_ENV
    from ituning.train import run_experiment

    kwargs = {"on_metric": on_metric, "on_stage": on_stage, "progress": progress, "scorer": scorer}
    if config.seed != NONFINITE_SEED:
        return run_experiment(config, out_dir, **kwargs)
    os.environ[INJECT_NONFINITE_ENV] = "1"
    try:
        return run_experiment(config, out_dir, **kwargs)
    finally:
        os.environ.pop(INJECT_NONFINITE_ENV, None)


def check_nonfinite_loss(h: FaultHarness, row: RowResult) -> None:
    def trial(t: Trial) -> None:
        from bench.sweep.folders import run_dir

        runs = h.runs_dir("r4")
        spec = h.spec_file(SPEC, f"name: {SPEC}\naxes: {{seed: [0, 1, 2]}}\n")
        plans = h.plans(runs, spec)
        bad = next(p for p in plans if p.config.seed == NONFINITE_SEED)
        proc = h.run(h.sweep_args(spec, runs, "--executor", EXECUTOR))
        expect(proc.rc == 1, f"exit {proc.rc}: {proc.tail()}")
        expect("error: 1 of 3 points failed" in proc.err, f"no failure count: {proc.tail()}")
        listed = [line for line in proc.out.splitlines() if line.startswith("  failed ")]
        expect(
            len(listed) == 1 and bad.run_id in listed[0] and "training loss nan" in listed[0],
            f"failure not listed: {listed}",
        )
        mlruns = stores.sweep_mlflow_runs(runs, SPEC)
        status = stores.run_by_point(mlruns)
        expect(len(mlruns) == 3, f"{len(mlruns)} MLflow runs")
        failed = status[bad.run_id]
        expect(failed.status == "FAILED", f"the NaN point is {failed.status}")
        reason = failed.failure_reason
        expect("training loss nan" in reason, f"reason: {reason!r}")
        others = [status[p.run_id].status for p in plans if p is not bad]
        expect(others == ["FINISHED", "FINISHED"], f"other points: {others}")
        expect(not stores.outcome(run_dir(runs, bad.run_id)), "the failed point has a result")
        states = dict(stores.sweep_trial_states(runs, SPEC))
        expect(states.get(bad.run_id) == "FAIL", f"optuna trial: {states.get(bad.run_id)}")
        before = stores.snapshot(runs, plans, SPEC)
        rerun = h.run(h.sweep_args(spec, runs))  # the fault is gone: only that point runs
        after = stores.snapshot(runs, plans, SPEC)
        for p in plans:
            if p is not bad and stores.result_rewritten(before, after, p.run_id):
                t.lost += 1
        expect(
            rerun.rc == 0 and "queued 1 of 3 distinct points" in rerun.out, f"rerun: {rerun.tail()}"
        )
        expect(
            len(stores.finished_runs(after, bad.run_id)) == 1,
            "the point did not finish on the rerun",
        )
        expect(t.lost == 0, f"{t.lost} finished points rerun")
        t.notes.append(f"reason recorded: {reason[:90]}")

    run_trial(row, "NaN at step 1 of 1 of 3 points, then a rerun without the fault", trial)
    row.notes.append(
        f"sweep with `--executor {EXECUTOR}` (sets "
        "ITUNING_INJECT_NONFINITE_AT_STEP=1 for the seed-1 point only)"
    )
