"""One benchmark run: the arms that produce the requested rows, collected into a :class:`Report`."""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence

import torch

from bench.perf.decoding_arms import CAPTIONS_DIFFER, measure_decoding
from bench.perf.machine import load_average, machine_info
from bench.perf.results import DECODING_ROWS, ROW_IDS, SCORING_ROWS, TRAINING_ROWS, Report
from bench.perf.scoring_arm import measure_scoring
from bench.perf.settings import Mode, Sizes
from bench.perf.training_arms import measure_training
from ituning.errors import ConfigError


def run(sizes: Sizes, mode: Mode, *, quick: bool, rows: Sequence[str] = ROW_IDS) -> Report:
    """Run the benchmarks that produce ``rows`` (and their informational rows)."""
    if mode.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda: torch sees no CUDA device; run on a GPU machine or use --device cpu"
        )
    if mode.threads is not None:
        torch.set_num_threads(mode.threads)
    report = Report(mode=mode, sizes=sizes, quick=quick, machine=machine_info(mode))
    t0 = time.perf_counter()
    wanted = set(rows)
    if wanted & TRAINING_ROWS:
        measure_training(sizes, mode, report)
        gc.collect()
    if wanted & DECODING_ROWS:
        measure_decoding(sizes, mode, report)
        gc.collect()
    if wanted & SCORING_ROWS:
        measure_scoring(sizes, report)
    if quick:  # tiny configurations: the figures show that the code runs, not the targets
        for row in report.rows:
            if row.target_rule is not None and CAPTIONS_DIFFER not in row.note:
                row.met = None
                row.target += " (quick: not judged)"
    load = load_average()
    if load is not None:
        report.machine["load average at end"] = load
    report.wall_s = time.perf_counter() - t0
    return report
