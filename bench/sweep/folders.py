"""Run folders: ``<runs>/points/<run id>/`` holds a point's checkpoint, training state,
predictions and ``result.json``, shared by every spec that contains the point.

A folder is the worker's local working copy, not the record of completion: ``result.json`` (written
last by ``run_experiment``) lets a worker skip straight to logging a finished training, and the
training state lets a killed run resume. Whether a point is *finished* is decided by its MLflow run
(``bench.sweep.tracking.Tracker.finished``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ituning.files import file_lock

POINTS_DIR = "points"
RESULT_FILE = "result.json"


def run_dir(runs_dir: Path, digest: str) -> Path:
    return Path(runs_dir) / POINTS_DIR / digest


def read_result(out_dir: Path) -> dict[str, Any] | None:
    """The parsed ``result.json`` of a trained run folder, else ``None`` (also if truncated)."""
    try:
        raw = json.loads((Path(out_dir) / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) and "metrics" in raw else None


def has_result(out_dir: Path) -> bool:
    return read_result(out_dir) is not None


def has_checkpoint(out_dir: Path) -> bool:
    """A killed run left resumable state behind (``run_experiment`` continues from it)."""
    out_dir = Path(out_dir)
    return (out_dir / "state").is_dir() and any((out_dir / "state").iterdir())


@contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Exclusive lock on a run folder, so two local workers never train the same point at once."""
    with file_lock(Path(out_dir) / ".lock"):
        yield
