"""The reproduced results, read back from MLflow: what the report and the claims are computed from.

Reading MLflow (not the run folders) means a report can be built on any machine that can reach the
tracking store, e.g. from a shared server after a multi-machine sweep. One :class:`Run` per run id
(``config_hash``): a point shared by several specs (table1's no-VLP points are table2's) is one
result listed under every spec that asked for it. Runs that differ only in their seed form a
:class:`Group`, whose metrics are summarised as mean ± standard deviation over seeds.

Which runs belong to a profile: the ``profile`` and ``scale`` params that ``bench.sweep`` logs.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bench.sweep import tracking
from bench.sweep.tracking import TrackingError

LM_ORDER = {"base": 0, "medium": 1, "large": 2}
#: Datasets whose test split fills a paper column ("shapes" stands in for MSCOCO under mini).
COLUMN_DATASETS = {"coco": ("coco", "shapes"), "flickr": ("flickr30k",)}
#: Params that do not change what is trained: a run's seed and the spec that asked for it.
_NOT_SETTING = frozenset({"seed", "point.seed", "spec"})


@dataclass(frozen=True)
class Stat:
    """A metric over the seeds of one group."""

    mean: float
    std: float | None  # sample standard deviation; None with a single seed
    n: int

    def fmt(self, digits: int = 1) -> str:
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat | None:
        vals = [float(v) for v in values if v is not None and math.isfinite(v)]
        if not vals:
            return None
        std = statistics.stdev(vals) if len(vals) > 1 else None
        return cls(statistics.fmean(vals), std, len(vals))


@dataclass(frozen=True)
class Run:
    """One finished (or failed) grid point as MLflow recorded it."""

    mlflow_id: str
    config_hash: str
    status: str
    specs: tuple[str, ...]
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    start_ms: int

    # --- the point, resolved (params logged by bench.sweep)
    @property
    def lm_size(self) -> str:
        return self.params.get("point.lm", self.tags.get("lm_size", "?"))

    @property
    def lm_name(self) -> str:
        return Path(self.params.get("resolved.lm_name", self.params.get("backbones.lm", "?"))).name

    @property
    def n_layers(self) -> int:
        return int(self.params.get("resolved.n_layers", 0))

    @property
    def d_lm(self) -> int:
        return int(self.params.get("resolved.d_lm", 0))

    @property
    def drop(self) -> int:
        return int(self.params.get("resolved.drop_first", self.params.get("itune.drop_first", 0)))

    @property
    def bottleneck(self) -> int:
        return int(self.params.get("resolved.bottleneck", self.params.get("itune.bottleneck", 0)))

    @property
    def paper_bottleneck(self) -> bool:
        """r = d_lm / 2, the width that reproduces the paper's parameter counts."""
        return self.d_lm > 0 and self.bottleneck == max(1, self.d_lm // 2)

    @property
    def lam(self) -> float:
        return float(self.params.get("point.lambda", self.params.get("itune.scale", 1.0)))

    @property
    def vlp(self) -> bool:
        return self.params.get("vlp", self.params.get("point.vlp", "False")) == "True"

    @property
    def seed(self) -> int:
        return int(self.params.get("seed", 0))

    @property
    def dataset(self) -> str:
        """``coco`` / ``flickr30k`` / ``shapes``: from the Karpathy file's name."""
        name = Path(self.params.get("data.captions", "")).stem
        return name.removeprefix("dataset_") or "?"

    @property
    def trainable_params(self) -> float | None:
        value = self.metrics.get("trainable_params")
        if value is None and "resolved.trainable_params" in self.params:
            value = float(self.params["resolved.trainable_params"])
        return value

    @property
    def wall_time_s(self) -> float | None:
        return self.metrics.get("wall_time_s")

    @property
    def run_folder(self) -> Path | None:
        folder = self.tags.get("run_folder")
        return Path(folder) if folder else None

    @property
    def failure(self) -> str:
        return self.tags.get("failure_reason", self.tags.get("killed_reason", self.status.lower()))

    @property
    def setting(self) -> str:
        """Digest of everything but the seed: runs with equal settings are seeds of one group."""
        items = sorted((k, v) for k, v in self.params.items() if k not in _NOT_SETTING)
        return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:12]

    def unavailable(self, metric: str) -> str | None:
        """Why ``metric`` (e.g. ``test/spice``) is missing, from the ``unavailable.*`` tags."""
        leaf = metric.rsplit("/", 1)[-1]
        for key in (f"unavailable.{metric}", f"unavailable.{leaf}"):
            if key in self.tags:
                return self.tags[key]
        return None

    def label(self) -> str:
        vlp = ", VLP" if self.vlp else ""
        drop = f", drop {self.drop}/{self.n_layers}" if self.drop else ""
        extra = "" if self.lam == 1.0 else f", λ={self.lam:g}"
        width = "" if self.paper_bottleneck else f", r={self.bottleneck}"
        return f"{self.lm_size} ({self.lm_name}){drop}{vlp}{extra}{width}"


