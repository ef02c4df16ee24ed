"""A run's files for the report: from its run folder when this machine has it, else from MLflow
(a report built on another machine than the one that trained)."""

from __future__ import annotations

from pathlib import Path

from bench.report.results import Run
from bench.sweep import tracking
from bench.sweep.tracking import TrackingError
from ituning.errors import first_line


def fetch_artifact(uri: str, run: Run, folder_name: str, artifact_path: str, dst: Path) -> Path:
    """A run's output: from its run folder when this machine has it, else downloaded from MLflow.

    ``folder_name`` is the path inside the run folder (``checkpoint``, ``predictions_test.json``);
    ``artifact_path`` the same thing in the run's MLflow artifacts.
    """
    folder = run.run_folder
    if folder is not None and (folder / folder_name).exists():
        return folder / folder_name
    dst.mkdir(parents=True, exist_ok=True)
    try:
        local = tracking.client(uri).download_artifacts(run.mlflow_id, artifact_path, str(dst))
    except Exception as exc:
        raise TrackingError(
            f"run {run.config_hash}: artifact {artifact_path!r} neither in its run folder nor "
            f"downloadable from MLflow ({first_line(exc)})"
        ) from None
    return Path(local)
