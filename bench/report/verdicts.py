"""Three verdicts, decided by an interval and never by a point estimate.

* ``holds``: the interval lies entirely on the side the claim states;
* ``does not hold``: the interval excludes what the claim states;
* ``inconclusive``: anything else, including a setting with a single seed (the training noise is
  then unknown) — reported with the interval, which says how far from deciding it is;
* ``not enough runs``: the runs the claim compares are missing; the line names the sweep (or the
  missing capability) that would make them.

Claim shapes: *superiority* ("B is better than A": the difference's interval above 0),
*non-inferiority* ("costs at most X": the cost's upper bound at most X) and *equivalence*
("matches within X": the interval inside ``[−X, X]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.report.intervals import Interval

HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive"
MISSING = "not enough runs"
NOT_CHECKED = "not checked"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, MISSING, NOT_CHECKED)


def superiority(iv: Interval, *, margin: float = 0.0) -> str:
    """The claim "the difference is above ``margin``"."""
    if not iv.known:
        return INCONCLUSIVE
    if iv.low > margin:
        return HOLDS
    if iv.high < margin:
        return FAILS
    return INCONCLUSIVE


def non_inferiority(cost: Interval, *, margin: float) -> str:
    """The claim "the cost is at most ``margin``" (cost = reference − candidate)."""
    if not cost.known:
        return INCONCLUSIVE
    if cost.high <= margin:
        return HOLDS
    if cost.low > margin:
        return FAILS
    return INCONCLUSIVE


def equivalence(iv: Interval, *, tolerance: float) -> str:
    """The claim "the difference is within ±``tolerance``"."""
    if not iv.known:
        return INCONCLUSIVE
    if -tolerance <= iv.low and iv.high <= tolerance:
        return HOLDS
    if iv.low > tolerance or iv.high < -tolerance:
        return FAILS
    return INCONCLUSIVE


def combine(verdicts: list[str]) -> str:
    """A claim made of several comparisons (every one must hold): fails if any fails, holds if
    all hold, else inconclusive."""
    if not verdicts:
        return MISSING
    if FAILS in verdicts:
        return FAILS
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    if MISSING in verdicts:
        return MISSING
    return INCONCLUSIVE


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict: the claim as tested, where the paper says it, and the evidence."""

    key: str
    claim: str  # what is tested, in this harness's terms
    source: str  # the paper's sentence, quoted, with its section; or "derived from Table N"
    verdict: str
    evidence: str  # the reproduced numbers with their intervals
    paper: str = ""  # the same comparison on the paper's own numbers
    method: str = ""  # how the interval was made
    intervals: tuple[Interval, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} not in {VERDICTS}")