@dataclass(frozen=True)
class Group:
    """The seeds of one setting, sorted by seed."""

    runs: tuple[Run, ...]

    @property
    def first(self) -> Run:
        return self.runs[0]

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs)

    @property
    def specs(self) -> tuple[str, ...]:
        return tuple(sorted({s for r in self.runs for s in r.specs}))

    def stat(self, metric: str) -> Stat | None:
        return Stat.of(r.metrics.get(metric) for r in self.runs)

    def params_stat(self) -> Stat | None:
        return Stat.of(r.trainable_params for r in self.runs)

    def sort_key(self) -> tuple:
        r = self.first
        return (
            LM_ORDER.get(r.lm_size, 9),
            r.lm_name,
            r.vlp,
            r.drop,
            r.lam,
            r.bottleneck,
            r.dataset,
            r.setting,
        )

    @property
    def newest_ms(self) -> int:
        """When its latest run started: of two settings of one point (say, runs of an older
        budget still in the store), the tables show the one run last."""
        return max(r.start_ms for r in self.runs)

    def is_default(self) -> bool:
        """The paper's module (r = d_lm/2) at lambda = 1, the setting every table row uses."""
        return self.first.paper_bottleneck and self.first.lam == 1.0


@dataclass
class RunSet:
    """Every run of one profile (and scale) in one tracking store."""

    uri: str
    profile: str
    scale: str
    runs: list[Run] = field(default_factory=list)  # FINISHED, one per config hash
    failed: list[Run] = field(default_factory=list)  # FAILED / KILLED, never finished since

    def specs(self) -> list[str]:
        return sorted({s for r in self.runs for s in r.specs})

    def groups(self, spec: str | None = None) -> list[Group]:
        by_setting: dict[str, list[Run]] = {}
        for run in self.runs:
            if spec is None or spec in run.specs:
                by_setting.setdefault(run.setting, []).append(run)
        groups = [
            Group(tuple(sorted(rs, key=lambda r: (r.seed, r.config_hash))))
            for rs in by_setting.values()
        ]
        return sorted(groups, key=Group.sort_key)

    def pick(
        self,
        *,
        lm: str,
        vlp: bool,
        drop_fraction: float = 0.0,
        datasets: tuple[str, ...] = COLUMN_DATASETS["coco"],
        prefer: tuple[str, ...] = (),
    ) -> Group | None:
        """The group that stands for one paper row: that LM size, VLP and dropped fraction.

        Candidates use the paper's module (r = d_lm/2, lambda = 1) unless a ``prefer`` spec asked
        for them (a table spec may set another base); among several, the ones from a preferred spec
        come first, then more seeds, then the most recently run, then a fixed order.
        """
        found = []
        for g in self.groups():
            r = g.first
            if r.lm_size != lm or r.vlp != vlp or r.dataset not in datasets:
                continue
            if r.drop != math.floor(drop_fraction * r.n_layers + 0.5):
                continue
            rank = next((i for i, s in enumerate(prefer) if s in g.specs), len(prefer))
            if rank == len(prefer) and not g.is_default():
                continue
            found.append((rank, -len(g.runs), -g.newest_ms, g.sort_key(), g))
        return min(found, key=lambda t: t[:4])[4] if found else None

    def pick_failed(self, *, lm: str, vlp: bool, drop_fraction: float = 0.0) -> Run | None:
        """A failed run of that point, for the reason shown in a missing cell."""
        for r in sorted(self.failed, key=lambda r: r.config_hash):
            same = r.lm_size == lm and r.vlp == vlp and r.paper_bottleneck and r.lam == 1.0
            if same and r.drop == math.floor(drop_fraction * r.n_layers + 0.5):
                return r
        return None

    def largest(self) -> Group | None:
        """The largest model: largest LM, no dropping, paper module; VLP preferred, as the paper's
        best large model (Table 3 and Figure 3)."""
        found = [
            g
            for g in self.groups()
            if g.is_default() and g.first.drop == 0 and g.first.dataset in COLUMN_DATASETS["coco"]
        ]
        if not found:
            return None
        return max(
            found,
            key=lambda g: (
                LM_ORDER.get(g.first.lm_size, -1),
                g.first.n_layers,
                g.first.vlp,
                len(g.runs),
                g.newest_ms,
                tuple(-ord(c) for c in g.first.setting),
            ),
        )

    def failures(self, spec: str | None = None) -> list[Run]:
        return [r for r in self.failed if spec is None or spec in r.specs]


