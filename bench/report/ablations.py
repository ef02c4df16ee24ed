"""The ablations section: one subsection per ablation sweep, each a plot, a table and a CSV.

Every ablation is read, drawn and tabulated the same way; what differs between them (which spec and
axis, the headings, how a setting is placed and labelled, log-scale x, trainable parameters on a
second axis, extra plotted metrics) is one row of :data:`ABLATIONS`. Adding an ablation is adding a
row there and a spec in ``sweeps/``. VLP is a yes/no axis, drawn as paired bars per LM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench import SPECS_DIR
from bench.report import plots
from bench.report.csv_tables import group_summary, write_csv
from bench.report.markdown import count, point_label, table
from bench.report.results import Group, Run
from bench.report.settings import ReportInputs
from bench.sweep.axes import AXES
from bench.sweep.spec import find_spec, load_spec

#: Metrics of every ablation's table and plot: (tracked metric, name in headers and legends).
TABLE_METRICS = (("test/cider", "test CIDEr"), ("nocaps/overall/cider", "NoCaps overall CIDEr"))
PARAMS_NAME = "trainable parameters"


@dataclass(frozen=True)
class Ablation:
    """One ablation subsection, declared: its runs, its axis and how they are shown."""

    spec: str  # the sweep spec whose runs it shows; its files are ablation_<spec>.png/.csv
    axis: str  # the swept axis (a key of bench.sweep.axes.AXES)
    title: str  # the subsection heading
    name: str  # the image's alt text is "<name> ablation"
    x: Callable[[Run], float]  # a setting's position on the plot
    x_label: Callable[[Run], str]  # a setting's cell in the table's first column
    plot_title: str
    xlabel: str = ""
    header: str | None = None  # the first column's header; default: the axis' title
    log2_x: bool = False
    params_on_right: bool = False  # trainable parameters on a second y axis
    extra_metrics: tuple[tuple[str, str], ...] = ()  # plotted (and in the CSV) besides the table's
    paired: bool = False  # a yes/no axis: test CIDEr off/on as paired bars per LM

    @property
    def column(self) -> str:
        return self.header or AXES[self.axis].title

    @property
    def image(self) -> str:
        return f"ablation_{self.spec}.png"

    @property
    def metrics(self) -> tuple[tuple[str, str], ...]:
        return (*TABLE_METRICS, *self.extra_metrics)


ABLATIONS = (
    Ablation(
        spec="lambda",
        axis="lambda",
        title="λ (scale of the module output, eq. 5)",
        name="λ",
        x=lambda r: r.lam,
        x_label=lambda r: f"{r.lam:g}",
        plot_title="λ ablation",
        xlabel="λ",
        log2_x=True,
    ),
    Ablation(
        spec="bottleneck",
        axis="bottleneck",
        title="Bottleneck width r",
        name="bottleneck",
        x=lambda r: r.bottleneck,
        x_label=lambda r: f"{r.bottleneck} (d_lm = {r.d_lm})",
        plot_title="Bottleneck width ablation",
        xlabel="r (module width)",
        log2_x=True,
        params_on_right=True,
    ),
    Ablation(
        spec="dropping",
        axis="drop",
        title="Dropped layers (I-Tuning Dropping)",
        name="dropping",
        x=lambda r: r.drop,
        x_label=lambda r: f"{r.drop} of {r.n_layers}",
        header="dropped",
        plot_title="Dropping: modules removed from the lowest layers",
        xlabel="dropped layers (lowest first)",
        params_on_right=True,
        extra_metrics=(("nocaps/out-of-domain/cider", "NoCaps out-of-domain CIDEr"),),
    ),
    Ablation(
        spec="vlp",
        axis="vlp",
        title="Vision-language pre-training (VLP)",
        name="VLP",
        x=lambda r: float(r.vlp),
        x_label=lambda r: "on" if r.vlp else "off",
        header="VLP",
        plot_title="VLP off / on",
        paired=True,
    ),
)


def ablations(inputs: ReportInputs) -> list[str]:
    """Every subsection of :data:`ABLATIONS`, in order, from the runs at its spec's points
    (whichever sweep made them); what is missing says which command runs it."""
    lines: list[str] = []
    for ablation in ABLATIONS:
        lines += [f"### {ablation.title}", ""]
        spec = load_spec(find_spec(ablation.spec, SPECS_DIR))
        settings = {p.label(seed=False): p for p in spec.points()}
        groups = inputs.runs.groups_of(list(settings.values()), spec.overrides.get("epochs"))
        command = f"python -m bench.sweep {ablation.spec} --profile {inputs.runs.profile}"
        if inputs.runs.scale != "full":
            command += f" --scale {inputs.runs.scale}"
        if not (groups and _plot(inputs, ablation, groups)):
            lines += [f"None of its {len(settings)} settings has runs: `{command}` makes them.", ""]
            continue
        if len(groups) < len(settings):
            lines += [
                f"{len(groups)} of its {len(settings)} settings have runs (made by other sweeps); "
                f"`{command}` makes the rest.",
                "",
            ]
        metrics = [m for m, _ in ablation.metrics]
        frame = group_summary(inputs.runs, groups, [*metrics, "trainable_params"])
        lines += [f"![{ablation.name} ablation]({ablation.image})", ""]
        lines += [*_table(ablation, groups), ""]
        lines += [write_csv(inputs, f"ablation_{ablation.spec}.csv", frame), ""]
    return lines


def _plot(inputs: ReportInputs, ablation: Ablation, groups: Sequence[Group]) -> bool:
    """Draw the ablation's PNG; False when there is nothing to draw (VLP without a pair)."""
    out = inputs.out / ablation.image
    if ablation.paired:
        pairs = _vlp_pairs(groups)
        if pairs:
            names = ("no VLP", "VLP")
            plots.paired_bars(pairs, out, title=ablation.plot_title, names=names)
        return bool(pairs)
    right = None
    if ablation.params_on_right:
        right = plots.Series(
            PARAMS_NAME,
            tuple(
                plots.Point("", ablation.x(g.first), p.mean)
                for g in groups
                if (p := g.params_stat()) is not None
            ),
        )
    plots.ablation(
        _series(groups, ablation.x, ablation.metrics),
        out,
        title=ablation.plot_title,
        xlabel=ablation.xlabel,
        log2_x=ablation.log2_x,
        xticks=sorted({ablation.x(g.first) for g in groups}),
        right=right,
        right_label=PARAMS_NAME if right is not None else "",
    )
    return True


