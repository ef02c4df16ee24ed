"""Where the largest model loses objects of three-object scenes: recall by the object's place in
the captions' reading order and by whether another object shares its column, and what the captions
say at the object's cell (``ituning.metrics.object_places``), mean ± sd over its seeds.

Computed from each run's test predictions and its dataset's object lists, as Table 3 is, so the
report shows the cause of a low three-object recall, not only its size, for runs evaluated before
this breakdown existed too.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.report.artifacts import fetch_artifact
from bench.report.csv_tables import write_csv
from bench.report.markdown import clean, table
from bench.report.results import Stat
from bench.report.settings import ReportInputs
from ituning.errors import ITuningError
from ituning.metrics.object_places import AT_CELL, place_table, shapes_lexicons, split_objects
from ituning.metrics.results_file import read_coco_results

CSV_FILE = "object_places.csv"
#: The outcomes at an object's cell the table shows (``described`` is nearly the recall).
SHOWN_AT_CELL = ("partner_words", "other_words", "cell_not_named")
#: Scenes whose objects are broken down (the issue's targets are on three-object scenes).
SCENE_OBJECTS = 3


def places_lines(inputs: ReportInputs) -> list[str]:
    """The breakdown for the largest model (``RunSet.largest``) at the mini profile, where scenes
    list their objects' grid cells; nothing at paper (COCO has no grid)."""
    group = inputs.runs.largest()
    if group is None or not inputs.mini:
        return []
    objects: dict[str, dict] = {}  # captions file -> its test objects: the seeds share one
    try:
        frame = pd.concat([_places(inputs, run, objects) for run in group.runs])
    except ITuningError as exc:
        return [f"Where the largest model loses objects: not available ({clean(str(exc))})."]
    frame = frame[frame["objects"] == SCENE_OBJECTS]
    if frame.empty:
        return []
    rows, records = [], []
    for (place, shares), part in frame.groupby(["place", "shares_column"]):
        stat = Stat.of(part["recall"])
        n = int(part["n"].iloc[0])
        at_cell = {k: float(part[k].mean()) for k in AT_CELL}
        rows.append(
            [str(place), "yes" if shares else "no", str(n), stat.fmt(2)]
            + [f"{at_cell[k]:.2f}" for k in SHOWN_AT_CELL]
        )
        records.append(
            {
                "place": place,
                "shares_column": bool(shares),
                "objects": n,
                "recall mean": stat.mean,
                "recall std": stat.std,
                "seeds": stat.n,
                **{f"{k} mean": v for k, v in at_cell.items()},
            }
        )
    worst = min(records, key=lambda r: r["recall mean"])
    seeds = " ".join(str(s) for s in group.seeds)
    return [
        f"Where the largest model, {group.first.label()} (seeds {seeds}), loses objects of "
        f"three-object test scenes: each object by its place in the captions' order (column by "
        f"column from the left, top to bottom within a column) and by whether another object "
        f"shares its column, where only the row words tell the two apart; and, as shares of the "
        f"objects (mean over the seeds), what the captions say at the object's grid cell instead "
        f"of the object: the shape or colour of the object sharing its column, other wrong "
        f"words, or nothing (the cell is not named). Lowest: place {worst['place']}"
        f"{' sharing its column' if worst['shares_column'] else ''}, recall "
        f"{worst['recall mean']:.2f}; at its cell the partner's words "
        f"{worst['partner_words mean']:.2f}, other words {worst['other_words mean']:.2f}, not "
        f"named {worst['cell_not_named mean']:.2f}.",
        "",
        *table(
            [
                "place",
                "shares its column",
                "objects",
                "recall",
                "partner's words at its cell",
                "other words at its cell",
                "cell not named",
            ],
            rows,
        ),
        "",
        write_csv(inputs, CSV_FILE, pd.DataFrame(records)),
    ]


def _places(inputs: ReportInputs, run, objects: dict[str, dict]) -> pd.DataFrame:
    preds = fetch_artifact(
        inputs.settings.uri,
        run,
        "predictions_test.json",
        "predictions/predictions_test.json",
        inputs.scratch / f"places-{run.config_hash}",
    )
    captions = run.params["data.captions"]
    if captions not in objects:
        objects[captions] = split_objects(Path(captions), "test")
    return place_table(read_coco_results(preds), objects[captions], *shapes_lexicons())
