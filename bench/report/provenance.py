"""The report's closing sections: every reproduced setting, and where the numbers come from.

The settings table lists every group of seeds, whichever spec asked for it, so that no finished run
is left out of the report; failed runs are listed with their reason. The provenance section says
which commit, packages, hardware and budget made the runs and the command that rebuilds the report,
so a reader can tell whether two reports are comparable. ``settings.csv`` and ``runs.csv`` hold
their numbers (``runs.csv`` with every tracked metric of every run, the per-seed values the means
are computed from).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from bench.report.csv_tables import group_summary, write_csv
from bench.report.markdown import clean, count, point_label, table
from bench.report.results import LM_ORDER, Run
from bench.report.settings import ReportInputs, shown_uri
from bench.sweep import tracking
from bench.sweep.axes import AXES

#: The settings table's metrics: (tracked metric, header, digits).
SETTINGS_METRICS = (
    ("test/cider", "test CIDEr", 1),
    ("test/bleu4", "B@4", 1),
    ("test/meteor", "METEOR", 1),
    ("nocaps/overall/cider", "NoCaps CIDEr", 1),
    ("nocaps/out-of-domain/cider", "NoCaps out CIDEr", 1),
    ("control/test/blank_cider", "blank-image CIDEr", 1),
    ("grounding/test/shape_precision", "shape precision", 2),
)
#: Training budget as the provenance line prints it: (param, name).
BUDGET_PARAMS = (
    ("epochs", "epochs"),
    ("vlp_epochs", "VLP epochs"),
    ("batch_captions", "batch (captions)"),
    ("captions_per_image", "captions per image per epoch"),
    ("optim.lr", "lr"),
    ("eval.beam", "beam"),
    ("data.limit_train_images", "train images limit"),
)


def settings_table(inputs: ReportInputs) -> list[str]:
    """Every group of seeds (``settings.csv``), then the runs that failed."""
    groups = inputs.runs.groups()
    if not groups:
        return ["No finished runs."]
    rows = []
    for g in groups:
        cells = [point_label(g), ", ".join(g.specs), ", ".join(str(s) for s in g.seeds)]
        p = g.params_stat()
        cells.append(count(p.mean if p else None))
        for metric, _, digits in SETTINGS_METRICS:
            s = g.stat(metric)
            cells.append(s.fmt(digits) if s else "–")
        rows.append(cells)
    header = ["setting", "specs", "seeds", "trainable", *(h for _, h, _ in SETTINGS_METRICS)]
    metrics = ["trainable_params", *(m for m, _, _ in SETTINGS_METRICS)]
    frame = group_summary(inputs.runs, groups, metrics)
    frame.insert(0, "setting", [point_label(g) for g in groups])
    frame.insert(1, "specs", [" ".join(g.specs) for g in groups])
    lines = [*table(header, rows), "", write_csv(inputs, "settings.csv", frame)]
    failed = inputs.runs.failures()
    if failed:
        lines += ["", "Failed or killed, never finished since:", ""]
        lines += [
            f"- {r.config_hash} ({r.label()}, specs {', '.join(r.specs)}): {clean(r.failure)}"
            for r in failed
        ]
    return lines


def provenance(inputs: ReportInputs) -> list[str]:
    """Commits, packages, hardware, budget, wall time, rebuild command; one row per run
    (``runs.csv``)."""
    runs = sorted(inputs.runs.runs, key=lambda r: (r.start_ms, r.config_hash))
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
    budget = "; ".join(
        f"{label} {', '.join(sorted({r.params.get(k, '?') for r in runs}))}"
        for k, label in BUDGET_PARAMS
    )
    total = sum(r.wall_time_s or 0.0 for r in runs)

    def distinct(key: str) -> str:
        values = sorted({r.tags.get(key, "") for r in inputs.runs.runs} - {""})
        return ", ".join(values) if values else "unknown"

    lines = [
        f"- Profile: `{inputs.runs.profile}`, scale `{inputs.runs.scale}`; budget (from the runs' "
        f"params): {budget if runs else 'no runs'}",
        f"- Tracking store: `{shown_uri(inputs.runs.uri)}`; {len(runs)} finished runs, "
        f"{len(inputs.runs.failed)} failed or killed",
        f"- Code: runs made at commit {commit_text if runs else '–'}; report built at commit "
        f"{here.get('git_commit', 'unknown')[:12]}",
        "- Packages (from the runs' tags): "
        + (", ".join(f"{p} {distinct('version.' + p)}" for p in packages) or "unknown"),
        *_data_and_backbones(runs),
        f"- Hardware: {distinct('hardware.platform')}; CPU {distinct('hardware.cpu')}, "
        f"{distinct('hardware.cores')} cores, {distinct('hardware.threads')} torch thread(s) per "
        f"run; accelerator {distinct('hardware.accelerator')}",
        f"- Summed run time: {total:.0f} s over {len(runs)} runs (each run's training and "
        "evaluation; a point shared by several specs ran once; elapsed time and phases: "
        "the previous section)",
        f"- Rebuild this report: `{inputs.settings.command()}`",
        "",
    ]
    if not runs:
        return lines
    rows = []
    for r in runs:
        wall = f"{r.wall_time_s:.0f}" if r.wall_time_s is not None else "–"
        rows.append([r.config_hash, r.label(), ", ".join(r.specs), str(r.seed), wall, _started(r)])
    header = [
        "config hash (in the MLflow run name)",
        "point",
        "specs",
        "seed",
        "wall time (s)",
        "started (UTC)",
    ]
    lines += table(header, rows)
    return [*lines, "", write_csv(inputs, "runs.csv", _runs_frame(inputs, runs))]


def _data_and_backbones(runs: list[Run]) -> list[str]:
    """The data's sizes (read from the runs' data files) and the backbones' depths and widths."""
    if not runs:
        return []
    lms = sorted(
        {(r.lm_size, r.lm_name, r.n_layers, r.d_lm) for r in runs},
        key=lambda t: (LM_ORDER.get(t[0], 9), t[1]),
    )
    vision = sorted({r.params.get("vision.width", "?") for r in runs})
    lines = [
        "- Backbones (frozen): "
        + ", ".join(
            f"{size} = {name} ({layers} layers × {width})" for size, name, layers, width in lms
        )
        + f"; vision encoder {', '.join(sorted({Path(r.params.get('backbones.vision', '?')).name for r in runs}))}"
        f" (token width {', '.join(vision)})"
    ]
    sizes = _split_sizes(runs[0])
    if sizes:
        lines.append(f"- Data ({Path(runs[0].params.get('data.captions', '?')).name}): {sizes}")
    return lines


