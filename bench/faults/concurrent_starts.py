"""R7, three sweeps of one spec started at once on a fresh runs folder (and one sweep with
``--workers 3``): every point trained exactly once, one FINISHED MLflow run each, no optuna trial
left running, and no race when the stores and assets are created. Several machines or terminals
sharing a runs folder is the normal way to spread a sweep."""

from __future__ import annotations

import re
import subprocess
import sys

from bench.faults import stores
from bench.faults.harness import FaultHarness
from bench.faults.trials import RowResult, Trial, expect, one_line, run_trial

#: The spec the crowd sweeps (three points), by its ``name``.
SPEC = "crowd"


def check_concurrent_starts(h: FaultHarness, row: RowResult) -> None:
    spec = h.spec_file(SPEC, f"name: {SPEC}\naxes: {{seed: [0, 1, 2]}}\n")

    def crowd(t: Trial, fresh_assets: bool, workers_flag: bool) -> None:
        runs = h.scratch("r7")
        if fresh_assets:
            runs.mkdir()
        else:
            runs = h.runs_dir("r7", store=False)
        plans = h.plans(runs, spec)
        if workers_flag:
            procs = [subprocess.Popen([sys.executable, *h.sweep_args(spec, runs, "--workers", "3")],
                                      cwd=h.work, env=h.env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)]  # fmt: skip
        else:
            procs = [
                subprocess.Popen([sys.executable, *h.sweep_args(spec, runs)], cwd=h.work,
                                 env=h.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
                for _ in range(3)
            ]  # fmt: skip
        logs = [p.communicate(timeout=900)[0] for p in procs]
        codes = [p.returncode for p in procs]
        expect(codes == [0] * len(procs), f"exit codes {codes}: {one_line(logs[0][-400:])}")
        ran = [m.group(1) for log in logs for m in re.finditer(r"\] (\w+) .*: running in ", log)]
        mlruns = stores.sweep_mlflow_runs(runs, SPEC)
        for plan in plans:
            n_ran = ran.count(plan.run_id)
            mine = [r.status for r in stores.runs_of_point(mlruns, plan.run_id)]
            t.lost += max(0, n_ran - 1)
            expect(n_ran == 1, f"{plan.point.label()} trained {n_ran} times")
            expect(mine == ["FINISHED"], f"{plan.point.label()}: MLflow runs {mine}")
        states = stores.sweep_trial_states(runs, SPEC)
        expect(not stores.unfinished_trials(runs, SPEC), f"trials {states}")
        expect(any("3/3 points finished" in log for log in logs), "no invocation saw 3/3")

    run_trial(row, "3 sweeps at once, fresh runs folder (stores and assets built by the race)",
              lambda t: crowd(t, True, False))  # fmt: skip
    for i in range(max(0, h.trials - 1) if not h.quick else 0):
        run_trial(row, f"3 sweeps at once, fresh stores (repeat {i + 1})",
                  lambda t: crowd(t, False, False))  # fmt: skip
    if not h.quick:
        run_trial(row, "one sweep with --workers 3", lambda t: crowd(t, False, True))
    row.notes.append(
        "spec of 3 points; checked from the logs (each point started once), MLflow (one run per "
        "point, FINISHED) and optuna (nothing left running or waiting)"
    )
