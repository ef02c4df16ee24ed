"""Build the reproduction report from MLflow: ``python -m bench.report [--profile mini|paper] ...``.

Writes ``<out>/README.md`` (default ``reports/<profile>/``) and its PNG figures next to it:

* the paper's claims, one line each with a verdict computed from the runs (``bench.claims``);
* Tables 1 and 2: each I-Tuning row of the paper (``bench/data/paper_tables.yaml``) beside the
  reproduced row (mean ± std over seeds, with the number of seeds) and their difference; a missing
  cell says why (not run, failed, SPICE unavailable, dataset absent, not evaluated);
* Figure 1 (CIDEr vs trainable parameters, log axis), the ablation plots of the ``lambda``,
  ``bottleneck``, ``dropping`` and ``vlp`` sweeps when they were run;
* Table 3 (the first four test images, their references and the largest model's captions) and
  Figure 3 (the largest model's attention maps on the first test image);
* provenance: commits, package versions, hardware, budget, wall time per run, and the command that
  rebuilds the report.

The Markdown depends on the tracked runs only: rows are sorted, no time of generation is written
(the runs' start times, in the provenance section, are properties of the runs), so rebuilding from
the same runs gives the same file.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import REPO_ROOT
from bench.report import plots
from bench.report.claims import HOLDS, MISSING, ClaimReport, check_claims
from bench.report.paper import SOURCE, PaperRow, PaperTable, PaperTables, load_paper_tables
from bench.report.results import COLUMN_DATASETS, Group, RunSet, Stat, fetch_artifact, load_runs
from bench.sweep import tracking
from bench.sweep.profiles import PROFILES, SCALES
from ituning.errors import ArgumentParser, ITuningError, cli_main

REPORT_FILE = "README.md"
#: Files this generator writes into the output folder (older copies are removed first).
GENERATED_GLOBS = (REPORT_FILE, "figure*.png", "ablation_*.png", "table3_*.png")
TABLE3_IMAGES = 4
TABLE1_METRICS = {"cider": "CIDEr", "bleu4": "B@4", "meteor": "M", "spice": "S"}
NOCAPS_DOMAINS = {
    "in": "in-domain",
    "near": "near-domain",
    "out": "out-of-domain",
    "overall": "overall",
}


@dataclass(frozen=True)
class ReportSettings:
    """Where the runs are and where the report goes (CLI flags, in one place)."""

    profile: str = "mini"
    scale: str = "full"
    runs_dir: Path = Path("runs")
    out_dir: Path | None = None
    tracking_uri: str | None = None
    attention: bool = True

    @property
    def out(self) -> Path:
        if self.out_dir is not None:
            return Path(self.out_dir)
        suffix = "" if self.scale == "full" else f"-{self.scale}"
        return Path("reports") / f"{self.profile}{suffix}"

    @property
    def uri(self) -> str:
        return self.tracking_uri or tracking.default_tracking_uri(self.runs_dir)

    def command(self) -> str:
        """The command that rebuilds this report (paths as the user gave them)."""
        parts = ["python -m bench.report", f"--profile {self.profile}"]
        if self.scale != "full":
            parts.append(f"--scale {self.scale}")
        if self.tracking_uri:
            parts.append(f"--tracking-uri {_shown_uri(self.tracking_uri)}")
        else:
            parts.append(f"--runs-dir {shown(self.runs_dir)}")
        parts.append(f"--out {shown(self.out)}")
        if not self.attention:
            parts.append("--no-attention")
        return " ".join(parts)


@dataclass
class Context:
    settings: ReportSettings
    runs: RunSet
    paper: PaperTables
    out: Path
    scratch: Path

    @property
    def mini(self) -> bool:
        return self.runs.profile == "mini"


def build_report(settings: ReportSettings, *, log: Callable[[str], None] = print) -> Path:
    """Read the runs, compute the claims, write the Markdown and figures; returns the README."""
    runs = load_runs(settings.uri, profile=settings.profile, scale=settings.scale)
    paper = load_paper_tables()
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    for pattern in GENERATED_GLOBS:
        for old in out.glob(pattern):
            old.unlink()
    log(
        f"report: {len(runs.runs)} finished runs of profile {settings.profile}"
        f"{'' if settings.scale == 'full' else ' (' + settings.scale + ')'} in {_shown_uri(settings.uri)}"
    )
    with tempfile.TemporaryDirectory(prefix="ituning-report-") as scratch:
        ctx = Context(settings, runs, paper, out, Path(scratch))
        claims = check_claims(runs, paper)
        lines: list[str] = []
        for section in (
            _header,
            lambda c: _claims(c, claims),
            _table1,
            _table2,
            _figure1,
            _ablations,
            _table3,
            _figure3,
            _settings_table,
            _provenance,
        ):
            lines += section(ctx)
            while lines and not lines[-1]:
                lines.pop()
            lines.append("")
    path = out / REPORT_FILE
    path.write_text("\n".join(lines).rstrip() + "\n")
    log(f"report written to {shown(path)}")
    return path


# ---------------------------------------------------------------------- helpers


def shown(path: Path | str) -> str:
    """A path relative to the working directory when below it (no machine paths in reports)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def _shown_uri(uri: str) -> str:
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + shown(uri.removeprefix("sqlite:///"))
    return uri


