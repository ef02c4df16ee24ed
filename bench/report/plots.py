"""The report's figures (matplotlib, Agg backend): Figure 1 of the paper and the ablation plots.

Each function draws from plain numbers (no MLflow here) and writes one PNG. Output is
deterministic for equal inputs: fixed sizes and DPI, sorted inputs, and no date in the PNG metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

DPI = 100
_METADATA = {"Software": None}  # no matplotlib version stamp: equal runs give equal files
_SIZE_COLOURS = {"base": "tab:blue", "medium": "tab:orange", "large": "tab:red"}
#: A marker per captioning method (I-Tuning's points are circles).
_METHOD_MARKERS = {"itune": "o", "full": "D", "clipcap-transformer": "^", "clipcap-mlp": "v"}


@dataclass(frozen=True)
class Point:
    """One plotted point: a label, x, y and the y's seed spread (None with one seed)."""

    label: str
    x: float
    y: float
    yerr: float | None = None
    group: str = ""  # colour key (e.g. LM size)
    n: int = 1
    method: str = "itune"  # marker key


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[Point, ...]
    style: dict = field(default_factory=dict)


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, metadata=_METADATA)
    plt.close(fig)
    return out


def params_vs_cider(
    paper_ours: Sequence[Point],
    paper_baselines: Sequence[Point],
    reproduced: Sequence[Point],
    out: Path,
    *,
    title: str,
    reproduced_name: str,
    overlay: bool = True,
) -> Path:
    """Figure 1: CIDEr against trainable parameters (log axis), the paper's and reproduced points.

    ``overlay``: one panel (same task, comparable numbers); else the paper's and the reproduced
    points side by side (mini: another task and 10^4x fewer parameters would squash both).
    """
    if overlay:
        fig, ax = plt.subplots(figsize=(10, 5.2))
        axes = (ax, ax)
    else:
        fig, axes = plt.subplots(1, 2, figsize=(14, 5.2))
    paper_ax, repro_ax = axes
    if paper_baselines:
        paper_ax.scatter(
            [p.x for p in paper_baselines],
            [p.y for p in paper_baselines],
            marker="s",
            color="0.55",
            label="paper: other captioners",
            zorder=2,
        )
    if paper_ours:
        paper_ax.scatter(
            [p.x for p in paper_ours],
            [p.y for p in paper_ours],
            marker="*",
            s=140,
            color="tab:green",
            label="paper: I-Tuning",
            zorder=3,
        )
    for size in ("base", "medium", "large", ""):
        for marker in _METHOD_MARKERS.values():
            pts = [
                p
                for p in reproduced
                if _size(p) == size and _METHOD_MARKERS.get(p.method, "o") == marker
            ]
            if not pts:
                continue
            repro_ax.errorbar(
                [p.x for p in pts],
                [p.y for p in pts],
                yerr=[p.yerr or 0.0 for p in pts],
                fmt=marker,
                capsize=3,
                color=_SIZE_COLOURS.get(size, "tab:purple"),
                zorder=4,
            )
    for ax, pts in ((paper_ax, (*paper_baselines, *paper_ours)), (repro_ax, reproduced)):
        for p in pts:
            ax.annotate(
                p.label, (p.x, p.y), textcoords="offset points", xytext=(5, 3), fontsize=7, zorder=5
            )
    for ax, sub in ((paper_ax, "paper (MSCOCO test)"), (repro_ax, reproduced_name)):
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: count_label(x)))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("trainable parameters (log scale)")
        ax.set_ylabel("CIDEr (test split, ×100)")
        ax.grid(True, which="both", alpha=0.3)
        if not overlay:
            ax.set_title(sub, fontsize=10)
    if paper_ax is not repro_ax and paper_ax.get_legend_handles_labels()[0]:
        paper_ax.legend(fontsize=8, loc="best")
    handles = (paper_ax.get_legend_handles_labels()[0] if overlay else []) + _key(reproduced)
    if handles:  # colour = LM size, marker = method: one entry each, beside the panel
        repro_ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, out)


def _key(points: Sequence[Point]) -> list[Line2D]:
    """Legend entries for the reproduced points: each LM size's colour, each method's marker."""
    sizes = [s for s in (*_SIZE_COLOURS, "") if any(_size(p) == s for p in points)]
    methods = [m for m in _METHOD_MARKERS if any(p.method == m for p in points)]
    return [
        *(
            Line2D([], [], marker="o", ls="", color=_SIZE_COLOURS.get(s, "tab:purple"),
                   label=f"{s or 'other'} LM")
            for s in sizes
        ),
        *(
            Line2D([], [], marker=_METHOD_MARKERS[m], ls="", color="0.35", label=m)
            for m in methods
        ),
    ]  # fmt: skip


def _size(p: Point) -> str:
    return p.group if p.group in _SIZE_COLOURS else ""


def ablation(
    series: Sequence[Series],
    out: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str = "CIDEr (×100)",
    log2_x: bool = False,
    right: Series | None = None,
    right_label: str = "",
    xticks: Sequence[float] | None = None,
) -> Path:
    """Metric(s) against one numeric axis, mean ± seed std; optionally a second y axis."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for s in series:
        pts = sorted(s.points, key=lambda p: p.x)
        if not pts:
            continue
        ax.errorbar(
            [p.x for p in pts],
            [p.y for p in pts],
            yerr=[p.yerr or 0.0 for p in pts],
            marker="o",
            capsize=3,
            label=s.name,
            **s.style,
        )
    if log2_x:
        ax.set_xscale("log", base=2)
    if xticks is not None:
        ax.set_xticks(list(xticks))
        ax.set_xticklabels([f"{x:g}" for x in xticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if right is not None and right.points:
        ax2 = ax.twinx()
        pts = sorted(right.points, key=lambda p: p.x)
        (line,) = ax2.plot(
            [p.x for p in pts], [p.y for p in pts], "s--", color="0.4", label=right.name
        )
        ax2.set_ylabel(right_label)
        ax2.set_ylim(bottom=0)
        handles.append(line)
        labels.append(right.name)
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, out)


def paired_bars(
    pairs: Sequence[tuple[str, Point, Point]],
    out: Path,
    *,
    title: str,
    names: tuple[str, str],
    ylabel: str = "test CIDEr (×100)",
) -> Path:
    """Two bars per category (e.g. VLP off/on per LM size), mean ± seed std."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    width = 0.38
    xs = list(range(len(pairs)))
    for k, (name, colour) in enumerate(zip(names, ("tab:gray", "tab:green"), strict=True)):
        pts = [pair[1 + k] for pair in pairs]
        ax.bar(
            [x + (k - 0.5) * width for x in xs],
            [p.y for p in pts],
            width,
            yerr=[p.yerr or 0.0 for p in pts],
            capsize=3,
            color=colour,
            label=name,
        )
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{p[0]}\n(seeds {p[1].n}/{p[2].n})" for p in pairs])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def count_label(n: float) -> str:
    """1.4e7 -> "14M", 2000 -> "2k": parameter counts as the paper prints them."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"
