"""Interleaved timing of competing arms, so that load from other processes hits every arm alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tqdm.auto import tqdm

from bench.perf.results import Ratio, format_seconds
from bench.perf.settings import Mode


@dataclass(frozen=True)
class Timing:
    """Per-repetition wall and process-CPU seconds of one arm."""

    wall: list[float]
    cpu: list[float]

    def by(self, clock: str) -> list[float]:
        return self.cpu if clock == "process" else self.wall


def interleaved(
    arms: Mapping[str, Callable[[], object]],
    *,
    reps: int,
    warmup: int,
    sync: Callable[[], None],
    desc: str,
) -> dict[str, Timing]:
    """Time each arm ``reps`` times, in alternating order (A B C, C B A, ...), after warm-up.

    Alternating the order cancels a linear drift in machine load; warm-up runs (allocator, lazy
    initialisation, optimizer state) are not timed.
    """
    names = list(arms)
    for _ in range(warmup):
        for name in names:
            arms[name]()
    out = {n: Timing([], []) for n in names}
    for rep in tqdm(range(reps), desc=desc, unit="rep", leave=False):
        for name in names if rep % 2 == 0 else names[::-1]:
            sync()
            w0, c0 = time.perf_counter(), time.process_time()
            arms[name]()
            sync()
            out[name].wall.append(time.perf_counter() - w0)
            out[name].cpu.append(time.process_time() - c0)
    return out


def format_times(t: Timing, mode: Mode) -> str:
    """Median of the clock the ratios use, and the wall median when that differs."""
    main = format_seconds(statistics.median(t.by(mode.clock)))
    if mode.clock == "wall":
        return main
    return f"{main} CPU ({format_seconds(statistics.median(t.wall))} wall)"


def wall_ratio_note(num: Timing, den: Timing, mode: Mode) -> str:
    """The wall-time ratio, shown next to a CPU-time ratio (empty when the ratio is wall time)."""
    if mode.clock == "wall":
        return ""
    return f"wall-time ratio {Ratio.paired(num.wall, den.wall)}"