def _clean(text: str) -> str:
    """One line, machine paths made relative, safe inside a Markdown table."""
    text = " ".join(str(text).split())
    for root in (Path.cwd().resolve(), REPO_ROOT):
        text = text.replace(str(root) + os.sep, "")
    home = str(Path.home())
    if home not in ("", "/"):
        text = text.replace(home + os.sep, "~" + os.sep)
    return text.replace("|", "\\|")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _cell(value: str) -> str:
    return value.replace("\n", "<br>") if value else " "


def _count(n: float | None) -> str:
    if n is None:
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def _seeds(group: Group) -> str:
    n = len(group.runs)
    return f"{n} seed{'s' if n != 1 else ''}"


class Notes:
    """Lettered notes explaining missing cells, numbered by first use (deterministic)."""

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}

    def mark(self, text: str) -> str:
        if text not in self._ids:
            self._ids[text] = _letter(len(self._ids))
        return f"— ({self._ids[text]})"

    def lines(self) -> list[str]:
        return (
            ["", *(f"- ({k}) {_clean(text)}" for text, k in self._ids.items())] if self._ids else []
        )


def _letter(i: int) -> str:
    return chr(ord("a") + i) if i < 26 else f"z{i - 25}"


# ---------------------------------------------------------------------- sections


def _header(ctx: Context) -> list[str]:
    scale = "" if ctx.settings.scale == "full" else f" ({ctx.settings.scale} scale)"
    lines = [
        f"# I-Tuning reproduction report: profile `{ctx.runs.profile}`{scale}",
        "",
        f"Published numbers: {SOURCE}. Reproduced numbers: {len(ctx.runs.runs)} finished runs "
        f"tracked in MLflow. Scores are on the paper's scale (×100, CIDEr-D).",
        "",
    ]
    if ctx.mini:
        lines += [
            "> **These are not the paper's numbers, and are not meant to be.** The `mini` profile "
            "trains I-Tuning on small frozen backbones that the harness pre-trains itself "
            "(mini-base/medium/large word-level GPT-2s, a small CLIP-style ViT) and evaluates it on "
            "the synthetic Shapes world, whose test split stands in for MSCOCO and whose "
            "NoCaps-style split (an unseen shape out of domain) stands in for NoCaps. Absolute "
            "values are not evidence either way, so the tables show no differences to the "
            "paper's rows. What "
            "this report checks is whether the paper's *claims* hold on these runs (next section). "
            "Run `python -m bench.reproduce --profile paper --data-root DIR` on a GPU machine for "
            "the real comparison.",
        ]
    else:
        lines += [
            "> Profile `paper`: GPT-2 base/medium/large and CLIP ViT-B/16 on MSCOCO (Karpathy "
            "splits) and NoCaps validation; the differences to the published numbers are reported "
            "below and checked in the claims section.",
        ]
    return lines


