"""Which of a scene's objects the captions miss: recall by the object's place in the captions' order.

``python -m ituning.metrics.object_places PREDICTIONS.json ... --captions dataset_shapes.json``

Overall recall cannot tell a model that loses objects at random from one that always names the
first and last of three objects and loses the middle one; the causes differ (the vision features
versus finding the object the words point at). Shapes captions name objects in reading order
(column by column from the left, top to bottom within a column, ``WorldConfig.mention_order``),
so an object's place is its rank in that order; and each object is marked by whether another
object shares its column, the case in which only the row words ("top", "bottom") say which of two
objects comes next. Recall is counted as ``ituning.metrics.objects`` counts it (a phrase names an
object with the right shape and colour; each phrase used once), a phrase naming a pair the scene
holds twice going to the pair's earlier place, so the places' recalled objects add up to the
overall count.

Where an object is missed, what the caption says at its cell tells the causes apart: a caption
that names the cell but gives it the shape or colour of the object sharing its column has found
the column and not the row; one that never names the cell has lost the object altogether.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ituning.data.shapes_vocab import COLUMNS, ROWS, attribute_words
from ituning.errors import ArgumentParser, DataError, cli_main
from ituning.metrics.objects import CellPhrase, cell_phrases

#: Columns of :func:`place_table`, one row per (objects in the scene, place, shares its column).
KEYS = ["objects", "place", "shares_column"]
#: What a caption says at an object's grid cell: the object itself (right shape and colour); the
#: shape or colour of an object sharing its column instead; other wrong words; nothing (no phrase
#: there). :func:`place_table` gives each as a share of the objects.
AT_CELL = ("described", "partner_words", "other_words", "cell_not_named")


def reading_order(objects: Sequence[Mapping]) -> list[Mapping]:
    """A scene's objects (as the dataset lists them: ``h``/``v`` cell words) in reading order."""
    try:
        return sorted(objects, key=lambda o: (COLUMNS.index(o["h"]), ROWS.index(o["v"])))
    except (KeyError, ValueError) as exc:
        raise DataError(
            f"an object has no grid cell the Shapes world knows ({exc}): give each object 'h' in "
            f"{COLUMNS} and 'v' in {ROWS}"
        ) from None


def placed_recall(
    caption: str, objects: Sequence[Mapping], shapes: Mapping[str, str], colours: Mapping[str, str]
) -> list[dict]:
    """One row per object of the scene in reading order: its place (1-based), whether another
    object shares its column, whether the caption names it, and what it says at its cell
    (:data:`AT_CELL`)."""
    phrases = cell_phrases(caption, shapes, colours)
    named = Counter((shape, colour) for _, shape, colour in phrases if colour is not None)
    ordered = reading_order(objects)
    rows = []
    for place, obj in enumerate(ordered, 1):
        pair = (obj["shape"], obj["colour"])
        recalled = named[pair] > 0
        named[pair] -= recalled
        partners = [o for o in ordered if o is not obj and o["h"] == obj["h"]]
        rows.append(
            {
                "objects": len(ordered),
                "place": place,
                "shares_column": bool(partners),
                "recalled": recalled,
                "at_cell": at_cell(obj, partners, phrases),
            }
        )
    return rows


def at_cell(obj: Mapping, partners: Sequence[Mapping], phrases: Sequence[CellPhrase]) -> str:
    """What the caption's phrases (:func:`~ituning.metrics.objects.cell_phrases`) say at ``obj``'s
    cell, as one of :data:`AT_CELL`; ``partners`` are the objects sharing its column."""
    said = [(shape, colour) for cell, shape, colour in phrases if cell == (obj["h"], obj["v"])]
    if not said:
        return "cell_not_named"
    if (obj["shape"], obj["colour"]) in said:
        return "described"
    shape, colour = said[0]
    for other in partners:
        if (shape != obj["shape"] and shape == other["shape"]) or (
            colour != obj["colour"] and colour == other["colour"]
        ):
            return "partner_words"
    return "other_words"


def place_table(
    predictions: Mapping[str, str],
    objects: Mapping[str, Sequence[Mapping]],
    shapes: Mapping[str, str],
    colours: Mapping[str, str],
) -> pd.DataFrame:
    """Objects, recall and the shares of :data:`AT_CELL` per (objects in the scene, place, shares
    its column) over the captioned images (``image id -> caption``; ``objects``: image id -> its
    objects)."""
    missing = [k for k in predictions if k not in objects]
    if missing:
        raise DataError(
            f"{len(missing)} captioned images have no object list (e.g. {sorted(missing)[:3]}): "
            "give the objects of every predicted image"
        )
    rows = [
        row
        for image_id, caption in predictions.items()
        for row in placed_recall(caption, objects[image_id], shapes, colours)
    ]
    frame = pd.DataFrame(rows, columns=[*KEYS, "recalled", "at_cell"])
    counts = frame.groupby(KEYS)["recalled"].agg(n="size", recall="mean")
    shares = pd.crosstab([frame[k] for k in KEYS], frame["at_cell"], normalize="index")
    return (
        counts.join(shares.reindex(columns=list(AT_CELL), fill_value=0.0))
        .reset_index()
        .astype({"n": int, "recall": float, **dict.fromkeys(AT_CELL, float)})
    )


def shapes_lexicons() -> tuple[dict[str, str], dict[str, str]]:
    """The Shapes world's shape and colour words (synonyms included) -> their class."""
    return attribute_words("shape"), attribute_words("colour")


def split_objects(captions: Path, split: str) -> dict[str, list[Mapping]]:
    """Natural image id (as results files key it) -> objects, for the images of ``split``."""
    from ituning.data.karpathy import read_karpathy
    from ituning.data.records import natural_id

    ds = read_karpathy(captions, captions.parent, splits=[split], check_images=False)
    return {natural_id(r.image_id): r.meta["objects"] for r in ds if "objects" in r.meta}


@cli_main
def main(argv: list[str] | None = None) -> int:
    from ituning.metrics.results_file import read_coco_results

    parser = ArgumentParser(
        prog="python -m ituning.metrics.object_places", description=__doc__.splitlines()[0]
    )
    parser.add_argument("predictions", nargs="+", type=Path, help="results files (one per seed)")
    parser.add_argument("--captions", type=Path, required=True, help="Shapes Karpathy-format JSON")
    parser.add_argument("--split", default="test")
    parser.add_argument("--objects", type=int, default=3, help="scenes of this many objects")
    args = parser.parse_args(argv)
    objects = split_objects(args.captions, args.split)
    shapes, colours = shapes_lexicons()
    tables = [
        place_table(read_coco_results(p), objects, shapes, colours).assign(file=i)
        for i, p in enumerate(args.predictions)
    ]
    both = pd.concat(tables)
    both = both[both["objects"] == args.objects]
    summary = both.groupby(KEYS).agg(
        n=("n", "first"),
        recall=("recall", "mean"),
        sd=("recall", "std"),
        **{k: (k, "mean") for k in AT_CELL},
    )
    with pd.option_context("display.float_format", "{:.2f}".format):
        print(summary.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
