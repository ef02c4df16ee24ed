"""Each method's learning rate (and I-Tuning's λ), per profile: chosen on the validation split,
read by the profile.

A comparison of methods is only fair if none of them trains at a learning rate tuned for another.
``python -m bench.tune`` runs the same small search for every method (optuna's grid sampler over
:data:`bench.tune.search.LR_GRID`, at an LM size and seed, validation CIDEr) and records it here,
in ``learning_rates.yaml`` beside this module, which is committed. :meth:`Profile.resolve` trains
a method at the rate searched at the point's LM size; a method searched at one size only uses
that rate at every size; a profile or method without a record trains at its budget's rate.

λ (eq. 5's output scale) is a hyper-parameter the paper requires to be at least 1 and gives no
value for, so a search may choose it with the rate (the grid is then rate × λ): a point whose spec
leaves λ to the search (``lambda: null``) trains at the λ recorded for its method and LM size
(:meth:`LearningRates.chosen_lambda`), at 1 where none was searched.
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.sweep.axes import RANDOM_WEIGHT_TWINS
from ituning.errors import ConfigError, validation_line
from ituning.files import atomic_write, read_text
from ituning.yaml_input import load_yaml

LEARNING_RATES_FILE = Path(__file__).with_name("learning_rates.yaml")
_HEADER = """\
# Each method's learning rate per profile, chosen by the same search on the validation split:
# optuna's grid sampler over the rates under `scores`, at an LM size and seed (profile > method >
# LM size); each method's rate is the one with the best validation score; a method searched at one
# size only uses that rate at every size. Where λ was searched with the rate, `lambda` is the λ
# chosen, `scores` the rates' scores at that λ and `lambda_scores` each λ's at the chosen rate.
# Written by `python -m bench.tune`; do not edit.
"""


class SearchRecord(BaseModel):
    """One method's search: where it ran, every rate's score, the rate (and λ) chosen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    chosen: float = Field(gt=0)
    #: The λ chosen with the rate; ``None`` where λ was not searched (the spec's λ, else 1).
    lambda_: float | None = Field(default=None, alias="lambda", ge=1)
    seed: int
    metric: str
    study: str
    scores: dict[float, float]  # learning rate -> its validation score (at the chosen λ)
    #: λ -> its validation score at the chosen rate (empty where λ was not searched).
    lambda_scores: dict[float, float] = {}

    def rate_at_edge(self) -> bool:
        """The best rate is the grid's smallest or largest: a rate outside it may do better."""
        return self.chosen in (min(self.scores), max(self.scores))

    def lambda_at_edge(self) -> bool:
        """The best λ is the largest searched (λ >= 1 bounds it below): a larger one may do
        better."""
        searched = self.lambda_ is not None and len(self.lambda_scores) > 1
        return searched and self.lambda_ == max(self.lambda_scores)

    def at_edge(self) -> bool:
        """The optimum may lie outside the grid, in the rate or in λ."""
        return self.rate_at_edge() or self.lambda_at_edge()


class LearningRates(BaseModel):
    """profile label (``mini``, ``mini-tiny``, ``paper``) -> method -> LM size -> its search."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profiles: dict[str, dict[str, dict[str, SearchRecord]]] = {}

    def searched(self, label: str, method: str) -> dict[str, SearchRecord]:
        """LM size -> the method's search at that size."""
        return self.profiles.get(label, {}).get(method, {})

    def size_for(self, label: str, method: str, lm: str) -> str | None:
        """The LM size whose search sets ``method``'s rate at ``lm``: a random-weight LM's twin's
        (``axes.RANDOM_WEIGHT_TWINS``), else ``lm`` itself if searched there, else the one size
        it was searched at; ``None`` if neither."""
        lm = RANDOM_WEIGHT_TWINS.get(lm, lm)
        by_lm = self.searched(label, method)
        if lm in by_lm:
            return lm
        return next(iter(by_lm)) if len(by_lm) == 1 else None

    def chosen(self, label: str, method: str, lm: str) -> float | None:
        """The rate for ``method`` at LM size ``lm`` (:meth:`size_for`); ``None`` if never
        searched (the budget's rate applies)."""
        by_lm = self.searched(label, method)
        size = self.size_for(label, method, lm)
        if size is not None:
            return by_lm[size].chosen
        if by_lm:
            raise ConfigError(
                f"the learning rate of {method} under profile {label} was searched at LM sizes "
                f"{', '.join(sorted(by_lm))} but not {lm}: run python -m bench.tune --methods "
                f"{method} --lm {RANDOM_WEIGHT_TWINS.get(lm, lm)}"
            )
        return None

    def chosen_lambda(self, label: str, method: str, lm: str) -> float | None:
        """The λ searched with ``method``'s rate at LM size ``lm`` (:meth:`size_for`); ``None``
        if λ was never searched there (a point that leaves λ to the search then trains at 1)."""
        size = self.size_for(label, method, lm)
        return None if size is None else self.searched(label, method)[size].lambda_

    def with_record(self, label: str, method: str, lm: str, record: SearchRecord) -> LearningRates:
        profiles = {k: {m: dict(r) for m, r in v.items()} for k, v in self.profiles.items()}
        profiles.setdefault(label, {}).setdefault(method, {})[lm] = record
        return LearningRates(profiles=profiles)


def read(path: Path | None = None) -> LearningRates:
    """The recorded searches (none when the file does not exist)."""
    path = path or LEARNING_RATES_FILE
    if not path.is_file():
        return LearningRates()
    raw = load_yaml(read_text(path, "learning-rate file"), str(path), "learning-rate file") or {}
    try:
        return LearningRates.model_validate({"profiles": raw})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_line(exc)}") from None


@functools.lru_cache(maxsize=4)
def _cached(path: Path, mtime_ns: int) -> LearningRates:
    return read(path)


def _current(path: Path | None) -> LearningRates:
    """The record at ``path`` (default: the committed one), read again only when it changed."""
    path = path or LEARNING_RATES_FILE
    return _cached(path, path.stat().st_mtime_ns if path.is_file() else 0)


def chosen(label: str, method: str, lm: str, path: Path | None = None) -> float | None:
    """The learning rate searched for ``method`` at LM size ``lm`` under profile ``label``, if
    any (:meth:`LearningRates.chosen`)."""
    return _current(path).chosen(label, method, lm)


def chosen_lambda(label: str, method: str, lm: str, path: Path | None = None) -> float | None:
    """The λ searched for ``method`` at LM size ``lm`` under profile ``label``, if any
    (:meth:`LearningRates.chosen_lambda`)."""
    return _current(path).chosen_lambda(label, method, lm)


def write(rates: LearningRates, path: Path | None = None) -> Path:
    path = path or LEARNING_RATES_FILE

    def text_keys(scores: dict[float, float]) -> dict[str, float]:  # YAML keys are text
        return {f"{k:g}": round(v, 4) for k, v in scores.items()}

    def plain(record: SearchRecord) -> dict:  # a record without λ is written as before λ existed
        out = record.model_dump(by_alias=True, exclude={"lambda_scores"})
        out["scores"] = text_keys(record.scores)
        if record.lambda_ is None:
            out.pop("lambda")
        else:
            out["lambda_scores"] = text_keys(record.lambda_scores)
        return out

    body = {
        label: {
            m: {lm: plain(r) for lm, r in sorted(by_lm.items())}
            for m, by_lm in sorted(methods.items())
        }
        for label, methods in sorted(rates.profiles.items())
    }
    return atomic_write(path, _HEADER + yaml.safe_dump(body, sort_keys=False))