def _claims(ctx: Context, report: ClaimReport) -> list[str]:
    lines = ["## The paper's claims, checked on these runs", ""]
    for v in report.verdicts:
        mark = {HOLDS: "✅", MISSING: "⬜"}.get(v.verdict, "❌")
        text = f"- {mark} **{v.verdict}**: {v.claim} {_clean(v.evidence)}."
        if v.spread:
            text += f" Seeds: {v.spread}."
        if v.paper:
            text += f" ({v.paper})"
        lines.append(text)
    if report.not_checked:
        lines += ["", "Not checked at this profile:", ""]
        lines += [f"- {_clean(n)}" for n in report.not_checked]
    return lines


def _missing_reason(ctx: Context, row: PaperRow, sweep: str) -> str:
    failed = ctx.runs.pick_failed(
        lm=row.lm_size, vlp=bool(row.vlp), drop_fraction=row.drop_fraction
    )
    if failed is not None:
        return f"failed: run {failed.config_hash} ended {failed.status}: {failed.failure}"
    return (
        f"not run: no finished run of this point ({row.lm_size} LM, VLP "
        f"{'on' if row.vlp else 'off'}, drop {row.drop_fraction:g} of the depth); run sweep "
        f"`{sweep}` (python -m bench.sweep {sweep} --profile {ctx.runs.profile})"
    )


def _metric_cell(
    ctx: Context, group: Group, metric: str, notes: Notes, not_evaluated: str
) -> tuple[str, Stat | None]:
    stat = group.stat(metric)
    if stat is not None:
        return stat.fmt(), stat
    reason = next((r.unavailable(metric) for r in group.runs if r.unavailable(metric)), None)
    if reason is not None:
        leaf = metric.rsplit("/", 1)[-1].upper()
        return notes.mark(f"{leaf} unavailable: {reason}"), None
    return notes.mark(not_evaluated), None


def _paper_cells(row: PaperRow, columns: Sequence[str]) -> list[str]:
    return ["–" if row.values[c] is None else f"{row.values[c]:.1f}" for c in columns]


def _comparison_table(
    ctx: Context,
    table: PaperTable,
    header: list[str],
    sweep: str,
    prefer: tuple[str, ...],
    locate: Callable[[str], tuple[str, str]],
    notes: Notes,
) -> list[str]:
    """Paper rows, and under each I-Tuning row its reproduced row and the difference.

    ``locate(column)`` gives (family, metric): the family chooses the dataset (``coco``,
    ``flickr``, ``nocaps``), the metric is the tracked metric's name.
    """
    rows = []
    for prow in table.baselines():
        rows.append([prow.model, "paper", prow.params, *_paper_cells(prow, table.columns)])
    for prow in table.ours():
        rows.append([f"**{prow.model}**", "paper", prow.params, *_paper_cells(prow, table.columns)])
        groups: dict[str, Group | None] = {}
        for family in sorted({locate(c)[0] for c in table.columns}):
            datasets = COLUMN_DATASETS["flickr" if family == "flickr" else "coco"]
            groups[family] = ctx.runs.pick(
                lm=prow.lm_size,
                vlp=bool(prow.vlp),
                drop_fraction=prow.drop_fraction,
                datasets=datasets,
                prefer=prefer,
            )
        shown_group = next((g for g in groups.values() if g is not None), None)
        cells, deltas = [], []
        for column in table.columns:
            family, metric = locate(column)
            group = groups[family]
            published = prow.values[column]
            if group is None:
                if family == "flickr" and not any(
                    r.dataset in COLUMN_DATASETS["flickr"] for r in ctx.runs.runs
                ):
                    reason = (
                        "dataset absent: the mini profile has no Flickr30k analogue (the Shapes "
                        "test split stands in for MSCOCO only)"
                        if ctx.mini
                        else "dataset absent: no run of this profile trained on Flickr30k "
                        "(the paper profile's data root holds MSCOCO, NoCaps and Visual Genome)"
                    )
                else:
                    reason = _missing_reason(ctx, prow, sweep)
                cells.append(notes.mark(reason))
                deltas.append("")
                continue
            not_evaluated = f"not evaluated: the run has no {metric} score" + (
                " (eval.nocaps is off, or its evaluated NoCaps-style images hold none of this "
                "domain, e.g. under data.limit_eval_images)"
                if family == "nocaps"
                else ""
            )
            text, stat = _metric_cell(ctx, group, metric, notes, not_evaluated)
            cells.append(text)
            deltas.append(
                f"{stat.mean - published:+.1f}"
                if stat is not None and published is not None
                else ""
            )
        if shown_group is None:
            label = "reproduced"
            params = "–"
        else:
            label = f"reproduced: {shown_group.first.lm_name}, {_seeds(shown_group)}"
            p = shown_group.params_stat()
            params = _count(p.mean if p else None)
        rows.append(["", label, params, *cells])
        if not ctx.mini:  # at mini the task differs: a difference to the paper means nothing
            rows.append(["", "Δ (reproduced − paper)", "", *deltas])
    return _md_table(header, rows) + notes.lines()


