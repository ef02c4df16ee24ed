"""R2, SIGKILL of a sweep: killed at named points (feature caching, training, training-state and
checkpoint writing, evaluation, MLflow logging, between MLflow and the queue) and at random
moments, then run again. The rerun completes with one FINISHED MLflow run per point and none
RUNNING, never reruns a finished point, and ends with results equal to an uninterrupted sweep;
a sweep that can only be trusted when nothing goes wrong cannot be trusted for days of runs."""

from __future__ import annotations

from pathlib import Path

from bench import SPECS_DIR
from bench.faults import stores
from bench.faults.harness import FaultHarness, Proc, sweep_started
from bench.faults.trials import RowResult, Trial, expect, run_trial

#: The spec killed and rerun (two points), by its ``name``.
SPEC = "smoke"


def check_sweep_kills(h: FaultHarness, row: RowResult) -> None:
    h.reference()
    rng = h.rng
    named = [
        ("feature caching", f"features.shard@{rng.randint(1, 3)}"),
        ("training", f"train.step@{rng.randint(1, 8)}"),
        ("training-state writing", f"state.save@{rng.randint(1, 4)}"),
        ("evaluation", f"evaluate.split@{rng.randint(1, 4)}"),
        ("MLflow logging", f"mlflow.log_result@{rng.randint(1, 2)}"),
    ]
    if not h.quick:
        named += [
            ("checkpoint writing", f"checkpoint.save@{rng.randint(1, 2)}"),
            ("MLflow FINISHED, queue not yet told", "sweep.finished@1"),
        ]
    kills: list[tuple[str, str | None, float | None]] = [(w, p, None) for w, p in named]
    for _ in range(h.trials if not h.quick else 0):
        kills.append(("a random moment", None, rng.uniform(0.02, 0.98) * h.reference_seconds))
    spec = SPECS_DIR / f"{SPEC}.yaml"
    for what, point, delay in kills:

        def trial(t: Trial, point=point, delay=delay) -> None:
            for _ in range(4):  # a random moment after the sweep ended: draw an earlier one
                runs = h.runs_dir("r2")
                plans = h.plans(runs, spec)
                log = runs / "kill.log"
                args = h.sweep_args(spec, runs)
                killed = h.kill_at(
                    args, point=point, delay=delay, after=sweep_started(log), log=log
                )
                if killed.killed or delay is None:
                    break
                delay *= rng.uniform(0.3, 0.9)
            expect(killed.killed, f"the sweep {killed.where} before the kill")
            before = stores.snapshot(runs, plans, SPEC)
            done = stores.finished_points(before, plans)
            left = "; ".join(
                f"{p.point['lm']}: {stores.point_folder_state(runs, p.run_id)}" for p in plans
            )
            rerun = h.run(h.sweep_args(spec, runs))
            expect_recovered(t, runs, plans, before, rerun, SPEC)
            wrong = stores.outcome_differences(stores.sweep_outcomes(runs, plans), h.reference())
            expect(not wrong, f"results differ from the uninterrupted sweep: {wrong}")
            t.notes.append(
                f"killed at {killed.where} ({done} of {len(plans)} points in MLflow; {left})"
            )

        run_trial(row, f"kill during {what}" + (f" ({point})" if point else ""), trial)
    row.notes.append(
        "smoke sweep (2 points) killed, then rerun; results compared with an uninterrupted sweep "
        "(metrics except timings, module weights byte for byte)"
    )


def expect_recovered(
    t: Trial, runs: Path, plans: list, before: dict, rerun: Proc, spec: str
) -> None:
    """The contract after a kill and a rerun of a sweep of ``spec`` (lost results are counted on
    ``t``): the rerun exits 0, each point has one FINISHED MLflow run, none is RUNNING, no optuna
    trial is left running or waiting, and no finished point was lost or run again."""
    after = stores.snapshot(runs, plans, spec)
    lost = stores.lost_points(before, after, plans)
    t.lost += lost
    expect(rerun.rc == 0, f"rerun exited {rerun.rc}: {rerun.tail()}")
    for plan in plans:
        n = len(stores.finished_runs(after, plan.run_id))
        expect(
            n == 1,
            f"{plan.point.label()}: {n} FINISHED MLflow runs (runs before the rerun "
            f"{stores.run_statuses(before, plan.run_id)}, after "
            f"{stores.run_statuses(after, plan.run_id)})",
        )
    running = stores.running_runs(after)
    expect(running == 0, f"{running} MLflow runs left RUNNING")
    stuck = stores.unfinished_trials(runs, spec)
    expect(not stuck, f"optuna trials left running/waiting: {stuck}")
    expect(lost == 0, f"{lost} finished points lost or rerun")
