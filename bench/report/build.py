"""Build the reproduction report from MLflow: ``python -m bench.report [--profile mini|paper] ...``.

Writes ``<out>/README.md`` (default ``reports/<profile>/``), its PNG figures and, beside each
table, a CSV of its numbers:

* the paper's claims, one line each with a verdict computed from the runs (``claims``);
* Tables 1 and 2 against the paper's rows (``comparison_tables``), Figure 1 (``figures``), the
  ablations (``ablations``), I-Tuning over each LM family (``family``), the objects the captions
  name (``objects``), Table 3 and Figure 3 (``examples``), every setting and the provenance
  (``provenance``).

The prose around them is ``report_template.md``. The output depends on the tracked runs only: rows
are sorted and no time of generation is written (the runs' start times are properties of the
runs), so rebuilding from the same runs gives the same files.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.report.ablations import ablations
from bench.report.claims import check_claims
from bench.report.comparison_tables import NOCAPS_SPLIT, table1, table2
from bench.report.examples import TABLE3_IMAGES, figure3, table3
from bench.report.family import family_section
from bench.report.figures import figure1
from bench.report.markdown import clean, fill
from bench.report.method_comparison import method_comparison
from bench.report.objects import objects_section
from bench.report.paper import SOURCE, load_paper_tables
from bench.report.provenance import provenance, settings_table
from bench.report.resampling import Resamples
from bench.report.settings import ReportInputs, ReportSettings, shown, shown_uri
from bench.report.store import load_runs
from bench.report.timing import time_breakdown
from bench.report.verdicts import FAILS, HOLDS, INCONCLUSIVE, MISSING, VERDICTS, Verdict
from bench.sweep.profiles import PROFILES, SCALES
from ituning.errors import ArgumentParser, cli_main

__all__ = ["GENERATED_GLOBS", "REPORT_FILE", "ReportSettings", "build_report", "main", "shown"]

REPORT_FILE = "README.md"
#: Files this generator writes into the output folder (older copies are removed first).
GENERATED_GLOBS = (REPORT_FILE, "figure*.png", "ablation_*.png", "table3_*.png", "*.csv")


def build_report(settings: ReportSettings, *, log: Callable[[str], None] = print) -> Path:
    """Read the runs, compute the claims, write the Markdown, figures and CSVs; returns the
    README's path."""
    runs = load_runs(settings.uri, profile=settings.profile, scale=settings.scale)
    paper = load_paper_tables()
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    for pattern in GENERATED_GLOBS:
        for old in out.glob(pattern):
            old.unlink()
    scale = "" if settings.scale == "full" else f" ({settings.scale})"
    log(
        f"report: {len(runs.runs)} finished runs of profile {settings.profile}{scale} in "
        f"{shown_uri(settings.uri)}"
    )
    with tempfile.TemporaryDirectory(prefix="ituning-report-") as scratch:
        text = render(ReportInputs(settings, runs, paper, out, Path(scratch)))
    path = out / REPORT_FILE
    path.write_text(text)
    log(f"report written to {shown(path)}")
    return path


def render(inputs: ReportInputs) -> str:
    """The README's text; draws the figures and writes the CSVs into ``inputs.out`` on the way."""
    runs = inputs.runs
    resamples = Resamples(inputs.settings.uri, inputs.scratch, inputs.settings.cache / "resamples")
    sections: dict[str, list[str]] = {
        "claims": _claims(check_claims(runs, inputs.paper, resamples), resamples),
        "table1": table1(inputs),
        "table2": table2(inputs),
        "methods": method_comparison(inputs),
        "figure1": figure1(inputs),
        "ablations": ablations(inputs),
        "lm_family": family_section(inputs),
        "objects": objects_section(inputs),
        "table3": table3(inputs),
        "figure3": figure3(inputs),
        "settings": settings_table(inputs),
        "timing": time_breakdown(inputs),
        "provenance": provenance(inputs),
    }
    text = fill(
        "report",
        profile=runs.profile,
        scale="" if inputs.settings.scale == "full" else f" ({inputs.settings.scale} scale)",
        source=SOURCE,
        n_runs=len(runs.runs),
        profile_note=fill("mini_note" if inputs.mini else "paper_note"),
        and_difference="" if inputs.mini else " and the difference",
        nocaps_split=NOCAPS_SPLIT[inputs.mini],
        table3_images=TABLE3_IMAGES,
        **{name: "\n".join(lines) for name, lines in sections.items()},
    )
    return text.rstrip() + "\n"


MARKS = {HOLDS: "✅", FAILS: "❌", INCONCLUSIVE: "❔", MISSING: "⬜"}


def _claims(verdicts: list[Verdict], resamples: Resamples) -> list[str]:
    """A count of the verdicts, then one entry per claim: its verdict, what is tested, the
    paper's sentence (or the table it is derived from), the evidence and the paper's numbers."""
    counts = {v: sum(x.verdict == v for x in verdicts) for v in VERDICTS}
    lines = [
        ", ".join(f"{n} {v}" for v, n in counts.items() if n) + f" ({len(verdicts)} claims).",
        "",
    ]
    for v in verdicts:
        lines.append(f"- {MARKS.get(v.verdict, '➖')} **{v.verdict}**: {clean(v.claim)}")
        lines.append(f"  - Paper: {clean(v.source)}" + (f" — {clean(v.paper)}" if v.paper else ""))
        lines.append(f"  - Reproduced: {clean(v.evidence)}")
        details = "; ".join(iv.sources() for iv in v.intervals if iv.known)
        if details:
            lines.append(f"  - Interval: {details}")
    if resamples.problems:
        first = next(iter(resamples.problems.items()))
        lines += [
            "",
            f"Test-set resampling failed for {len(resamples.problems)} run metrics (their "
            f"intervals use seeds only), e.g. {first[0]}: {clean(first[1])}",
        ]
    return lines


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="mini", choices=PROFILES, help="default: mini")
    p.add_argument("--scale", default="full", choices=SCALES, help="tiny: the test-size runs")
    p.add_argument("--out", type=Path, help="output folder (default reports/<profile>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///RUNS/mlflow.db)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="run folders and stores")
    p.add_argument(
        "--no-attention",
        action="store_true",
        help="skip Figure 3 (the largest run's attention maps)",
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
