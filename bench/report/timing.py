"""Where the reproduction's time went: seconds per phase of every run, and elapsed time.

Each run logs ``time/<phase>_s`` (``ituning.phase_clock``): loading the backbones, the image
features, VLP, training, the checkpoint, decoding, scoring, the attention figure and the controls.
The table sums them over the runs of each LM size; *summed* run time counts every worker's
seconds, *elapsed* is the wall clock from the first run's start to the last run's end (workers run
in parallel, so elapsed is shorter; it excludes building the backbones and the report).
"""

from __future__ import annotations

from bench.report.csv_tables import write_csv
from bench.report.markdown import table
from bench.report.settings import ReportInputs
from ituning.phase_clock import PREFIX

PHASES = (
    ("load", "load backbones"),
    ("features", "image features"),
    ("vlp", "VLP"),
    ("train", "training"),
    ("checkpoint", "checkpoint"),
    ("decode", "decoding"),
    ("score", "scoring"),
    ("attention", "Figure 3"),
    ("controls", "controls"),
)


def time_breakdown(inputs: ReportInputs) -> list[str]:
    frame = inputs.runs.frame
    columns = [f"{PREFIX}{p}_s" for p, _ in PHASES]
    present = [c for c in columns if c in frame.columns]
    if frame.empty or not present:
        return ["The runs logged no per-phase times (made before the harness timed phases)."]
    per = frame.groupby("lm", sort=False)[present].sum().reindex(columns=columns).fillna(0.0)
    per["runs"] = frame.groupby("lm", sort=False)["run_id"].count()
    order = [s for s in ("base", "medium", "large") if s in per.index]
    order += [s for s in per.index if s not in order]
    per = per.loc[order]
    total = per[columns].to_numpy().sum()
    rows = []
    for size, row in per.iterrows():
        cells = [f"{size} ({int(row['runs'])} runs)"]
        cells += [f"{row[c]:.0f}" for c in columns]
        cells.append(f"{row[columns].sum():.0f}")
        rows.append(cells)
    sums = per[columns].sum()
    rows.append(
        [
            "all",
            *(f"{sums[c]:.0f} ({100 * sums[c] / total:.0f} %)" for c in columns),
            f"{total:.0f}",
        ]
    )
    header = ["LM", *(name for _, name in PHASES), "total (s)"]
    runs = inputs.runs.runs
    start = min(r.start_ms for r in runs)
    end = max(r.end_ms for r in runs)
    workers = sorted({r.tags.get("worker", "") for r in runs} - {""})
    lines = [
        f"Summed run time {total:.0f} s ({total / 60:.1f} min) over {len(runs)} runs; elapsed "
        f"from the first run's start to the last run's end {(end - start) / 1000:.0f} s "
        f"({(end - start) / 60000:.1f} min) with {len(workers)} worker processes (runs made at "
        "different times, e.g. by later sweeps, count their gaps as elapsed).",
        "",
        *table(header, rows),
        "",
        write_csv(inputs, "time_by_phase.csv", per.reset_index()),
    ]
    return lines