def _split_sizes(run: Run) -> str:
    """``4000 train / 500 val / 500 test images, 5 captions each; NoCaps-style 200 per domain``."""
    import json

    try:
        raw = json.loads(Path(run.params["data.captions"]).read_text())
        splits: dict[str, int] = {}
        for image in raw["images"]:
            splits[image["split"]] = splits.get(image["split"], 0) + 1
        text = " / ".join(f"{n} {name}" for name, n in splits.items()) + " images"
        nocaps = run.params.get("data.nocaps")
        if nocaps and nocaps != "null" and Path(nocaps).is_file():
            images = json.loads(Path(nocaps).read_text())["images"]
            domains: dict[str, int] = {}
            for image in images:
                domains[image.get("domain", "?")] = domains.get(image.get("domain", "?"), 0) + 1
            text += "; NoCaps-style " + ", ".join(f"{n} {d}" for d, n in domains.items())
        regions = run.params.get("data.vlp_image_data")
        if regions and regions != "null" and Path(regions).is_file():
            text += f"; VLP {len(json.loads(Path(regions).read_text()))} images"
        return text
    except (OSError, KeyError, ValueError, TypeError):
        return ""


def _started(run: Run) -> str:
    return dt.datetime.fromtimestamp(run.start_ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _runs_frame(inputs: ReportInputs, runs: list[Run]) -> pd.DataFrame:
    """:attr:`RunSet.frame` in the table's order: the table's columns, then each run's axes and
    every tracked metric (the per-seed numbers behind every mean in the report)."""
    frame = inputs.runs.frame.set_index("run_id").loc[[r.config_hash for r in runs]]
    frame = frame.reset_index()
    frame.insert(1, "point", [r.label() for r in runs])
    frame["started_utc"] = [_started(r) for r in runs]
    first = ["run_id", "point", "specs", "seed", "wall_time_s", "started_utc"]
    described = [*AXES, "lm_name", "lm_layers"]
    described = [c for c in described if c not in first]
    metrics = sorted(set(frame.columns) - {*first, *described, "setting"})
    return frame.reindex(columns=[*first, *described, *metrics])
