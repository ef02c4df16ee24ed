"""The report's section on the objects captions name: a row per model with its seeds, the CSV
beside it, and one line when no run has the scores (saying where CHAIR's inputs belong)."""

from __future__ import annotations

import csv
import json

from test_object_places import SCENE
from test_report import PAPER, make_run, runset

from bench.report.objects import CSV_FILE, objects_section
from bench.report.settings import ReportInputs, ReportSettings


def _section(tmp_path, *runs, profile="mini") -> str:
    inputs = ReportInputs(
        ReportSettings(out_dir=tmp_path, profile=profile, runs_dir=tmp_path / "runs"),
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


def test_the_largest_model_gets_its_recall_by_place_from_its_predictions(tmp_path):
    captions = tmp_path / "dataset_shapes.json"
    sentences = [{"raw": "x", "tokens": ["x"], "imgid": 0, "sentid": 0}]
    image = {"filename": "test/000000.png", "split": "test", "imgid": 0, "sentids": [0]}
    image |= {"objects": SCENE, "sentences": sentences}
    captions.write_text(json.dumps({"dataset": "shapes", "images": [image]}))
    said = {
        0: "in the top left a red heart, a green cross and a blue circle.",
        1: "in the top left a green heart and in the top right a blue circle.",
    }
    runs = []
    for seed, caption in said.items():
        folder = tmp_path / f"run{seed}"
        folder.mkdir()
        (folder / "predictions_test.json").write_text(
            json.dumps([{"image_id": "test/000000", "caption": caption}])
        )
        runs.append(
            make_run(
                "large",
                seed=seed,
                metrics={"objects/test/recall": 1.0},
                params={"data.captions": str(captions)},
                tags={"run_folder": str(folder)},
            )
        )
    text = _section(tmp_path, *runs)
    # the red heart: named by seed 0; seed 1 gives its cell the green of the cross below it
    assert "| 1 | yes | 1 | 0.50 ± 0.71 | 0.50 | 0.00 | 0.00 |" in text
    # the blue circle: named by both, its cell only by seed 1
    assert "| 3 | no | 1 | 1.00 ± 0.00 | 0.00 | 0.00 | 0.50 |" in text
    assert (
        "Lowest: place 1 sharing its column, recall 0.50; at its cell the partner's words " in text
    )
    with open(tmp_path / "object_places.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["place"], r["shares_column"], r["seeds"]) for r in rows] == [
        ("1", "True", "2"),
        ("2", "True", "2"),
        ("3", "False", "2"),
    ]


def test_without_its_predictions_one_line_says_the_breakdown_is_not_available(tmp_path):
    run = make_run("large", metrics={"objects/test/recall": 1.0})
    text = _section(tmp_path, run)
    (line,) = [s for s in text.splitlines() if s.startswith("Where the largest model")]
    assert "not available" in line and "predictions" in line
