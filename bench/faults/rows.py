"""The registry of fault rows R1 ... R13 and the loop that runs them.

The ids are public: the committed report (``reports/reliability.md``) and ``--rows`` name rows by
them. Each row names the fault, what must hold after it, the unit tests that also cover it, and
the function that injects it and checks the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.faults.concurrent_starts import check_concurrent_starts
from bench.faults.damaged_artefacts import check_damaged_artefacts
from bench.faults.disk_full import check_disk_full
from bench.faults.harness import FaultHarness
from bench.faults.lost_results import check_lost_results
from bench.faults.malformed_inputs import check_malformed_inputs
from bench.faults.nonfinite_loss import check_nonfinite_loss
from bench.faults.resource_bombs import check_resource_bombs
from bench.faults.several_machines import check_several_machines
from bench.faults.sweep_kills import check_sweep_kills
from bench.faults.training_kills import check_training_kills
from bench.faults.trials import FaultRow, RowResult, one_line
from bench.faults.unreachable_stores import check_unreachable_stores
from bench.faults.untrusted_files import check_untrusted_files
from bench.faults.worker_death import check_worker_death

ROWS: dict[str, FaultRow] = {
    row.id: row
    for row in [
        FaultRow(
            "R1",
            "malformed specs, CLI flags, dataset files",
            "exit 2, one error line naming file and field, no traceback, nothing written",
            "test_spec.py, test_data_loaders.py, test_train_cli.py, test_faults.py",
            check_malformed_inputs,
        ),
        FaultRow(
            "R2",
            "SIGKILL of a sweep (5+ named points, random moments)",
            "rerun completes; 1 FINISHED MLflow run per point; none RUNNING; finished never rerun",
            "test_sweep.py (mid-training kill), test_faults.py (kill during MLflow logging)",
            check_sweep_kills,
        ),
        FaultRow(
            "R3",
            "SIGKILL of a training run, then resume",
            "module weights and metrics equal to an uninterrupted run",
            "test_training.py (exceptions), test_faults.py (SIGKILL mid state write)",
            check_training_kills,
        ),
        FaultRow(
            "R4",
            "non-finite loss in one point",
            "that run FAILED with the reason; others finish; exit 1 listing it",
            "test_training.py (library), test_faults.py (through the sweep)",
            check_nonfinite_loss,
        ),
        FaultRow(
            "R5",
            "missing/corrupt backbones, data root, image, feature shard, checkpoint",
            "clear error naming artefact and fix, or a rebuild equal to the reference",
            "test_features.py, test_checkpoint.py, test_training.py, test_faults.py",
            check_damaged_artefacts,
        ),
        FaultRow(
            "R6",
            "tracking server / optuna storage unreachable or locked",
            "exit 2 with the URL, before any training",
            "test_tracking.py, test_faults.py",
            check_unreachable_stores,
        ),
        FaultRow(
            "R7",
            "3 sweeps on one study started at once",
            "each point trained exactly once; no store-creation race",
            "test_sweep.py (claims), test_faults.py (store creation)",
            check_concurrent_starts,
        ),
        FaultRow(
            "R8",
            "untrusted files: YAML tags, pickles, path traversal; UI binding",
            "refused; nothing executed or opened outside the data root; UI on loopback",
            "test_spec.py, test_data_loaders.py, test_faults.py",
            check_untrusted_files,
        ),
        FaultRow(
            "R9",
            "disk full: the runs folder, or only the MLflow artifacts, on a small tmpfs",
            "exit 1 naming the points; nothing FINISHED without its result; after freeing "
            "space the rerun finishes each point once, results as uninterrupted",
            "test_sweep_integrity.py (full disk)",
            check_disk_full,
        ),
        FaultRow(
            "R10",
            "a finished point's result or checkpoint deleted or corrupted",
            "the rerun restores it from MLflow or retrains it (run marked FAILED); results as "
            "uninterrupted; a corrupt checkpoint is one error line",
            "test_sweep_integrity.py, test_checkpoint.py, test_checkpoint_fuzz.py",
            check_lost_results,
        ),
        FaultRow(
            "R11",
            "resource bombs and hostile values: alias bombs, 10^6-point grids, FIFO, /dev/zero, "
            "deep nesting, 2^64 seeds, absurd widths and beams, stores that are folders",
            "exit 2, one error line, nothing written, within 30 s and 1 GiB of address space "
            "beyond the imports",
            "test_spec_limits.py, test_input_fuzz.py, test_tracking.py",
            check_resource_bombs,
        ),
        FaultRow(
            "R12",
            "a worker process SIGKILLed mid-point, its coordinator alive",
            "exit 1 naming the point (never 'pending'); the rerun finishes it once",
            "test_sweep_integrity.py (worker killed)",
            check_worker_death,
        ),
        FaultRow(
            "R13",
            "3 machines on a PostgreSQL queue and an MLflow server: one SIGKILLed mid-point, "
            "PostgreSQL and the tracking server each restarted mid-sweep",
            "another machine re-runs the dead one's point after the grace period, never before; "
            "1 FINISHED run per point, with its result; none RUNNING; all exit 0",
            "test_several_machines.py",
            check_several_machines,
        ),
    ]
}


def run_rows(
    work: Path,
    *,
    quick: bool = False,
    trials: int = 3,
    seed: int = 0,
    rows: Sequence[str] = tuple(ROWS),
    log: Callable[[str], None] = print,
) -> list[RowResult]:
    """Run the rows ``rows`` in a harness working in ``work``; a row that cannot even set up
    counts as one failed trial, and the next row still runs."""
    harness = FaultHarness(work, quick=quick, trials=trials, seed=seed, log=log)
    results = []
    for row_id in rows:
        row = RowResult(ROWS[row_id])
        log(f"{row_id}: {row.fault}")
        started = time.perf_counter()
        try:
            row.row.check(harness, row)
        except Exception as exc:
            row.trials += 1
            row.failures.append(f"setup: {type(exc).__name__}: {one_line(str(exc))[:300]}")
        row.seconds = time.perf_counter() - started
        results.append(row)
    return results
