"""MLflow tracking: one experiment per profile (``mini``, ``mini-tiny``, ``paper``), one MLflow
run per trained point, found by every spec that asks for it.

**A point's FINISHED MLflow run is the record that it is done** (:meth:`Tracker.finished`): the
coordinator enqueues what has none, a worker skips a point that has one, the summary, the dry run,
the progress bar and the report all ask it. The run folder's ``result.json`` is the worker's local
copy (it lets a rerun log a finished training without training again) and the optuna trial is only
a claim on the work; neither decides "finished".

A run carries everything needed to read it without its folder. Params: each sweep axis once, under
its own name (``lm``, ``lambda``, ``bottleneck``, ``drop``, ``vlp``, ``seed``; the resolved
numbers), every other ``TrainConfig`` setting flattened (``optim.lr``, ``data.captions``, ...),
the LM's depth and width, ``profile`` and ``scale``. Tags: ``config_hash`` (= run id =
``TrainConfig.digest()``, joining MLflow runs, optuna trials and run folders), ``spec.<name>`` =
``true`` for every spec that contains the point, the run folder, git commit, package versions and
hardware. Metrics: training curves and the final scores. Artifacts: config, predictions, module
checkpoint and the attention figure.

Default store: SQLite at ``<runs>/mlflow.db`` with artifacts under ``<runs>/mlartifacts`` (MLflow 3
refuses the plain file store). Every call goes through an explicit :class:`MlflowClient`, never the
fluent global "active run", so several runs can be tracked from one process or many.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench import REPO_ROOT
from bench.sweep.store_urls import mask_url, sqlite_problem
from ituning.errors import ITuningError, first_line
from ituning.faultpoints import fault_point
from ituning.files import canonical_json, sha256_text

DB_FILE = "mlflow.db"
#: Experiment tags MLflow's UI reads: lead the run charts (and their parallel coordinates) with
#: the metric the sweeps are about, and show the experiment as model training (runs, charts)
#: rather than the overview of generative-AI traces.
UI_TAGS = {
    "mlflow.experiment.primaryMetric.name": "test/cider",
    "mlflow.experimentKind": "custom_model_development",
}
ARTIFACT_DIR = "mlartifacts"
FLUSH_S = 5.0
PACKAGES = (
    "torch",
    "transformers",
    "open_clip_torch",
    "optuna",
    "mlflow",
    "numpy",
    "ituning-repro",
)
_BATCH_PARAMS = 100
_BATCH_METRICS = 1000


class TrackingError(ITuningError):
    """The MLflow tracking store or server is unreachable or refused a request."""


def default_tracking_uri(runs_dir: Path) -> str:
    return f"sqlite:///{Path(runs_dir) / DB_FILE}"


def _quiet() -> None:
    for name in ("alembic", "mlflow", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # It logs each database error with a page of traceback, then raises it: the caller reports
    # the error (one line, in the run's failure reason) and decides what it means.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    """Fail fast (TrackingError naming the URI) if the store or server cannot be used."""
    shown = mask_url(uri)
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:
                if resp.status != 200:
                    raise TrackingError(
                        f"MLflow tracking server {shown}: /health answered {resp.status}"
                    )
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"MLflow tracking server {shown} is unreachable ({reason}); start it "
                "(`nox -s ui`) or pass --tracking-uri"
            ) from None
        return
    if uri.startswith("file:") or "://" not in uri:
        raise TrackingError(
            f"tracking URI {shown}: MLflow 3 refuses the plain file store; use a database URI "
            "such as sqlite:///runs/mlflow.db or an http:// tracking server"
        )
    problem = sqlite_problem(uri, "sqlite:///runs/mlflow.db")
    if problem:
        raise TrackingError(f"MLflow tracking store {shown}: {problem}")
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        # Not created by a check: a sweep that fails a later check leaves no store behind.
        _check_creatable(Path(uri.removeprefix("sqlite:///")), shown)
        return
    try:
        client(uri).search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingError(
            f"MLflow tracking store {shown} is unusable: {first_line(exc)}"
        ) from None


def _check_creatable(path: Path, shown: str) -> None:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise TrackingError(
            f"MLflow tracking store {shown} is unusable: {folder} is not a writable folder"
        )


@functools.lru_cache(maxsize=8)
def client(uri: str):
    """One client per URI and process; a SQLite store is created (migrated) under a lock."""
    from mlflow import MlflowClient

    from bench.sweep.queue import creation_lock

    _quiet()  # after the import: mlflow sets its own log levels when imported
    with creation_lock(uri):  # a SQLite store's tables are created or migrated on first use
        mlflow_client = MlflowClient(tracking_uri=uri)
        if uri.startswith("sqlite:///"):
            mlflow_client.search_experiments(max_results=1)
    return mlflow_client


def spec_tag(spec: str) -> str:
    """The tag that marks a run as asked for by ``spec`` (value ``true``)."""
    return f"spec.{spec}"


def spec_filter(spec: str) -> str:
    """An MLflow search clause for the runs of ``spec`` (``mlflow.search_runs(filter_string=)``)."""
    return f"tags.`{spec_tag(spec)}` = 'true'"


def finished_if_stored(uri: str, experiment: str) -> dict[str, str]:
    """:meth:`Tracker.finished` of ``experiment`` without creating anything: empty when the SQLite
    store or the experiment does not exist yet (a dry run before the first sweep)."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return {}
    check_reachable(uri)
    if client(uri).get_experiment_by_name(experiment) is None:
        return {}
    return Tracker(uri, experiment).finished()


