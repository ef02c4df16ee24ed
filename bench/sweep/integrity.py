"""A rerun checks what "finished" rests on before it trusts it.

A point is finished when it has a FINISHED MLflow run (``bench.sweep.tracking``), but the report,
the attention figure and ``python -m ituning.caption`` read that run's result and checkpoint from
its run folder. A folder whose ``result.json`` was deleted or whose module weights no longer match
their recorded digest would otherwise stay broken forever, every rerun saying "already finished".

So each invocation checks the run folders of its finished points that were trained on this machine
(a folder elsewhere is that machine's business): a damaged one is restored from the copy its MLflow
run keeps, checked the same way; when that copy is unusable too, the damaged files are set aside,
the run is marked FAILED with the reason, and the point is queued again: training resumes from the
folder's saved state (or starts over without it) and rebuilds the result and the checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

from bench.sweep import folders
from ituning.errors import first_line

RESTORED = (folders.RESULT_FILE, folders.CHECKPOINT_DIR)  # also their MLflow artifact paths


def check_finished(
    tracker,
    finished_runs: dict[str, object],
    digests: Iterable[str],
    runs_dir: Path,
    log: Callable[[str], None] = print,
) -> set[str]:
    """Check the run folders of the finished ``digests``; returns those that must train again."""
    lost: set[str] = set()
    for digest in sorted(set(digests) & finished_runs.keys()):
        run = finished_runs[digest]
        out_dir = folders.run_dir(runs_dir, digest)
        if not _trained_here(run, out_dir):
            continue
        parts = folders.damaged_parts(out_dir)
        if not parts:
            continue
        problem = "; ".join(parts.values())
        failure = _restore(tracker.client, run.info.run_id, out_dir, parts)
        if failure is None:
            log(f"point {digest}: {problem}; restored from its MLflow run")
            continue
        moved = folders.set_aside(out_dir, {*parts, folders.RESULT_FILE})
        reason = f"{problem}, and its MLflow copy is unusable ({failure})"
        tracker.supersede(run.info.run_id, f"{reason}; the point was trained again")
        kept = f" (damaged files kept as {', '.join(m + folders.DAMAGED_SUFFIX for m in moved)})"
        log(f"point {digest}: {reason}; it is trained again{kept if moved else ''}")
        lost.add(digest)
    return lost


def _trained_here(run, out_dir: Path) -> bool:
    """The run's worker was this host, writing into this very folder."""
    tags = run.data.tags
    host = tags.get("worker", "").rpartition(":")[0]
    folder = tags.get("run_folder")
    if host != socket.gethostname() or not folder:
        return False
    with contextlib.suppress(OSError):
        return Path(folder).resolve() == Path(out_dir).resolve()
    return False


def _restore(client, run_id: str, out_dir: Path, parts: Iterable[str]) -> str | None:
    """Replace the damaged ``parts`` of the folder by the run's MLflow copies once the whole copy
    checks out; returns why not, else ``None``."""
    staging = Path(out_dir) / f".restore-{secrets.token_hex(4)}"
    try:
        staging.mkdir(parents=True)
        for name in RESTORED:
            try:
                client.download_artifacts(run_id, name, str(staging))
            except Exception as exc:
                if name == folders.CHECKPOINT_DIR and not folders.lists_checkpoint(
                    folders.read_result(staging)
                ):
                    continue  # this run never had one
                return f"{name}: {first_line(exc)}"
        problem = folders.damage(staging)
        if problem is not None:
            return problem
        parts = set(parts)
        staged = folders.read_result(staging)  # a lost result hid whether the checkpoint counts
        if folders.lists_checkpoint(staged) and folders.checkpoint_problem(out_dir) is not None:
            parts.add(folders.CHECKPOINT_DIR)
        folders.set_aside(out_dir, parts)
        for name in parts:
            os.replace(staging / name, Path(out_dir) / name)
        return None
    except OSError as exc:
        return first_line(exc)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
