"""Intervals for the differences the claims compare, from both sources of noise.

A reproduced difference moves for two reasons: training (another seed gives another model) and
the test set (other test images give another score). For a contrast ``Σ c_k · mean_k`` of the
settings' seed means (a difference ``B − A`` is ``c = (−1, +1)``):

* **seed variance**: ``Σ c_k² s_k² / n_k`` from the per-seed scores on the full test set (sample
  variance ``s_k²`` over the ``n_k`` seeds of setting ``k``);
* **test-set variance**: the variance of the same contrast over paired bootstrap resamples of the
  test images (every run is re-scored on the same resampled image multiset, with the corpus-level
  metric recomputed per resample: see ``ituning.metrics.cider_resample``);
* the two are added, and the interval is ``estimate ± t · SE`` with the Welch–Satterthwaite
  degrees of freedom (the bootstrap part counts as known, the seed parts have ``n_k − 1`` each).

With a single seed in any compared setting the seed variance is unknown: the interval is then
``None`` and no verdict can be reached from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Term:
    """One setting's part in a contrast: its coefficient, the per-seed scores of its runs, and
    (optionally) those runs' scores on each test-set resample, ``(resamples, seeds)``."""

    coef: float
    seeds: np.ndarray
    replicates: np.ndarray | None = None

    @classmethod
    def of(cls, coef: float, seeds: Sequence[float], replicates=None) -> Term:
        reps = None if replicates is None else np.asarray(replicates, dtype=np.float64)
        return cls(coef, np.asarray(seeds, dtype=np.float64), reps)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float | None  # None: the spread is unknown (a setting with one seed)
    high: float | None
    seeds: tuple[int, ...]  # seeds per compared setting
    seed_se: float | None
    test_se: float | None  # None: no test-set resamples (predictions or references missing)
    df: float | None
    level: float = LEVEL

    @property
    def known(self) -> bool:
        return self.low is not None and self.high is not None

    def fmt(self, digits: int = 1) -> str:
        """``+5.3 [+1.2, +9.4]`` or ``+5.3 [interval unknown: one seed]``."""
        est = f"{self.estimate:+.{digits}f}"
        if not self.known:
            return f"{est} [no interval: one seed]"
        return f"{est} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def sources(self) -> str:
        """What the interval's width is made of, for the evidence line."""
        n = "/".join(str(k) for k in self.seeds)
        if not self.known:
            return f"seeds {n}: a setting has a single seed, so the training noise is unknown"
        test = (
            f"test-set SE {self.test_se:.2f}"
            if self.test_se is not None
            else "test-set resampling unavailable"
        )
        return f"seeds {n}, seed SE {self.seed_se:.2f}, {test}, df {self.df:.1f}"


def contrast(terms: Sequence[Term], level: float = LEVEL) -> Interval:
    """The ``level`` interval of ``Σ coef · mean(seeds)`` (module docstring)."""
    if not terms or any(len(t.seeds) == 0 for t in terms):
        raise ValueError("a contrast needs at least one run per setting")
    estimate = float(sum(t.coef * t.seeds.mean() for t in terms))
    counts = tuple(len(t.seeds) for t in terms)
    if min(counts) < 2:
        return Interval(estimate, None, None, counts, None, None, None, level)
    parts = [t.coef**2 * t.seeds.var(ddof=1) / len(t.seeds) for t in terms]
    seed_var = float(sum(parts))
    test_var = _test_variance(terms)
    total = seed_var + (test_var or 0.0)
    denom = sum(p**2 / (len(t.seeds) - 1) for p, t in zip(parts, terms, strict=True))
    df = math.inf if denom == 0 else total**2 / denom
    se = math.sqrt(total)
    q = stats.norm.ppf(0.5 + level / 2) if math.isinf(df) else stats.t.ppf(0.5 + level / 2, df)
    return Interval(
        estimate,
        estimate - q * se,
        estimate + q * se,
        counts,
        math.sqrt(seed_var),
        None if test_var is None else math.sqrt(test_var),
        df,
        level,
    )


def difference(a: Term | Sequence[float], b: Term | Sequence[float], **kw) -> Interval:
    """``mean(b) − mean(a)``: what going from setting ``a`` to setting ``b`` changes."""
    ta = a if isinstance(a, Term) else Term.of(1.0, a)
    tb = b if isinstance(b, Term) else Term.of(1.0, b)
    return contrast([Term(-1.0, ta.seeds, ta.replicates), Term(1.0, tb.seeds, tb.replicates)], **kw)


def _test_variance(terms: Sequence[Term]) -> float | None:
    if any(t.replicates is None for t in terms):
        return None
    sizes = {t.replicates.shape[0] for t in terms}
    if len(sizes) != 1:
        raise ValueError(f"terms were resampled a different number of times: {sorted(sizes)}")
    combined = sum(t.coef * t.replicates.mean(axis=1) for t in terms)
    return float(np.var(combined, ddof=1))