def experiment_spec(experiment: str, scale: str) -> str:
    """Experiment name -> spec name (``bench.sweep.experiment_name`` adds ``-<scale>``)."""
    suffix = "" if scale == "full" else f"-{scale}"
    return experiment.removesuffix(suffix) if suffix else experiment


def load_runs(uri: str, *, profile: str, scale: str = "full") -> RunSet:
    """All runs of ``profile``/``scale``; TrackingError if the store does not exist or fails."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise TrackingError(
                f"MLflow store {db} does not exist; run the sweeps first "
                "(python -m bench.reproduce) or pass --tracking-uri / --runs-dir"
            )
    try:
        client = tracking.client(uri)
        experiments = _all_experiments(client)
        raw = _all_runs(client, [e.experiment_id for e in experiments], profile, scale)
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(
            f"MLflow tracking store {uri} cannot be read: {str(exc).splitlines()[0]}"
        ) from None
    names = {e.experiment_id: e.name for e in experiments}
    finished: dict[str, list] = {}
    other: dict[str, list] = {}
    for run in raw:
        digest = run.data.tags.get("config_hash")
        if not digest:
            continue
        bucket = finished if run.info.status == "FINISHED" else other
        bucket.setdefault(digest, []).append(run)
    out = RunSet(uri=uri, profile=profile, scale=scale)
    for digest, runs in sorted(finished.items()):
        out.runs.append(_merge(digest, runs, names, scale))
    for digest, runs in sorted(other.items()):
        if digest in finished:
            continue
        runs = [r for r in runs if r.info.status in ("FAILED", "KILLED")]
        if runs:
            out.failed.append(_merge(digest, runs, names, scale))
    return out


def _merge(digest: str, runs: list, names: dict[str, str], scale: str) -> Run:
    """Several MLflow runs of one run id (one per spec): one Run listing every spec.

    The representative is the run that trained (not one that reused a finished folder), then the
    earliest; its numbers are the run folder's ``result.json`` either way.
    """
    runs = sorted(
        runs,
        key=lambda r: (r.data.tags.get("reused_result") == "True", r.info.start_time or 0),
    )
    best = runs[0]
    specs = {
        r.data.tags.get("spec") or experiment_spec(names.get(r.info.experiment_id, "?"), scale)
        for r in runs
    }
    return Run(
        mlflow_id=best.info.run_id,
        config_hash=digest,
        status=best.info.status,
        specs=tuple(sorted(specs)),
        params=dict(best.data.params),
        metrics=dict(best.data.metrics),
        tags=dict(best.data.tags),
        start_ms=int(best.info.start_time or 0),
    )


def _all_experiments(client) -> list:
    out, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return sorted(out, key=lambda e: e.name)


def _all_runs(client, experiment_ids: list[str], profile: str, scale: str) -> list:
    if not experiment_ids:
        return []
    query = f"params.profile = '{profile}' and params.scale = '{scale}'"
    out, token = [], None
    while True:
        page = client.search_runs(experiment_ids, query, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


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
            f"downloadable from MLflow ({str(exc).splitlines()[0]})"
        ) from None
    return Path(local)


def clear(path: Path) -> None:
    """Remove a scratch folder created by :func:`fetch_artifact`."""
    shutil.rmtree(path, ignore_errors=True)
