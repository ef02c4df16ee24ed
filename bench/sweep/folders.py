"""Run folders: ``<runs>/points/<run id>/`` holds a point's checkpoint, training state,
predictions and ``result.json``, shared by every spec that contains the point.

A folder is the worker's local working copy, not the record of completion: ``result.json`` (written
last by ``run_experiment``) lets a worker skip straight to logging a finished training, and the
training state lets a killed run resume. Whether a point is *finished* is decided by its MLflow run
(``bench.sweep.tracking.Tracker.finished``), but that record rests on the folder's result and
checkpoint: :func:`damage` says when they are gone or corrupt, :func:`set_aside` moves the damaged
files out of the way (kept as ``*.damaged`` for inspection, never silently deleted) so the point is
rebuilt (``bench.sweep.integrity``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ituning.errors import CheckpointError
from ituning.files import file_lock

POINTS_DIR = "points"
RESULT_FILE = "result.json"
CHECKPOINT_DIR = "checkpoint"
DAMAGED_SUFFIX = ".damaged"


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


def damaged_parts(out_dir: Path) -> dict[str, str]:
    """What is wrong with a trained run folder's result and checkpoint: name -> problem, empty
    when intact. The checkpoint is checked (against the weights digest it recorded) when the result
    lists it, or when the result is lost and the checkpoint is there: the attention figure and
    ``python -m ituning.caption`` need it after the run."""
    out_dir = Path(out_dir)
    parts: dict[str, str] = {}
    result = read_result(out_dir)
    if result is None:
        what = "is unreadable" if (out_dir / RESULT_FILE).exists() else "is missing"
        parts[RESULT_FILE] = f"{RESULT_FILE} {what}"
    if lists_checkpoint(result) or (result is None and (out_dir / CHECKPOINT_DIR).exists()):
        problem = checkpoint_problem(out_dir)
        if problem is not None:
            parts[CHECKPOINT_DIR] = problem
    return parts


def lists_checkpoint(result: dict[str, Any] | None) -> bool:
    """The run's result names a checkpoint among its outputs."""
    return result is not None and CHECKPOINT_DIR in result.get("artifacts", {})


def checkpoint_problem(out_dir: Path) -> str | None:
    """Why the folder's checkpoint is unusable (missing, malformed, weights not matching their
    recorded digest), or ``None``."""
    from ituning.checkpoint import verify_checkpoint

    try:
        verify_checkpoint(Path(out_dir) / CHECKPOINT_DIR)
    except CheckpointError as exc:
        return str(exc)
    return None


def damage(out_dir: Path) -> str | None:
    """:func:`damaged_parts` as one line, or ``None`` when intact."""
    return "; ".join(damaged_parts(out_dir).values()) or None


def set_aside(out_dir: Path, names: Iterable[str] = (RESULT_FILE, CHECKPOINT_DIR)) -> list[str]:
    """Move the named damaged files (result, checkpoint) to ``*.damaged``, replacing older such
    copies; returns what moved. Without its result, a point's training resumes from its state and
    rebuilds both."""
    moved = []
    for name in names:
        path = Path(out_dir) / name
        if not path.exists():
            continue
        aside = path.with_name(name + DAMAGED_SUFFIX)
        if aside.is_dir():
            shutil.rmtree(aside)
        os.replace(path, aside)
        moved.append(name)
    return moved


def has_checkpoint(out_dir: Path) -> bool:
    """A killed run left resumable state behind (``run_experiment`` continues from it)."""
    out_dir = Path(out_dir)
    return (out_dir / "state").is_dir() and any((out_dir / "state").iterdir())


@contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Exclusive lock on a run folder, so two local workers never train the same point at once."""
    with file_lock(Path(out_dir) / ".lock"):
        yield
