"""The reproduced results, read back from MLflow as a table: what the report and the claims use.

Reading MLflow (not the run folders) means a report can be built on any machine that can reach the
tracking store, e.g. from a shared server after a multi-machine sweep. The runs of a profile are
one MLflow experiment (``mini``, ``mini-tiny``, ``paper``); ``mlflow.search_runs`` returns them as
a DataFrame, one row per run, with ``params.<axis>`` columns for the sweep axes
(``bench.sweep.axes``), ``metrics.*`` for the scores and ``tags.spec.<name>`` for the specs that
asked for each point. One FINISHED run per run id (``config_hash``) is a :class:`Run`; runs whose
settings differ only in their seed form a :class:`Group`, summarised over seeds with pandas (mean,
sample standard deviation, count) by :meth:`RunSet.summary`, which is also what the report writes
as CSV.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.sweep import axes, tracking
from ituning.methods.registry import METHODS

GPT2, LLAMA = "GPT-2", "Llama"
#: ``lm`` axis values whose LM has Llama's architecture (``llama-base``, ``smollm2``, ...).
LLAMA_PREFIXES = ("llama-", "smollm2")


def epochs_text(n: int | None) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def lm_family(lm: str) -> str:
    """The architecture family of an ``lm`` axis value: ``Llama`` or ``GPT-2`` (every other value,
    the paper's sizes among them). The size claims and Tables 1-2 read the GPT-2 values only."""
    return LLAMA if lm.startswith(LLAMA_PREFIXES) else GPT2


#: The GPT-2 sizes, smallest first (``axes.LM_SIZES``, not every ``lm`` value): an LM of another
#: family never ranks as a GPT-2 size, so ``RunSet.largest`` stays on GPT-2 beside it.
LM_ORDER = {size: i for i, size in enumerate(axes.LM_SIZES)}


def lm_rank(lm: str) -> tuple[bool, int, str]:
    """Where an LM sorts in tables: the GPT-2 sizes, then Llama's by size, then by name."""
    return (lm_family(lm) != GPT2, LM_ORDER.get(lm.removeprefix("llama-"), len(LM_ORDER)), lm)


#: Datasets whose test split fills a paper column ("shapes" stands in for MSCOCO under mini).
COLUMN_DATASETS = {"coco": ("coco",), "flickr": ("flickr30k",)}
SPEC_PREFIX = tracking.spec_tag("")


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
    def of(cls, values: Iterable[float | None]) -> Stat | None:
        series = pd.Series([v for v in values if v is not None], dtype="float64")
        series = series[series.map(math.isfinite)]
        if series.empty:
            return None
        std = float(series.std(ddof=1)) if len(series) > 1 else None
        return cls(float(series.mean()), std, int(series.count()))


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
    end_ms: int = 0
    #: The profile's epochs (its budget): a run trained longer or shorter is not a seed of the
    #: same row, and its label says so. ``None``: unknown, every run counts as at the budget.
    budget_epochs: int | None = None
    #: The λ searched for this run's method and LM size under its profile (1 where none was):
    #: what a spec's ``lambda: null`` trained, so the "paper module" of every table row.
    searched_lambda: float = 1.0

    def axis(self, name: str):
        """The value of sweep axis ``name`` (its MLflow param, with its natural type)."""
        return axes.AXES[name].read(self.params.get(name))

    @property
    def lm_size(self) -> str:
        return self.axis("lm") or "?"

    @property
    def lm_family(self) -> str:
        return lm_family(self.lm_size)

    @property
    def method(self) -> str:
        """The captioner (``itune`` for runs recorded before methods existed)."""
        return self.axis("method")

    @property
    def lm_name(self) -> str:
        return Path(self.params.get("lm.name", "?")).name

    @property
    def n_layers(self) -> int:
        return int(self.params.get("lm.layers", 0))

    @property
    def d_lm(self) -> int:
        return int(self.params.get("lm.width", 0))

    @property
    def drop(self) -> int:
        return self.axis("drop") or 0

    @property
    def bottleneck(self) -> int:
        return self.axis("bottleneck") or 0

    @property
    def paper_bottleneck(self) -> bool:
        """The library's default width (d_lm / 2), which reproduces the paper's counts."""
        from ituning.config import ITuningConfig

        return self.d_lm > 0 and self.bottleneck == ITuningConfig().resolved_bottleneck(self.d_lm)

    @property
    def lam(self) -> float:
        value = self.axis("lambda")
        return 1.0 if value is None else value

    @property
    def default_lambda(self) -> bool:
        """Trained at the λ a table row uses: the searched one (1 where none was searched)."""
        return self.lam == self.searched_lambda

    @property
    def vlp(self) -> bool:
        return bool(self.axis("vlp"))

    @property
    def seed(self) -> int:
        return self.axis("seed") or 0

    @property
    def dataset(self) -> str:
        """``coco`` / ``flickr30k``: the ``dataset`` axis (at mini, Shapes / Shapes-Flickr)."""
        return self.axis("dataset")

    @property
    def epochs(self) -> int | None:
        value = self.params.get("epochs")
        return int(value) if value is not None else None

    @property
    def at_budget(self) -> bool:
        """Trained for the profile budget's epochs (what every table row and claim compares),
        not at a spec's other budget (e.g. the grounding spec's longer training)."""
        return self.budget_epochs is None or self.epochs in (None, self.budget_epochs)

    def budget_label(self) -> str:
        """``", 12 epochs"`` for a run off the profile's budget, else empty."""
        return "" if self.at_budget else f", {epochs_text(self.epochs)}"

    @property
    def trainable_params(self) -> float | None:
        return self.metrics.get("trainable_params")

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
        """Digest of every param but the seed: runs with equal settings are seeds of one group."""
        return tracking.setting_digest(self.params)

    def matches(self, point, epochs: int | None = None) -> bool:
        """Whether this run is a seed of the spec point ``point`` (a ``bench.sweep.spec.Point``),
        resolved against this run's own LM: a point's runs are found whichever spec made them.
        ``epochs``: the spec's own (an override), else the profile budget's."""
        wanted = epochs if epochs is not None else self.budget_epochs
        if wanted is not None and self.epochs is not None and self.epochs != wanted:
            return False
        on = axes.Target(
            _RunLM(self.params.get("lm.name", ""), self.n_layers, self.d_lm),
            searched_lambda=self.searched_lambda,
        )
        for name, axis in axes.AXES.items():
            if name == "seed":
                continue
            if axis.logged_on(point[name], on) != self.axis(name):
                return False
        return True

    def unavailable(self, metric: str) -> str | None:
        """Why ``metric`` (e.g. ``test/spice``) is missing, from the ``unavailable.*`` tags."""
        leaf = metric.rsplit("/", 1)[-1]
        for key in (f"unavailable.{metric}", f"unavailable.{leaf}"):
            if key in self.tags:
                return self.tags[key]
        return None

    def label(self) -> str:
        data = "" if self.dataset == "coco" else f", on {self.dataset}"
        if self.method != "itune":
            vlp = ", VLP" if self.vlp else ""
            return f"{self.method}, {self.lm_size} ({self.lm_name}){vlp}{data}{self.budget_label()}"
        vlp = ", VLP" if self.vlp else ""
        drop = f", drop {self.drop}/{self.n_layers}" if self.drop else ""
        extra = "" if self.default_lambda else f", λ={self.lam:g}"
        width = "" if self.paper_bottleneck else f", r={self.bottleneck}"
        budget = self.budget_label()
        return f"{self.lm_size} ({self.lm_name}){drop}{vlp}{extra}{width}{data}{budget}"


@dataclass(frozen=True)
class _RunLM:
    name: str
    n_layers: int
    d_lm: int


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
            lm_rank(r.lm_size),
            METHODS.index(r.method) if r.method in METHODS else len(METHODS),
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
        """The paper's module (r = d_lm/2) at the searched λ (1 where none was searched), the
        setting every table row uses."""
        return self.first.paper_bottleneck and self.first.default_lambda


@dataclass
class RunSet:
    """Every run of one profile (and scale) in one tracking store."""

    uri: str
    profile: str
    scale: str
    runs: list[Run] = field(default_factory=list)  # FINISHED, one per config hash
    failed: list[Run] = field(default_factory=list)  # FAILED / KILLED, never finished since
    superseded: list[Run] = field(default_factory=list)  # FINISHED at a since-replaced rate

    @functools.cached_property
    def frame(self) -> pd.DataFrame:
        """One row per finished run: run id, setting, specs, every axis and every metric."""
        rows = [
            {
                "run_id": r.config_hash,
                "setting": r.setting,
                "specs": " ".join(r.specs),
                **{name: r.axis(name) for name in axes.AXES},
                "lm_name": r.lm_name,
                "lm_layers": r.n_layers,
                **r.metrics,
            }
            for r in self.runs
        ]
        return pd.DataFrame.from_records(rows)

    def summary(self, metrics: Iterable[str], spec: str | None = None) -> pd.DataFrame:
        """One row per setting (a group of seeds): its axes (but the seed), the seeds, and mean,
        std and n of each metric. The numbers behind every reproduced table and its CSV."""
        frame = self.frame
        if frame.empty:
            return frame
        if spec is not None:
            frame = frame[frame["specs"].str.split().map(lambda s: spec in s)]
        metrics = [m for m in metrics if m in frame.columns]
        frame = frame.replace([math.inf, -math.inf], math.nan)  # as Stat.of: only finite values
        keys = ["setting", *(a for a in axes.AXES if a != "seed"), "lm_name", "lm_layers"]
        grouped = frame.groupby(keys, sort=False, dropna=False)
        stats = grouped[metrics].agg(["mean", "std", "count"]) if metrics else None
        seeds = grouped["seed"].agg(lambda s: " ".join(str(v) for v in sorted(s)))
        out = seeds.rename("seeds").to_frame()
        if stats is not None:
            stats.columns = [
                f"{m} {'n' if k == 'count' else k}" for m, k in stats.columns.to_flat_index()
            ]
            out = out.join(stats)
        return out.reset_index()

    @property
    def paper_task(self) -> bool:
        """Runs of the paper's own task (real datasets): its numbers and baselines apply."""
        from bench.sweep.profiles import profile_class

        return profile_class(self.profile).paper_task

    def specs(self) -> list[str]:
        return sorted({s for r in self.runs for s in r.specs})

    def groups(self, spec: str | None = None) -> list[Group]:
        frame = self.frame
        if frame.empty:
            return []
        by_id = {r.config_hash: r for r in self.runs}
        if spec is not None:
            frame = frame[frame["specs"].str.split().map(lambda s: spec in s)]
        groups = [
            Group(tuple(sorted((by_id[i] for i in ids), key=lambda r: (r.seed, r.config_hash))))
            for _, ids in frame.groupby("setting", sort=False)["run_id"]
        ]
        return sorted(groups, key=Group.sort_key)

    def groups_of(self, points, epochs: int | None = None) -> list[Group]:
        """The groups (every seed) of the settings of ``points``: what a spec's grid has
        produced, whichever spec made the runs (``epochs``: the spec's override, if any)."""
        return [g for g in self.groups() if any(g.first.matches(p, epochs) for p in points)]

    def pick(
        self,
        *,
        lm: str,
        vlp: bool,
        drop_fraction: float = 0.0,
        datasets: tuple[str, ...] = COLUMN_DATASETS["coco"],
        prefer: tuple[str, ...] = (),
        method: str = "itune",
    ) -> Group | None:
        """The group that stands for one paper row: that method, LM size, VLP and dropped
        fraction.

        Candidates use the paper's module (r = d_lm/2, the searched λ) unless a ``prefer`` spec asked
        for them (a table spec may set another base); among several, the ones from a preferred spec
        come first, then more seeds, then the most recently run, then a fixed order.
        """
        found = []
        for g in self.groups():
            r = g.first
            if r.lm_size != lm or r.vlp != vlp or r.dataset not in datasets or r.method != method:
                continue
            if r.drop != axes.Drop(fraction=drop_fraction).resolve(r.n_layers):
                continue
            rank = next((i for i, s in enumerate(prefer) if s in g.specs), len(prefer))
            if rank == len(prefer) and not (g.is_default() and r.at_budget):
                continue
            found.append((rank, -len(g.runs), -g.newest_ms, g.sort_key(), g))
        return min(found, key=lambda t: t[:4])[4] if found else None

    def pick_failed(self, *, lm: str, vlp: bool, drop_fraction: float = 0.0) -> Run | None:
        """A failed run of that point, for the reason shown in a missing cell."""
        for r in sorted(self.failed, key=lambda r: r.config_hash):
            same = r.lm_size == lm and r.vlp == vlp and r.paper_bottleneck and r.default_lambda
            same = same and r.method == "itune"
            if same and r.drop == axes.Drop(fraction=drop_fraction).resolve(r.n_layers):
                return r
        return None

    def largest(self) -> Group | None:
        """The largest model: largest LM, no dropping, paper module; trained longest (the
        grounding spec's budget over the profile's), then VLP preferred, as the paper's best large
        model (Table 3, Figure 3 and the grounding claim)."""
        found = [
            g
            for g in self.groups()
            if g.is_default()
            and g.first.drop == 0
            and g.first.method == "itune"
            and g.first.dataset in COLUMN_DATASETS["coco"]
        ]
        if not found:
            return None
        return max(
            found,
            key=lambda g: (
                LM_ORDER.get(g.first.lm_size, -1),
                g.first.n_layers,
                g.first.epochs or 0,
                g.first.vlp,
                len(g.runs),
                g.newest_ms,
                tuple(-ord(c) for c in g.first.setting),
            ),
        )

    def failures(self, spec: str | None = None) -> list[Run]:
        return [r for r in self.failed if spec is None or spec in r.specs]
