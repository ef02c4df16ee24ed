"""The sweep axes, each declared once.

An axis is what a spec varies in the paper's own terms (method, LM size, λ, bottleneck, dropped
layers, VLP, dataset, seed). Its :class:`Axis` says everything the harness needs of it: how a spec
writes it, which ``TrainConfig`` setting it decides and how it resolves against what a point runs on
(:class:`Target`: the LM and the profile's datasets), the one
MLflow param it is logged as (its own name, with its natural type), and how it prints in labels and
tables. The spec schema, the dry run, the tracked params, the report's columns and the run id (the
digest of the resolved config) all follow from :data:`AXES`; adding an axis is one entry here plus
the code that uses its value.

The method's own rules stay in the library's config (``ituning.config.ITuningConfig``): λ ≥ 1, a
default bottleneck of ``d_lm // 2``, at least one layer kept by Dropping. Axes only translate the
spec's notation (fractions of depth or width) into the numbers those rules are checked on.

Why fractions: the paper drops 18 of GPT2-Large's 36 layers, i.e. the lower half. ``drop: 0.5``
means the same thing on a 36-layer LM and on a 9-layer mini LM; a bare number is always a fraction
in ``[0, 1)`` and an absolute count is written ``{layers: N}``, so that a typo such as ``drop: 18``
is refused instead of silently meaning something else. The bottleneck works the same way
(``null`` = the paper's width, a bare number = a fraction of ``d_lm``, ``{width: N}`` absolute).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ituning.config import MAX_BOTTLENECK, MAX_BOTTLENECK_RATIO, bottleneck_limit
from ituning.errors import ConfigError
from ituning.methods.registry import METHODS, is_clipcap
from ituning.run_config import SEED_MAX

#: The GPT-2 family's sizes (the paper's LMs; the size claims compare these).
LM_SIZES = ("base", "medium", "large")
#: LMs with random weights -> the pre-trained LM each is the control of. Controls of the premise
#: that pre-training matters, not language models a captioner is built on (claims about I-Tuning's
#: models leave them out), trained at their twin's searched learning rate (a rate searched for the
#: control would be a second difference between the two).
RANDOM_WEIGHT_TWINS = {"smollm2-random": "smollm2"}
#: Every LM a spec can name: the GPT-2 sizes, their Llama-architecture twins, and a real
#: pre-trained Llama-family LM with its random-weight control (I-Tuning is agnostic to the LM).
LM_NAMES = (*LM_SIZES, *(f"llama-{size}" for size in LM_SIZES), "smollm2", *RANDOM_WEIGHT_TWINS)
#: The paper's two captioning datasets (Table 1's halves); a profile says which files each is.
DATASETS = ("coco", "flickr30k")


class LM(Protocol):
    """The LM a point runs on (a profile's ``LMChoice``): its part of a :class:`Target`."""

    name: str
    n_layers: int
    d_lm: int


@dataclass(frozen=True)
class Target:
    """What a point's axes resolve against: the LM it runs on and the profile's datasets (name ->
    its ``data`` settings; empty where only the LM matters, as when a report matches runs)."""

    lm: LM
    datasets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The λ searched for the point's method and LM (``bench.sweep.learning_rates``): what a spec's
    #: ``lambda: null`` trains at (1 where none was searched).
    searched_lambda: float = 1.0

    def data(self, dataset: str) -> dict[str, Any]:
        if dataset not in self.datasets:
            raise ConfigError(
                f"dataset: {dataset!r} is not in this profile (it has: "
                f"{', '.join(self.datasets) or 'none'})"
            )
        return {k: v for k, v in self.datasets[dataset].items() if v is not None}


@dataclass(frozen=True)
class Drop:
    """Dropped lower layers: a fraction of depth (rounded half up), or an absolute ``layers``."""

    fraction: float | None = None
    layers: int | None = None

    def resolve(self, depth: int) -> int:
        if self.layers is not None:
            return self.layers
        return math.floor(self.fraction * depth + 0.5)

    def to_yaml(self) -> float | dict[str, int]:
        return {"layers": self.layers} if self.layers is not None else self.fraction

    def __str__(self) -> str:
        return f"{self.layers}L" if self.layers is not None else f"{self.fraction:g}"


@dataclass(frozen=True)
class Bottleneck:
    """Bottleneck width r: the paper's default (``None``), a fraction of d_lm, or a ``width``."""

    fraction: float | None = None
    width: int | None = None

    def resolve(self, d_lm: int) -> int:
        """r on an LM of width ``d_lm``. An absolute width has the bound of the fraction form,
        checked here where the LM is known: ``{width: 1000000000}`` is refused, not allocated."""
        from ituning.config import ITuningConfig

        if self.width is not None:
            if self.width > bottleneck_limit(d_lm):
                raise ConfigError(
                    f"bottleneck: {{width: {self.width}}} is wider than {MAX_BOTTLENECK_RATIO} x "
                    f"d_lm = {bottleneck_limit(d_lm)} of this LM (d_lm = {d_lm}); give a width "
                    f"<= {bottleneck_limit(d_lm)} or a fraction of d_lm"
                )
            return self.width
        if self.fraction is None:
            return ITuningConfig().resolved_bottleneck(d_lm)
        return max(1, math.floor(self.fraction * d_lm))

    def to_yaml(self) -> float | dict[str, int] | None:
        return {"width": self.width} if self.width is not None else self.fraction

    def __str__(self) -> str:
        if self.width is not None:
            return str(self.width)
        return "d/2" if self.fraction is None else f"{self.fraction:g}d"


@dataclass(frozen=True)
class Axis:
    """One sweep axis. ``parse`` raises ``ValueError`` with the sentence a user needs."""

    name: str  # the spec key, the MLflow param and the report/CSV column
    title: str  # column header in tables
    doc: str  # one line: what it is, how a spec writes it
    kind: type  # the natural type of the logged value (MLflow stores text; read() converts back)
    setting: str  # the dotted TrainConfig field this axis decides
    default: Any  # the parsed value when a spec leaves the axis out
    parse: Callable[[Any], Any]
    resolve: Callable[[Any, Target], Any] = lambda value, on: value  # -> the setting's value
    spec_text: Callable[[Any], str] = str  # the value as a spec means it (labels, dry run)
    to_yaml: Callable[[Any], Any] = lambda value: value
    label: Callable[[Any], str] = str  # its part of a point's short name ("" = omitted)
    cell: Callable[[Any, Any], str] = lambda value, resolved: str(resolved)  # dry-run cell
    logs_spec_value: bool = False  # log the spec's value (a name) instead of the setting's
    #: The value of runs recorded before this axis existed (their params lack it); such a param
    #: is left out of a setting's digest, so old and new runs of one setting stay one group.
    absent: Any = None
    #: Whether the axis means anything for a method (I-Tuning's λ, r and Dropping do not for
    #: ClipCap): where it does not, a point takes the axis default and its label omits it.
    applies: Callable[[str], bool] = lambda method: True

    def logged(self, value: Any, resolved: Any) -> Any:
        """The MLflow param value of a point: the resolved setting (or the spec's name)."""
        return value if self.logs_spec_value else resolved

    def logged_on(self, value: Any, on: Target) -> Any:
        """:meth:`logged` of ``value`` resolved against ``on`` (resolved only when logged so)."""
        return value if self.logs_spec_value else self.resolve(value, on)

    def read(self, text: str | None) -> Any:
        """An MLflow param (text) back as its natural type; :attr:`absent` if the run has none."""
        if text is None:
            return self.absent
        if self.kind is bool:
            return text == "True"
        return self.kind(text)


# ------------------------------------------------------------------------------- parsing helpers


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _single(value: dict, key: str) -> Any:
    if set(value) != {key}:
        raise ValueError(f"expected {{{key}: N}}, got keys {sorted(map(str, value))}")
    return value[key]


def _method(value: Any) -> str:
    if value not in METHODS:
        raise ValueError(f"unknown method {value!r} (allowed: {', '.join(METHODS)})")
    return value


def _itune_only(method: str) -> bool:
    return not is_clipcap(method)


def _lm(value: Any) -> str:
    if value not in LM_NAMES:
        raise ValueError(f"unknown LM {value!r} (allowed: {', '.join(LM_NAMES)})")
    return value


def _lambda(value: Any) -> float | None:
    if value is None:  # left to the search
        return None
    if not _number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected null (the searched λ) or a positive number, got {value!r}")
    return float(value)


def _vlp(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _dataset(value: Any) -> str:
    if value not in DATASETS:
        raise ValueError(f"unknown dataset {value!r} (allowed: {', '.join(DATASETS)})")
    return value


def _seed(value: Any) -> int:
    if not _integer(value) or value < 0:
        raise ValueError(f"expected an integer >= 0, got {value!r}")
    if value > SEED_MAX:  # torch.manual_seed takes a signed 64-bit integer
        raise ValueError(f"expected an integer <= 2**63 - 1 = {SEED_MAX}, got {value!r}")
    return value


def _drop(value: Any) -> Drop:
    if isinstance(value, dict):
        n = _single(value, "layers")
        if not _integer(n) or n < 0:
            raise ValueError(f"layers: expected an integer >= 0, got {n!r}")
        return Drop(layers=n)
    if not _number(value) or not 0 <= value < 1:
        hint = (
            f"; write {{layers: {value}}} for an absolute count"
            if _integer(value) and value >= 1
            else ""
        )
        raise ValueError(f"expected a fraction of depth in [0, 1), got {value!r}{hint}")
    return Drop(fraction=float(value))


def _bottleneck(value: Any) -> Bottleneck:
    if value is None:
        return Bottleneck()
    if isinstance(value, dict):
        w = _single(value, "width")
        if not _integer(w) or not 1 <= w <= MAX_BOTTLENECK:
            raise ValueError(f"width: expected an integer in 1..{MAX_BOTTLENECK}, got {w!r}")
        return Bottleneck(width=w)
    if not _number(value) or not 0 < value <= MAX_BOTTLENECK_RATIO:
        hint = f"; write {{width: {value}}} for an absolute width" if _integer(value) else ""
        raise ValueError(
            f"expected null, a fraction of d_lm in (0, {MAX_BOTTLENECK_RATIO}] or {{width: N}}, "
            f"got {value!r}{hint}"
        )
    return Bottleneck() if value == 0.5 else Bottleneck(fraction=float(value))


# ------------------------------------------------------------------------------------- the axes

AXES: dict[str, Axis] = {
    axis.name: axis
    for axis in (
        Axis(
            name="method",
            title="method",
            doc="captioner: itune (the paper's), full (the LM trained too), clipcap-transformer, "
            "clipcap-mlp",
            kind=str,
            setting="method",
            default="itune",
            parse=_method,
            label=lambda value: "" if value == "itune" else value,
            absent="itune",
        ),
        Axis(
            name="lm",
            title="LM",
            doc="LM: base | medium | large (GPT-2 sizes), llama-base | llama-medium | "
            "llama-large (Llama-architecture LMs of those sizes), smollm2 (SmolLM2-135M-Instruct, "
            "pre-trained), smollm2-random (its architecture, random weights: the control); the "
            "profile says which LM each is and may lack some",
            kind=str,
            setting="backbones.lm",
            default="base",
            parse=_lm,
            resolve=lambda value, on: on.lm.name,
            label=str,
            cell=lambda value, resolved: f"{value} ({Path(resolved).name})",
            logs_spec_value=True,
        ),
        Axis(
            name="lambda",
            title="λ",
            doc="λ of eq. (5): null = the λ searched with the learning rate (bench.tune; 1 "
            "where none was), else a number >= 1 (less only where overrides allow it)",
            kind=float,
            setting="itune.scale",
            default=None,
            parse=_lambda,
            resolve=lambda value, on: on.searched_lambda if value is None else value,
            spec_text=lambda value: "searched" if value is None else f"{value:g}",
            label=lambda value: "" if value is None else f"λ={value:g}",
            cell=lambda value, resolved: f"{resolved:g}" + (" (searched)" if value is None else ""),
            applies=_itune_only,
        ),
        Axis(
            name="bottleneck",
            title="r",
            doc="module width r: null = d_lm/2 (the paper's), 0.25 = d_lm/4, {width: 64}",
            kind=int,
            setting="itune.bottleneck",
            default=Bottleneck(),
            parse=_bottleneck,
            resolve=lambda value, on: value.resolve(on.lm.d_lm),
            to_yaml=lambda value: value.to_yaml(),
            label=lambda value: f"r={value}",
            applies=_itune_only,
        ),
        Axis(
            name="drop",
            title="drop",
            doc="dropped lower layers: 0.5 = half the depth, {layers: 18}",
            kind=int,
            setting="itune.drop_first",
            default=Drop(fraction=0.0),
            parse=_drop,
            resolve=lambda value, on: value.resolve(on.lm.n_layers),
            to_yaml=lambda value: value.to_yaml(),
            label=lambda value: f"drop={value}",
            cell=lambda value, resolved: f"{value} -> {resolved}",
            applies=_itune_only,
        ),
        Axis(
            name="vlp",
            title="vlp",
            doc="vision-language pre-training before captioning",
            kind=bool,
            setting="vlp",
            default=False,
            parse=_vlp,
            label=lambda value: "vlp" if value else "",
            cell=lambda value, resolved: "yes" if resolved else "no",
        ),
        Axis(
            name="dataset",
            title="dataset",
            doc="captioning dataset, trained on its train split and scored on its test split: "
            "coco | flickr30k (the profile says which files: Shapes and Shapes-Flickr at mini)",
            kind=str,
            setting="data",
            default="coco",
            parse=_dataset,
            resolve=lambda value, on: on.data(value),
            label=lambda value: "" if value == "coco" else value,
            cell=lambda value, resolved: f"{value} ({Path(resolved.captions).name})",
            logs_spec_value=True,
            absent="coco",
        ),
        Axis(
            name="seed",
            title="seed",
            doc="random seed of the modules' initialisation and the data order",
            kind=int,
            setting="seed",
            default=0,
            parse=_seed,
            label=lambda value: f"s{value}",
        ),
    )
}


def settings() -> dict[str, str]:
    """TrainConfig field -> the axis that decides it (overrides may not set these)."""
    return {axis.setting: axis.name for axis in AXES.values()}
