"""Where a run's time goes: seconds per phase (loading, features, training, decoding, scoring...).

A reproduction budget is only tunable when its cost is measured per phase; each run logs these as
``time/<phase>_s`` metrics next to its scores. Timings differ from machine to machine and run to
run, so comparisons of two runs' results must leave them out (:func:`is_timing_metric`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

PREFIX = "time/"
#: Timing metrics logged before phases had their own names.
_LEGACY = frozenset({"train_time_s", "train_captions_per_s", "wall_time_s"})


def is_timing_metric(key: str) -> bool:
    """True for metrics that measure time or speed rather than the model."""
    return key.startswith(PREFIX) or key in _LEGACY


class PhaseClock:
    """Accumulates wall-clock seconds per named phase; a phase may be entered many times."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started

    def metrics(self) -> dict[str, float]:
        return {f"{PREFIX}{phase}_s": s for phase, s in self.seconds.items()}