def _table1(ctx: Context) -> list[str]:
    table = ctx.paper.table1
    header = ["Model", "Row", "#Params"]
    for column in table.columns:
        family, metric = column.split("_", 1)
        header.append(f"{'COCO' if family == 'coco' else 'F30k'} {TABLE1_METRICS[metric]}")

    def locate(column: str) -> tuple[str, str]:
        family, metric = column.split("_", 1)
        return family, f"test/{metric}"

    lines = [
        "## Table 1: captioning test split",
        "",
        "Rows in **bold** are the paper's I-Tuning models; under each, the reproduced run of the "
        "same point (LM size, VLP, dropped fraction of the depth; r = d_lm/2, λ = 1)"
        + (" and the difference" if not ctx.mini else "")
        + ". Other captioners are the paper's rows only. Reproduced cells with several "
        "seeds read mean ± standard deviation.",
        "",
    ]
    return lines + _comparison_table(ctx, table, header, "table1", ("table1",), locate, Notes())


def _table2(ctx: Context) -> list[str]:
    table = ctx.paper.table2
    header = ["Model", "Row", "#Params"]
    for column in table.columns:
        domain, metric = column.split("_", 1)
        header.append(f"{NOCAPS_DOMAINS[domain]} {TABLE1_METRICS[metric]}")

    def locate(column: str) -> tuple[str, str]:
        domain, metric = column.split("_", 1)
        return "nocaps", f"nocaps/{NOCAPS_DOMAINS[domain]}/{metric}"

    where = (
        "the Shapes NoCaps-style split (out of domain: a shape never seen in caption training)"
        if ctx.mini
        else "NoCaps validation"
    )
    lines = [
        "## Table 2: NoCaps (in-, near-, out-of-domain, overall)",
        "",
        f"Models trained on the captioning train split only (no VLP), evaluated on {where}.",
        "",
    ]
    return lines + _comparison_table(
        ctx, table, header, "table2", ("table2", "table1"), locate, Notes()
    )


def _point_label(group: Group) -> str:
    r = group.first
    label = r.lm_name + ("+VLP" if r.vlp else "")
    if r.drop:
        label += f" drop {r.drop}/{r.n_layers}"
    if r.lam != 1.0:
        label += f" λ={r.lam:g}"
    if not r.paper_bottleneck:
        label += f" r={r.bottleneck}"
    return label


def _paper_label(row: PaperRow) -> str:
    if not row.ours:
        return row.model
    size = {"base": "Base", "medium": "Medium", "large": "Large"}[row.lm_size or "base"]
    return f"{size}{'+VLP' if row.vlp else ''}{' drop' if row.drop_first else ''}"


_SHORT_NAMES = {
    "OSCAR-base (no tags)": "OSCAR",
    "OSCAR-base (with object tags)": "OSCAR+tags",
    "Unified VLP": "Unified VLP",
    "ClipCap (GPT2-Large)": "ClipCap",
}


