"""Table 3 at the paper profile: each of the paper's printed captions beside ours of the same
image, found in the test split by the reference captions the paper prints, not by row order."""

from __future__ import annotations

import json
from dataclasses import replace

from PIL import Image
from test_report import PAPER, make_run, runset

from bench.report.examples import table3
from bench.report.settings import ReportInputs, ReportSettings


def test_paper_rows_are_paired_by_image_and_a_missing_image_says_so(tmp_path):
    root = tmp_path / "data"
    (root / "val2014").mkdir(parents=True)
    first, third = PAPER.table3[0].golden, PAPER.table3[2].golden
    captions = {  # the paper's third image first, its first image last, in other spelling
        10: [third[1].upper(), "Another view.", third[0]],
        11: ["A dog on a couch."],
        12: ["A cat.", f"  {first[0].rstrip('.')}  ", first[1]],
    }
    images = []
    for cocoid, refs in captions.items():
        Image.new("RGB", (64, 48), (cocoid, 90, 120)).save(root / "val2014" / f"{cocoid}.jpg")
        images.append(
            {
                "filepath": "val2014",
                "filename": f"{cocoid}.jpg",
                "cocoid": cocoid,
                "split": "test",
                "sentences": [{"raw": r} for r in refs],
            }
        )
    (root / "dataset_coco.json").write_text(json.dumps({"dataset": "coco", "images": images}))
    preds = [{"image_id": i, "caption": f"ours of {i}"} for i in captions]
    (root / "predictions_test.json").write_text(json.dumps(preds))
    run = make_run("large", n_layers=8, profile="paper", metrics={"test/cider": 1.0})
    data = {"data.captions": str(root / "dataset_coco.json"), "data.image_root": str(root)}
    run = replace(run, params={**run.params, **data}, tags={"run_folder": str(root)})
    out = tmp_path / "report"
    out.mkdir()
    inputs = ReportInputs(
        ReportSettings(out_dir=out, profile="paper"),
        runset(run, profile="paper"),
        PAPER,
        out,
        tmp_path,
    )
    text = "\n".join(table3(inputs))
    assert "found in this run's test split by the reference captions" in text
    assert "(2 of 4 found" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert "ours of 12" in rows[0] and PAPER.table3[0].ituning_large in rows[0]
    assert "ours of 10" in rows[2] and PAPER.table3[2].ituning_large in rows[2]
    assert "not among this run's test images" in rows[1] and "ours of" not in rows[1]