class Tracker:
    """The MLflow side of one profile: its experiment and the runs in it."""

    def __init__(self, uri: str, experiment: str, *, runs_dir: Path | None = None):
        self.uri = uri
        self.client = client(uri)
        self.experiment_name = experiment
        self.experiment_id = self._experiment(experiment, runs_dir)

    def _experiment(self, name: str, runs_dir: Path | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            for key, value in UI_TAGS.items():  # a store from before these tags
                if key not in found.tags:
                    self.client.set_experiment_tag(found.experiment_id, key, value)
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:") and runs_dir is not None:
            location = (Path(runs_dir) / ARTIFACT_DIR).resolve().as_uri()
        note = f"I-Tuning runs of profile {name}; filter one spec's runs with tags.`spec.NAME` = 'true'"
        try:
            return self.client.create_experiment(
                name,
                artifact_location=location,
                tags={"mlflow.note.content": note, **UI_TAGS},
            )
        except Exception:  # created concurrently by another machine's coordinator
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def runs(self, *, status: str | None = None, digest: str | None = None) -> list:
        clauses = []
        if status:
            clauses.append(f"attributes.status = '{status}'")
        if digest:
            clauses.append(f"tags.config_hash = '{digest}'")
        out, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], " and ".join(clauses), max_results=1000, page_token=token
            )
            out.extend(page)
            token = page.token
            if not token:
                return out

    def describe_spec(self, spec: str, description: str) -> None:
        """The spec's description as an experiment tag (shown in the UI beside the runs)."""
        self.client.set_experiment_tag(self.experiment_id, spec_tag(spec), description or spec)

    def tag_specs(self, run_id: str, specs: list[str]) -> None:
        """Mark a run as asked for by ``specs`` (idempotent: a point shared by specs is one run)."""
        for spec in specs:
            self.client.set_tag(run_id, spec_tag(spec), "true")

    def finished(self) -> dict[str, str]:
        """config hash -> run id of its FINISHED run: the one record that a point is done."""
        return {digest: run.info.run_id for digest, run in self.finished_runs().items()}

    def finished_runs(self) -> dict[str, Any]:
        """config hash -> its FINISHED MLflow run (with tags: where and by whom it was trained)."""
        return {
            r.data.tags["config_hash"]: r
            for r in self.runs(status="FINISHED")
            if "config_hash" in r.data.tags
        }

    def supersede(self, run_id: str, reason: str) -> None:
        """A FINISHED run whose result was lost becomes FAILED with the reason, so the point is
        queued and trained again (``bench.sweep.integrity``)."""
        self.client.set_tag(run_id, "failure_reason", reason[:7000])
        self.client.set_terminated(run_id, status="FAILED")

    def close_orphans(
        self, digest: str | None = None, *, keep: set[str] = frozenset(), study: str | None = None
    ) -> list[str]:
        """Mark RUNNING runs KILLED: those of ``digest``, or else all but the ``keep`` hashes.

        ``study`` limits it to runs queued by that optuna study: the same spec run under another
        profile (another study, maybe on another machine) is none of this coordinator's business.
        """
        killed = []
        for run in self.runs(status="RUNNING", digest=digest):
            if run.data.tags.get("config_hash") in keep:
                continue
            if study is not None and run.data.tags.get("optuna.study") != study:
                continue
            self.client.set_tag(
                run.info.run_id, "killed_reason", "its worker died; the point was re-run"
            )
            self.client.set_terminated(run.info.run_id, status="KILLED")
            killed.append(run.info.run_id)
        return killed

    def start(
        self, *, run_name: str, params: Mapping[str, Any], tags: Mapping[str, Any]
    ) -> TrackedRun:
        tags = {k: _tag_value(v) for k, v in tags.items()}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=run_name)
        tracked = TrackedRun(self.client, run.info.run_id)
        tracked.log_params(params)
        return tracked


