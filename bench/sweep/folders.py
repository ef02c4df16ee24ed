"""Run ids, run folders and finished-run detection.

A run's id is the digest of its fully resolved :class:`TrainConfig`: equal configurations are the
same run, whichever spec asked for it. Its folder is ``<runs>/points/<id>/`` (checkpoint, state,
predictions, ``result.json``), shared by every spec that contains the point, so ``table2`` reuses
the models that ``table1`` trained. ``result.json`` is written last by ``run_experiment``: its
presence means "finished".
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.sweep.spec import Point
from ituning.train_config import TrainConfig

POINTS_DIR = "points"
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class Resolved:
    """What the profile made of a point: the concrete numbers behind the spec's fractions."""

    lm_name: str
    n_layers: int
    d_lm: int
    d_vis: int
    drop_first: int
    bottleneck: int
    trainable_params: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RunPlan:
    """One grid point, resolved under a profile: the unit of work of a sweep."""

    point: Point
    config: TrainConfig
    resolved: Resolved

    @property
    def run_id(self) -> str:
        return run_id(self.config)

    @property
    def relative_cost(self) -> float:
        """A proxy for the point's compute, used only to order the queue heaviest first (so that
        N workers do not end on one long point while the others idle): every layer runs forward,
        layers above the dropped ones also backward, each about d_lm^2; VLP adds its stage."""
        r, cfg = self.resolved, self.config
        per_epoch = r.d_lm**2 * (r.n_layers + 2 * (r.n_layers - r.drop_first))
        return per_epoch * (cfg.epochs + (cfg.vlp_epochs if cfg.vlp else 0))

    def queue_attrs(self) -> dict[str, Any]:
        """What an optuna trial carries so any worker can run the point."""
        return {
            "digest": self.run_id,
            "config": self.config.canonical_json(),
            "label": self.point.label(),
            "point": self.point.to_yaml(),
            "resolved": self.resolved.as_dict(),
        }


def run_id(config: TrainConfig) -> str:
    return config.digest()


def run_dir(runs_dir: Path, digest: str) -> Path:
    return Path(runs_dir) / POINTS_DIR / digest


def is_finished(out_dir: Path) -> bool:
    return read_result(out_dir) is not None


def read_result(out_dir: Path) -> dict[str, Any] | None:
    """The parsed ``result.json`` of a finished run folder, else ``None`` (also if truncated)."""
    try:
        raw = json.loads((Path(out_dir) / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) and "metrics" in raw else None


def has_checkpoint(out_dir: Path) -> bool:
    """A killed run left resumable state behind (``run_experiment`` continues from it)."""
    out_dir = Path(out_dir)
    return (out_dir / "state").is_dir() and any((out_dir / "state").iterdir())


@contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Exclusive lock on a run folder, so two local sweeps never train the same point at once.

    ``flock`` is released by the kernel when its holder dies, so a killed run leaves no stale lock.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
