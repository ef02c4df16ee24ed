"""The report's figure: each ratio with its range over repetitions, against its target."""

from __future__ import annotations

from pathlib import Path

from bench.perf.results import Report


def render_plot(report: Report, path: Path) -> None:
    """Each ratio with its range over repetitions, against its target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    rows = [r for r in report.rows if r.ratio is not None]
    lower = [r for r in rows if r.target_rule is None or r.target_rule.op == "<="]
    higher = [r for r in rows if r.target_rule is not None and r.target_rule.op == ">="]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, group, title in (
        (axes[0], lower, "time / memory, ours ÷ baseline (lower is better)"),
        (axes[1], higher, "speed-up, baseline ÷ ours (higher is better)"),
    ):
        for y, r in enumerate(group):
            assert r.ratio is not None
            colour = "grey" if r.met is None else ("tab:green" if r.met else "tab:red")
            ax.errorbar(
                r.ratio.median,
                y,
                xerr=[[r.ratio.median - r.ratio.lo], [r.ratio.hi - r.ratio.median]],
                fmt="o",
                color=colour,
                capsize=4,
            )
            if r.target_rule is not None:
                ax.plot([r.target_rule.value] * 2, [y - 0.3, y + 0.3], color="black", lw=2)
        ax.set_yticks(range(len(group)), [r.id for r in group])
        ax.set_ylim(-0.6, max(len(group), 1) - 0.4)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if group and max(r.ratio.hi for r in group if r.ratio) > 4:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator([0.5, 1, 1.5, 2, 3, 5, 10, 20, 50]))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g×"))
    fig.suptitle(
        f"I-Tuning performance ({report.mode.device}, {report.mode.precision}): black bar = "
        "target, whiskers = range over repetitions, grey = no target",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