class TrackedRun:
    """A live MLflow run: buffered metric streaming, stages, the final result, the end status."""

    def __init__(self, mlflow_client, run_id: str) -> None:
        self.client = mlflow_client
        self.run_id = run_id
        self._buffer: list = []
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), _BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=items[i : i + _BATCH_PARAMS])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, _tag_value(v)) for k, v in tags.items()]
        for i in range(0, len(items), _BATCH_PARAMS):
            self.client.log_batch(self.run_id, tags=items[i : i + _BATCH_PARAMS])

    def metric(self, name: str, value: float, step: int = 0) -> None:
        """The ``on_metric`` callback: buffered, written in batches every few seconds."""
        from mlflow.entities import Metric

        with self._lock:
            self._buffer.append(Metric(name, float(value), int(time.time() * 1000), int(step)))
            due = (
                time.monotonic() - self._last_flush > FLUSH_S or len(self._buffer) >= _BATCH_METRICS
            )
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, []
            self._last_flush = time.monotonic()
        for i in range(0, len(batch), _BATCH_METRICS):
            self.client.log_batch(self.run_id, metrics=batch[i : i + _BATCH_METRICS])

    def stage(self, name: str) -> None:
        """The ``on_stage`` callback: the current stage as a tag (visible live in the UI)."""
        self.flush()
        self.client.set_tag(self.run_id, "stage", name)

    def log_result(self, result, out_dir: Path) -> None:
        """Final metrics, unavailable metrics (as tags with the reason) and artifacts."""
        self.flush()
        for name, value in sorted(result.metrics.items()):
            self.metric(name, value, 0)
        self.flush()
        fault_point("mlflow.log_result")
        self.set_tags({f"unavailable.{k}": why for k, why in result.unavailable.items()})
        missing = {}
        for key, path in sorted(result.artifacts.items()):
            path = Path(path)
            if not path.is_absolute() and not path.exists():
                path = Path(out_dir) / path
            where = str(Path(key).parent) if "/" in key else None
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), key)
            elif path.is_file():
                self.client.log_artifact(self.run_id, str(path), where)
            else:
                missing[f"artifact_missing.{key}"] = str(path)
        result_file = Path(out_dir) / "result.json"
        if result_file.is_file():
            self.client.log_artifact(self.run_id, str(result_file))
        if missing:
            self.set_tags(missing)

    def end(self, status: str, reason: str | None = None) -> None:
        with contextlib.suppress(Exception):
            self.flush()
        if reason:
            self.client.set_tag(self.run_id, "failure_reason", reason[:7000])
        self.client.set_terminated(self.run_id, status=status)


# ---------------------------------------------------------------------- params and tags


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> dotted keys; lists stay values (logged as JSON)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def setting_digest(params: Mapping[str, Any]) -> str:
    """Digest of a run's params but its seed: the runs of one setting under several seeds share
    it (the report groups by it; each run carries it in its ``setting`` tag, for MLflow's group-by)."""
    from bench.sweep.axes import AXES
    from ituning.run_config import ADDED_AT_DEFAULT

    def recorded(key: str, value: Any) -> bool:
        """False for an axis or setting added later, at the value that means what runs before it
        did: a run from before the addition and one from after are the same setting."""
        axis = AXES.get(key)
        if axis is not None and axis.absent is not None:
            return _param_value(value) != str(axis.absent)
        if key in ADDED_AT_DEFAULT:
            default = ADDED_AT_DEFAULT[key]
            return _param_value(value) not in {_param_value(default), str(default)}
        return True

    items = sorted(
        (k, _param_value(v)) for k, v in params.items() if k != "seed" and recorded(k, v)
    )
    return sha256_text(canonical_json(items), 12)


def _param_value(value: Any) -> str:
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, sort_keys=True)
    return "null" if value is None else str(value)


def _tag_value(value: Any) -> str:
    text = _param_value(value) if not isinstance(value, str) else value
    return text[:7000]


@functools.lru_cache(maxsize=1)
def environment_tags() -> dict[str, str]:
    """Git commit, package versions and hardware of this process's machine."""
    root = REPO_ROOT
    tags: dict[str, str] = {}
    commit = _git(root, "rev-parse", "HEAD")
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
        # reports/ is what the harness itself rewrites: not a change to the code that ran
        changed = _git(
            root, "status", "--porcelain", "--untracked-files=no", "--", ".", ":!reports"
        )
        tags["git_dirty"] = str(bool(changed))
    for pkg in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            tags[f"version.{pkg}"] = importlib.metadata.version(pkg)
    tags["version.python"] = platform.python_version()
    tags["hardware.platform"] = platform.platform()
    tags["hardware.cpu"] = cpu_model()
    tags["hardware.cores"] = str(os.cpu_count())
    tags["hardware.host"] = platform.node()
    tags["hardware.accelerator"] = _accelerator()
    return tags


def cpu_model() -> str:
    """The CPU's model name (``AMD EPYC 7B13``), not just its architecture: runs are bit-for-bit
    repeatable only on the same CPU type with the same thread count."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    if platform.system() == "Darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True
            )
            if out.stdout.strip():
                return out.stdout.strip()
    return platform.processor() or platform.machine()


def _accelerator() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    except Exception:
        pass
    return "cpu"


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()