def _series(
    groups: Sequence[Group], x: Callable[[Run], float], metrics: Sequence[tuple[str, str]]
) -> list[plots.Series]:
    """One line per metric and LM (the LM named only when there are several)."""
    sizes = sorted({g.first.lm_name for g in groups})
    out = []
    for metric, name in metrics:
        for lm in sizes:
            pts = []
            for g in groups:
                s = g.stat(metric)
                if g.first.lm_name == lm and s is not None:
                    pts.append(plots.Point(point_label(g), x(g.first), s.mean, s.std, n=s.n))
            if pts:
                label = name if len(sizes) == 1 else f"{name} ({lm})"
                out.append(plots.Series(label, tuple(pts)))
    return out


def _vlp_pairs(groups: Sequence[Group]) -> list[tuple[str, plots.Point, plots.Point]]:
    """Test CIDEr without and with VLP, for each LM that has both."""
    pairs = []
    for lm in sorted({g.first.lm_name for g in groups}):
        off = [g for g in groups if g.first.lm_name == lm and not g.first.vlp]
        on = [g for g in groups if g.first.lm_name == lm and g.first.vlp]
        if off and on:
            a, b = off[0].stat("test/cider"), on[0].stat("test/cider")
            if a is not None and b is not None:
                pairs.append(
                    (
                        lm,
                        plots.Point("off", 0, a.mean, a.std, n=a.n),
                        plots.Point("on", 1, b.mean, b.std, n=b.n),
                    )
                )
    return pairs


def _table(ablation: Ablation, groups: Sequence[Group]) -> list[str]:
    rows = []
    for g in groups:
        cells = [ablation.x_label(g.first), g.first.lm_name + (" +VLP" if g.first.vlp else "")]
        for metric, _ in TABLE_METRICS:
            s = g.stat(metric)
            cells.append(s.fmt() if s else "–")
        p = g.params_stat()
        cells += [count(p.mean if p else None), str(len(g.runs))]
        rows.append(cells)
    header = [ablation.column, AXES["lm"].title, *(n for _, n in TABLE_METRICS)]
    return table([*header, "trainable", "seeds"], rows)
