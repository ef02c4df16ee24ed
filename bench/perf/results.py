"""What the benchmark reports: targets, measured ratios, table rows and the report holding them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from bench.perf.settings import Mode, Sizes

if TYPE_CHECKING:
    from bench.perf.gpu_busy import Busy
    from bench.perf.memory import Memory

#: The rows with targets, in report order, and what each measures. The short ids are the report's
#: public names (the committed reports use them); informational rows (P1t, P1n, MFU-*,
#: GPU-busy-*) are added next to them by the arm that measures them.
TARGET_ROWS = {
    "P1": "train step time, I-Tuning / full fine-tuning of the same captioner",
    "P1m": "peak memory of the P1 steps, I-Tuning / full fine-tuning",
    "P2": "train step time, Dropping the lower half of the modules / no Dropping",
    "P3": "train step speed-up from cached visual features over running the ViT live",
    "P4a": "beam-search captioning speed-up over the naive per-row K/V path",
    "P4b": "beam-search captioning, ours / transformers' generate called by hand",
    "P5": "scoring COCO captions with one CaptionScorer: METEOR's JVM started once",
}
ROW_IDS = tuple(TARGET_ROWS)
TRAINING_ROWS = frozenset({"P1", "P1m", "P2", "P3"})
DECODING_ROWS = frozenset({"P4a", "P4b"})
SCORING_ROWS = frozenset({"P5"})


@dataclass(frozen=True)
class Target:
    op: Literal["<=", ">="]
    value: float

    def met(self, x: float) -> bool:
        return x <= self.value if self.op == "<=" else x >= self.value

    def __str__(self) -> str:
        return f"{'≤' if self.op == '<=' else '≥'} {self.value:.2f}×"


@dataclass(frozen=True)
class Ratio:
    """Median of per-repetition ratios and their range."""

    median: float
    lo: float
    hi: float
    n: int

    @classmethod
    def paired(cls, num: Sequence[float], den: Sequence[float]) -> Ratio:
        ratios = [a / b for a, b in zip(num, den, strict=True)]
        return cls(statistics.median(ratios), min(ratios), max(ratios), len(ratios))

    @classmethod
    def single(cls, value: float) -> Ratio:
        return cls(value, value, value, 1)

    def __str__(self) -> str:
        if self.n <= 1:
            return f"{self.median:.2f}×"
        return f"{self.median:.2f}× ({self.lo:.2f}–{self.hi:.2f}, n={self.n})"


@dataclass
class Row:
    """One line of the results table, already formatted; ``ratio`` and ``target_rule`` keep the
    numbers behind ``result`` and ``target`` for the plot and for judging."""

    id: str
    what: str
    ours: str
    baseline: str
    result: str
    target: str
    met: bool | None  # None: informational
    ratio: Ratio | None = None
    target_rule: Target | None = None
    note: str = ""


@dataclass
class Report:
    """Everything one run measured: the rows, and what the explanations of missed targets need."""

    mode: Mode
    sizes: Sizes
    quick: bool
    rows: list[Row] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    memory: dict[str, Memory] = field(default_factory=dict)
    flops: dict[str, int] = field(default_factory=dict)
    busy: dict[str, Busy] = field(default_factory=dict)  # CUDA: kernel time per arm

    def row(self, row_id: str) -> Row:
        return next(r for r in self.rows if r.id == row_id)


def format_seconds(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def format_mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**20:.2f} MiB"


def ratio_row(
    row_id: str,
    what: str,
    ours: str,
    baseline: str,
    ratio: Ratio,
    target: Target | None,
    note: str = "",
) -> Row:
    """A row whose result is ``ratio``, judged against ``target`` (None: informational)."""
    return Row(
        row_id,
        what,
        ours,
        baseline,
        str(ratio),
        str(target) if target else "(info)",
        target.met(ratio.median) if target else None,
        ratio,
        target,
        note,
    )
