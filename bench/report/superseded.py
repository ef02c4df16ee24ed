"""Runs trained at a learning rate that a later search replaced, or on backbones the profile no
longer builds.

A run's id is its config's digest, and the learning rate is part of the config: when
``python -m bench.tune`` records a new rate for a method, the next sweep trains that method's
points again under new ids, and the store then holds both. Reporting both would mix rates in one
table or ablation, so a run is left out when its rate is not the one recorded for its method and
LM size *and* its setting (every other param) has runs at the recorded rate. A run with no
replacement stays, and the method-comparison section flags its rate.

A run on other backbones than the profile now trains for its LM size (the mini LMs or vision
encoder were rebuilt, say) is of another model, whatever its settings: it is always left out.
Backbones are compared by their folder's last two names (``mini-5c09523298/mini-large``), not the
whole path, so that a runs folder spelled differently is still the same set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING

from bench.sweep import tracking
from bench.sweep.learning_rates import LearningRates
from ituning.errors import ConfigError

if TYPE_CHECKING:
    from bench.report.results import Run


def backbone_key(lm_name: str) -> tuple[str, ...]:
    """What identifies an LM's backbone set across runs folders: its path's last two names."""
    return PurePath(lm_name).parts[-2:]


@dataclass(frozen=True)
class Backbones:
    """What the profile trains on now: LM size -> LM folder, and the vision encoder's folder
    (empty / ``None``: not checked)."""

    lms: Mapping[str, str] = field(default_factory=dict)
    vision: str | None = None


def on_other_backbones(run: Run, current: Backbones) -> bool:
    """Whether ``run`` trained on another LM (for its size) or vision encoder than ``current``."""
    lm = current.lms.get(run.lm_size)
    if lm is not None and backbone_key(run.params.get("lm.name", "")) != backbone_key(lm):
        return True
    vision = run.params.get("backbones.vision")
    return None not in (current.vision, vision) and backbone_key(vision) != backbone_key(
        current.vision
    )


def split_superseded(
    runs: list[Run], label: str, rates: LearningRates, current: Backbones | None = None
) -> tuple[list[Run], list[Run]]:
    """``(kept, superseded)`` of the FINISHED ``runs`` of profile ``label``; ``current``: the
    backbones the profile trains now (``None``: not checked)."""
    backbones = current or Backbones()
    stale = [on_other_backbones(run, backbones) for run in runs]

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

    at_rate = {
        other_params(r)
        for r, old in zip(runs, stale, strict=True)
        if not old and rate(r) is not None and rate(r) == recorded(r)
    }
    kept, superseded = [], []
    for run, old in zip(runs, stale, strict=True):
        wanted = recorded(run)
        replaced = wanted is not None and rate(run) != wanted and other_params(run) in at_rate
        (superseded if old or replaced else kept).append(run)
    return kept, superseded
