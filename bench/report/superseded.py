"""Runs trained at a learning rate that a later search replaced.

A run's id is its config's digest, and the learning rate is part of the config: when
``python -m bench.tune`` records a new rate for a method, the next sweep trains that method's
points again under new ids, and the store then holds both. Reporting both would mix rates in one
table or ablation, so a run is left out when its rate is not the one recorded for its method and
LM size *and* its setting (every other param) has runs at the recorded rate. A run with no
replacement stays, and the method-comparison section flags its rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.sweep import tracking
from bench.sweep.learning_rates import LearningRates
from ituning.errors import ConfigError

if TYPE_CHECKING:
    from bench.report.results import Run


def split_superseded(
    runs: list[Run], label: str, rates: LearningRates
) -> tuple[list[Run], list[Run]]:
    """``(kept, superseded)`` of the FINISHED ``runs`` of profile ``label``."""

    def recorded(run: Run) -> float | None:
        try:
            return rates.chosen(label, run.method, run.lm_size)
        except ConfigError:  # searched at other sizes only: no rate is "the" rate here
            return None

    def rate(run: Run) -> float | None:
        value = run.params.get("optim.lr")
        return None if value is None else float(value)

    def other_params(run: Run) -> str:
        return tracking.setting_digest({k: v for k, v in run.params.items() if k != "optim.lr"})

    current = {other_params(r) for r in runs if rate(r) is not None and rate(r) == recorded(r)}
    kept, superseded = [], []
    for run in runs:
        wanted = recorded(run)
        stale = wanted is not None and rate(run) != wanted and other_params(run) in current
        (superseded if stale else kept).append(run)
    return kept, superseded
