"""The numbers behind the report's tables, written as CSV files beside its README.

The Markdown shows "137.5 ± 4.8"; a CSV keeps the numbers themselves (mean, sample standard
deviation and count over seeds for each metric, and which seeds) so that they can be re-plotted or
compared without parsing text. The statistics are :meth:`RunSet.summary`'s, so the CSVs and the
claims read the same numbers. A fixed float format and line ending make a rebuild from the same
runs byte-identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from bench.report.markdown import csv_link
from bench.report.results import Group, RunSet
from bench.report.settings import ReportInputs
from bench.sweep.axes import AXES

FLOAT_FORMAT = "%.10g"
#: Summary columns that describe a setting (the axes but the seed, and the LM it ran on).
SETTING_COLUMNS = (*(a for a in AXES if a != "seed"), "lm_name", "lm_layers", "seeds")
STATS = ("mean", "std", "n")


def stat_columns(name: str) -> list[str]:
    """``<name> mean``, ``<name> std``, ``<name> n``: one metric over seeds."""
    return [f"{name} {k}" for k in STATS]


def group_summary(runs: RunSet, groups: Sequence[Group], metrics: Sequence[str]) -> pd.DataFrame:
    """One row per group, in the order given (the Markdown table's): :meth:`RunSet.summary`'s row
    of that group's setting, with every metric's columns present even when no run has it."""
    columns = [*SETTING_COLUMNS, *(c for m in metrics for c in stat_columns(m))]
    settings = [g.first.setting for g in groups]
    summary = runs.summary(metrics) if settings else pd.DataFrame(columns=["setting"])
    frame = summary.set_index("setting").reindex(settings).reindex(columns=columns)
    frame = frame.reset_index(drop=True)
    for metric in metrics:
        frame[f"{metric} n"] = frame[f"{metric} n"].fillna(0).astype(int)
    return frame


def write_csv(inputs: ReportInputs, name: str, frame: pd.DataFrame) -> str:
    """Write ``frame`` as ``<out>/<name>``; returns the Markdown line that links it."""
    frame.to_csv(inputs.out / name, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    return csv_link(name)
