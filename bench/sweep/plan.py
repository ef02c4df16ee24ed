"""A run plan: one grid point resolved under a profile, the unit of work of a sweep.

Its id is the digest of its fully resolved :class:`TrainConfig`: equal configurations are the same
run, whichever spec asked for it. The axis values a plan reports are read from that config (through
each axis's setting), so the config is the one record of what a point means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.sweep import axes
from bench.sweep.spec import Point
from ituning.run_config import TrainConfig


@dataclass(frozen=True)
class Arch:
    """Architecture facts of a plan that no axis sets: which LM the size names, its depth and
    width, the vision encoder's token width, and the trainable parameters they give (counted
    from configs)."""

    lm_name: str
    n_layers: int
    d_lm: int
    d_vis: int
    trainable_params: int

    def as_params(self) -> dict[str, str | int]:
        """Logged once per run, beside the axes (the report needs depth to read ``drop``)."""
        return {
            "lm.name": self.lm_name,
            "lm.layers": self.n_layers,
            "lm.width": self.d_lm,
            "vision.width": self.d_vis,
        }


def config_value(config: TrainConfig, dotted: str) -> Any:
    """The value of a dotted ``TrainConfig`` field (``itune.drop_first``)."""
    node: Any = config
    for key in dotted.split("."):
        node = getattr(node, key)
    return node


@dataclass(frozen=True)
class RunPlan:
    """One grid point, resolved under a profile."""

    point: Point
    config: TrainConfig
    arch: Arch

    @property
    def run_id(self) -> str:
        return self.config.digest()

    def resolved(self, axis: str) -> Any:
        """What ``axis`` resolved to (e.g. ``drop`` -> layers dropped), read from the config."""
        return config_value(self.config, axes.AXES[axis].setting)

    def axis_params(self) -> dict[str, Any]:
        """Each axis once, under its own name, with its natural type (the MLflow params)."""
        return {
            name: axis.logged(self.point[name], self.resolved(name))
            for name, axis in axes.AXES.items()
        }

    @property
    def relative_cost(self) -> float:
        """A proxy for the point's compute, used only to order the queue heaviest first (so that
        N workers do not end on one long point while the others idle): every layer runs forward,
        layers above the dropped ones also backward, each about d_lm^2; VLP adds its stage."""
        a, cfg = self.arch, self.config
        kept = a.n_layers - cfg.itune.drop_first
        per_epoch = a.d_lm**2 * (a.n_layers + 2 * kept)
        return per_epoch * (cfg.epochs + (cfg.vlp_epochs if cfg.vlp else 0))

    def queue_attrs(self, specs: list[str]) -> dict[str, Any]:
        """What an optuna trial carries so any worker can run and track the point."""
        return {
            "digest": self.run_id,
            "config": self.config.canonical_json(),
            "label": self.point.label(),
            "setting_label": self.point.label(seed=False),
            "axes": self.axis_params(),
            "arch": self.arch.as_params(),
            "specs": sorted(specs),
        }