def _figure1(ctx: Context) -> list[str]:
    title = "Figure 1: CIDEr against trainable parameters"
    lines = [f"## {title}", ""]
    t1 = ctx.paper.table1
    paper_ours = [
        plots.Point(_paper_label(r), r.params_count, r.values["coco_cider"])
        for r in t1.ours()
        if r.values["coco_cider"] is not None
    ]
    paper_base = [
        plots.Point(_SHORT_NAMES.get(r.model, r.model), r.params_count, r.values["coco_cider"])
        for r in t1.baselines()
        if r.values["coco_cider"] is not None
    ]
    reproduced: list[plots.Point] = []
    for g in ctx.runs.groups():
        s, p = g.stat("test/cider"), g.params_stat()
        if g.first.dataset in COLUMN_DATASETS["coco"] and s is not None and p is not None:
            reproduced.append(
                plots.Point(_point_label(g), p.mean, s.mean, s.std, g.first.lm_size, s.n)
            )
    name = f"reproduced ({ctx.runs.profile})"
    plots.params_vs_cider(
        paper_ours,
        paper_base,
        reproduced,
        ctx.out / "figure1_params_vs_cider.png",
        title=title,
        reproduced_name=f"{name}, {'Shapes' if ctx.mini else 'MSCOCO'} test",
        overlay=not ctx.mini,
    )
    lines += ["![Figure 1](figure1_params_vs_cider.png)", ""]
    if ctx.mini:
        lines.append(
            "The mini models have far fewer parameters than GPT-2 and are scored on another task: "
            "read the reproduced points against each other (does CIDEr grow with the LM, is the "
            "dropped model as good with half the parameters), not against the paper's."
        )
    if not reproduced:
        lines.append("No reproduced point: no finished run has a test CIDEr.")
    return lines


def _series(
    groups: Sequence[Group], x: Callable[[Group], float], metrics: Sequence[tuple[str, str]]
) -> list[plots.Series]:
    sizes = sorted({g.first.lm_name for g in groups})
    out = []
    for metric, name in metrics:
        for lm in sizes:
            pts = []
            for g in groups:
                s = g.stat(metric)
                if g.first.lm_name == lm and s is not None:
                    pts.append(plots.Point(_point_label(g), x(g), s.mean, s.std, n=s.n))
            if pts:
                label = name if len(sizes) == 1 else f"{name} ({lm})"
                out.append(plots.Series(label, tuple(pts)))
    return out


_ABLATION_METRICS = (("test/cider", "test CIDEr"), ("nocaps/overall/cider", "NoCaps overall CIDEr"))


def _ablation_rows(groups: Sequence[Group], x_name: str, x: Callable[[Group], str]) -> list[str]:
    rows = []
    for g in groups:
        cells = [x(g), g.first.lm_name + (" +VLP" if g.first.vlp else "")]
        for metric, _ in _ABLATION_METRICS:
            s = g.stat(metric)
            cells.append(s.fmt() if s else "–")
        p = g.params_stat()
        cells += [_count(p.mean if p else None), str(len(g.runs))]
        rows.append(cells)
    header = [x_name, "LM", "test CIDEr", "NoCaps overall CIDEr", "trainable", "seeds"]
    return _md_table(header, rows)


