"""The report's section on the objects captions name: a row per model with its seeds, the CSV
beside it, and one line when no run has the scores (saying where CHAIR's inputs belong)."""

from __future__ import annotations

import csv

from test_report import PAPER, make_run, runset

from bench.report.objects import CSV_FILE, objects_section
from bench.report.settings import ReportInputs, ReportSettings


def _section(tmp_path, *runs, profile="mini") -> str:
    inputs = ReportInputs(
        ReportSettings(out_dir=tmp_path, profile=profile),
        runset(*runs, profile=profile),
        PAPER,
        tmp_path,
        tmp_path,
    )
    return "\n".join(objects_section(inputs))


def test_each_model_gets_its_recall_precision_and_repetition_over_seeds(tmp_path):
    runs = [
        make_run(
            "large",
            n_layers=8,
            seed=s,
            metrics={
                "objects/test/recall": 0.8 + 0.1 * s,
                "objects/test/precision": 0.9,
                "objects/test/repetition": 0.05,
                "objects/test/n3/recall": 0.6 + 0.1 * s,
            },
        )
        for s in (0, 1)
    ]
    runs.append(make_run(metrics={"test/cider": 1.0}))  # no object scores: no row
    text = _section(tmp_path, *runs)
    rows = [line for line in text.splitlines() if line.startswith("| itune")]
    assert len(rows) == 1
    assert "| 0 1 |" in rows[0] and "0.85 ± 0.07" in rows[0] and "0.65 ± 0.07" in rows[0]
    assert "| – |" in rows[0]  # no 1-object recall logged
    with open(tmp_path / CSV_FILE) as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["objects/test/recall mean"]) == 0.85 and row["objects/test/recall n"] == "2"
    assert "Recall: the share of a scene's objects" in text


def test_without_scores_one_line_says_why_and_where_chair_inputs_belong(tmp_path):
    assert "No run has object scores" in _section(tmp_path, make_run())
    why = "data/coco/annotations/synonyms.txt: missing; put the CHAIR synonym list there"
    run = make_run(profile="paper", tags={"unavailable.chair/test": why})
    text = _section(tmp_path, run, profile="paper")
    assert text == f"CHAIR: {why}."