def _ablations(ctx: Context) -> list[str]:
    lines = ["## Ablations", ""]
    specs = ctx.runs.specs()
    profile = ctx.runs.profile

    def absent(name: str) -> list[str]:
        return [f"Not run: `python -m bench.sweep {name} --profile {profile}`.", ""]

    # lambda
    lines += ["### λ (scale of the module output, eq. 5)", ""]
    groups = ctx.runs.groups("lambda") if "lambda" in specs else []
    if groups:
        lams = sorted({g.first.lam for g in groups})
        plots.ablation(
            _series(groups, lambda g: g.first.lam, _ABLATION_METRICS),
            ctx.out / "ablation_lambda.png",
            title="λ ablation",
            xlabel="λ",
            log2_x=True,
            xticks=lams,
        )
        lines += ["![λ ablation](ablation_lambda.png)", ""]
        lines += _ablation_rows(groups, "λ", lambda g: f"{g.first.lam:g}") + [""]
    else:
        lines += absent("lambda")
    # bottleneck
    lines += ["### Bottleneck width r", ""]
    groups = ctx.runs.groups("bottleneck") if "bottleneck" in specs else []
    if groups:
        widths = sorted({g.first.bottleneck for g in groups})
        params = plots.Series(
            "trainable parameters",
            tuple(
                plots.Point("", g.first.bottleneck, g.params_stat().mean)
                for g in groups
                if g.params_stat() is not None
            ),
        )
        plots.ablation(
            _series(groups, lambda g: g.first.bottleneck, _ABLATION_METRICS),
            ctx.out / "ablation_bottleneck.png",
            title="Bottleneck width ablation",
            xlabel="r (module width)",
            log2_x=True,
            xticks=widths,
            right=params,
            right_label="trainable parameters",
        )
        lines += ["![bottleneck ablation](ablation_bottleneck.png)", ""]
        lines += _ablation_rows(
            groups, "r", lambda g: f"{g.first.bottleneck} (d_lm = {g.first.d_lm})"
        ) + [""]
    else:
        lines += absent("bottleneck")
    # dropping
    lines += ["### Dropped layers (I-Tuning Dropping)", ""]
    groups = ctx.runs.groups("dropping") if "dropping" in specs else []
    if groups:
        drops = sorted({g.first.drop for g in groups})
        params = plots.Series(
            "trainable parameters",
            tuple(
                plots.Point("", g.first.drop, g.params_stat().mean)
                for g in groups
                if g.params_stat() is not None
            ),
        )
        plots.ablation(
            _series(
                groups,
                lambda g: g.first.drop,
                (*_ABLATION_METRICS, ("nocaps/out-of-domain/cider", "NoCaps out-of-domain CIDEr")),
            ),
            ctx.out / "ablation_dropping.png",
            title="Dropping: modules removed from the lowest layers",
            xlabel="dropped layers (lowest first)",
            xticks=drops,
            right=params,
            right_label="trainable parameters",
        )
        lines += ["![dropping ablation](ablation_dropping.png)", ""]
        lines += _ablation_rows(
            groups, "dropped", lambda g: f"{g.first.drop} of {g.first.n_layers}"
        ) + [""]
    else:
        lines += absent("dropping")
    # VLP
    lines += ["### Vision-language pre-training (VLP)", ""]
    groups = ctx.runs.groups("vlp") if "vlp" in specs else []
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
    if pairs:
        plots.paired_bars(
            pairs, ctx.out / "ablation_vlp.png", title="VLP off / on", names=("no VLP", "VLP")
        )
        lines += ["![VLP ablation](ablation_vlp.png)", ""]
        lines += _ablation_rows(groups, "VLP", lambda g: "on" if g.first.vlp else "off") + [""]
    else:
        lines += absent("vlp")
    return lines


def _largest_run(ctx: Context):
    group = ctx.runs.largest()
    return (group, group.first) if group is not None else (None, None)


def _test_records(run, limit: int):
    from ituning.data.karpathy import read_karpathy

    ds = read_karpathy(
        run.params["data.captions"],
        run.params["data.image_root"],
        splits=["test"],
        check_images=False,
    ).split("test")
    return ds, list(ds.records[:limit])


def _table3(ctx: Context) -> list[str]:
    from ituning.data.images import load_image
    from ituning.data.records import natural_id
    from ituning.metrics.results_file import read_coco_results

    lines = [f"## Table 3: captions of the first {TABLE3_IMAGES} test images", ""]
    group, run = _largest_run(ctx)
    if run is None:
        return lines + [
            "No finished run of the paper's module (r = d_lm/2, λ = 1) to caption with."
        ]
    try:
        preds_file = fetch_artifact(
            ctx.settings.uri,
            run,
            "predictions_test.json",
            "predictions/predictions_test.json",
            ctx.scratch / "predictions",
        )
        predictions = read_coco_results(preds_file)
        ds, records = _test_records(run, TABLE3_IMAGES)
    except ITuningError as exc:
        return lines + [f"Not available: {_clean(str(exc))}"]
    lines += [
        f"Generated by the largest model, {run.label()} (run {run.config_hash}, seed {run.seed}), "
        f"with beam {run.params.get('eval.beam', '?')}.",
        "",
    ]
    header = ["#", "Image", "References", "Generated (reproduced)"]
    if not ctx.mini:
        header.append("Paper: I-Tuning (GPT2-Large)")
    rows = []
    for i, rec in enumerate(records, 1):
        name = f"table3_{i}.png"
        try:
            _thumbnail(load_image(ds.image_path(rec))).save(ctx.out / name)
            image = f"![test image {i}]({name})"
        except (ITuningError, OSError) as exc:
            image = f"(image unavailable: {_clean(str(exc))})"
        refs = "<br>".join(_clean(c) for c in rec.captions)
        generated = predictions.get(natural_id(rec.image_id), "(no prediction for this image)")
        row = [str(i), image, refs, _clean(generated)]
        if not ctx.mini:
            printed = ctx.paper.table3[i - 1].ituning_large if i <= len(ctx.paper.table3) else ""
            row.append(_clean(printed))
        rows.append(row)
    lines += _md_table(header, rows)
    if ctx.mini:
        lines += ["", "The paper's Table 3 (MSCOCO images, for reference; not these images):", ""]
        lines += _md_table(
            ["#", "References (2 of 5)", "ClipCap", "OSCAR", "I-Tuning (GPT2-Large)"],
            [
                [
                    str(i),
                    "<br>".join(_clean(g) for g in ex.golden),
                    ex.clipcap,
                    ex.oscar,
                    ex.ituning_large,
                ]
                for i, ex in enumerate(ctx.paper.table3, 1)
            ],
        )
    return lines


def _thumbnail(image):
    """Small images (Shapes, 64 px) enlarged, large ones (COCO) reduced: ~256 px wide."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    if w < 256:
        k = max(1, 256 // w)
        return image.resize((w * k, h * k), Image.NEAREST)
    scale = 320 / w
    return image.resize((320, max(1, round(h * scale))), Image.BICUBIC)


def _figure3(ctx: Context) -> list[str]:
    lines = ["## Figure 3: attention of the last I-Tuning module", ""]
    if not ctx.settings.attention:
        return lines + ["Skipped (--no-attention)."]
    group, run = _largest_run(ctx)
    if run is None:
        return lines + ["No finished run of the paper's module to draw attention maps from."]
    try:
        from ituning.attention import attention_figure
        from ituning.decode import DecodeSettings

        ds, records = _test_records(run, 1)
        if not records:
            return lines + ["The test split is empty."]
        checkpoint = fetch_artifact(
            ctx.settings.uri, run, "checkpoint", "checkpoint", ctx.scratch / "checkpoint"
        )
        settings = DecodeSettings(
            beam=int(run.params.get("eval.beam", 5)),
            max_new_tokens=int(run.params.get("eval.max_new_tokens", 20)),
            length_penalty=float(run.params.get("eval.length_penalty", 1.0)),
        )
        caption = attention_figure(
            ds.image_path(records[0]), checkpoint, ctx.out / "figure3_attention.png", settings
        )
    except (ITuningError, OSError) as exc:
        return lines + [f"Not available: {_clean(str(exc))}"]
    return lines + [
        f"The largest model ({run.label()}, run {run.config_hash}) on the first test image; one "
        "panel per generated word, the heat map is the attention (eq. 4) of the position that "
        f"predicted it. Caption: “{_clean(caption)}”.",
        "",
        "![Figure 3](figure3_attention.png)",
    ]


def _settings_table(ctx: Context) -> list[str]:
    lines = ["## Every reproduced setting", ""]
    groups = ctx.runs.groups()
    if not groups:
        return lines + ["No finished runs."]
    rows = []
    for g in groups:
        cells = [_point_label(g), ", ".join(g.specs), ", ".join(str(s) for s in g.seeds)]
        p = g.params_stat()
        cells.append(_count(p.mean if p else None))
        for metric in (
            "test/cider",
            "test/bleu4",
            "test/meteor",
            "nocaps/overall/cider",
            "nocaps/out-of-domain/cider",
            "control/test/blank_cider",
            "grounding/test/shape_precision",
        ):
            s = g.stat(metric)
            cells.append(s.fmt(2 if "grounding" in metric else 1) if s else "–")
        rows.append(cells)
    header = [
        "setting",
        "specs",
        "seeds",
        "trainable",
        "test CIDEr",
        "B@4",
        "METEOR",
        "NoCaps CIDEr",
        "NoCaps out CIDEr",
        "blank-image CIDEr",
        "shape precision",
    ]
    lines += _md_table(header, rows)
    failed = ctx.runs.failures()
    if failed:
        lines += ["", "Failed or killed, never finished since:", ""]
        lines += [
            f"- {r.config_hash} ({r.label()}, specs {', '.join(r.specs)}): {_clean(r.failure)}"
            for r in failed
        ]
    return lines


def _distinct(ctx: Context, key: str) -> str:
    values = sorted({r.tags.get(key, "") for r in ctx.runs.runs} - {""})
    return ", ".join(values) if values else "unknown"


def _provenance(ctx: Context) -> list[str]:
    runs = sorted(ctx.runs.runs, key=lambda r: (r.start_ms, r.config_hash))
    here = tracking.environment_tags()
    commits = sorted(
        {(r.tags.get("git_commit", "")[:12], r.tags.get("git_dirty", "")) for r in runs}
    )
    commit_text = ", ".join(
        f"{c or 'unknown'}{' (uncommitted changes)' if d == 'True' else ''}" for c, d in commits
    )
    packages = sorted(
        {k.removeprefix("version.") for r in runs for k in r.tags if k.startswith("version.")}
    )
    budget_keys = (
        ("epochs", "epochs"),
        ("vlp_epochs", "VLP epochs"),
        ("batch_captions", "batch (captions)"),
        ("optim.lr", "lr"),
        ("eval.beam", "beam"),
        ("data.limit_train_images", "train images limit"),
    )
    budget = "; ".join(
        f"{label} {', '.join(sorted({r.params.get(k, '?') for r in runs}))}"
        for k, label in budget_keys
    )
    total = sum(r.wall_time_s or 0.0 for r in runs)
    lines = [
        "## Provenance",
        "",
        f"- Profile: `{ctx.runs.profile}`, scale `{ctx.runs.scale}`; budget (from the runs' "
        f"params): {budget if runs else 'no runs'}",
        f"- Tracking store: `{_shown_uri(ctx.runs.uri)}`; {len(runs)} finished runs, "
        f"{len(ctx.runs.failed)} failed or killed",
        f"- Code: runs made at commit {commit_text if runs else '–'}; report built at commit "
        f"{here.get('git_commit', 'unknown')[:12]}",
        "- Packages (from the runs' tags): "
        + (", ".join(f"{p} {_distinct(ctx, 'version.' + p)}" for p in packages) or "unknown"),
        f"- Hardware: {_distinct(ctx, 'hardware.platform')}; CPU {_distinct(ctx, 'hardware.cpu')}, "
        f"{_distinct(ctx, 'hardware.cores')} cores; accelerator {_distinct(ctx, 'hardware.accelerator')}",
        f"- Wall time: {total:.0f} s over {len(runs)} runs (training, evaluation; a point shared "
        "by several specs ran once)",
        f"- Rebuild this report: `{ctx.settings.command()}`",
        "",
    ]
    rows = []
    for r in runs:
        started = dt.datetime.fromtimestamp(r.start_ms / 1000, tz=dt.UTC).strftime(
            "%Y-%m-%d %H:%M:%S"
        )
        wall = f"{r.wall_time_s:.0f}" if r.wall_time_s is not None else "–"
        rows.append([r.config_hash, r.label(), ", ".join(r.specs), str(r.seed), wall, started])
    if rows:
        lines += _md_table(
            ["run id", "point", "specs", "seed", "wall time (s)", "started (UTC)"], rows
        )
    return lines


# ---------------------------------------------------------------------- CLI


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="mini", choices=PROFILES, help="default: mini")
    p.add_argument("--scale", default="full", choices=SCALES, help="tiny: the test-size runs")
    p.add_argument("--out", type=Path, help="output folder (default reports/<profile>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///RUNS/mlflow.db)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="run folders and stores")
    p.add_argument(
        "--no-attention", action="store_true", help="skip Figure 3 (loads the largest model)"
    )
    args = p.parse_args(argv)
    settings = ReportSettings(
        profile=args.profile,
        scale=args.scale,
        runs_dir=args.runs_dir,
        out_dir=args.out,
        tracking_uri=args.tracking_uri,
        attention=not args.no_attention,
    )
    build_report(settings)
    return 0
