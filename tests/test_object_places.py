"""Recall by an object's place in the captions' reading order and by whether it shares its column,
on hand-made scenes (the middle object lost, twins, an unknown cell), what a caption says at each
object's cell, a property tying it to the overall recall, and the command line on a tiny Karpathy
file with two seeds' results."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ituning.data.shapes_vocab import COLOURS, COLUMNS, ROWS, SHAPES
from ituning.errors import DataError
from ituning.metrics.object_places import (
    AT_CELL,
    main,
    place_table,
    placed_recall,
    shapes_lexicons,
)
from ituning.metrics.objects import caption_counts, cell_phrases

LEXICONS = shapes_lexicons()


def obj(shape, colour, h, v):
    return {"shape": shape, "colour": colour, "h": h, "v": v}


# Reading order: column by column from the left, top to bottom within a column.
SCENE = [
    obj("circle", "blue", "right", "top"),  # place 3
    obj("cross", "green", "left", "bottom"),  # place 2, shares the left column
    obj("heart", "red", "left", "top"),  # place 1, shares the left column
]


def test_the_middle_object_sharing_its_column_is_the_one_lost():
    caption = "in the top left a red heart and in the top right a blue circle."
    rows = placed_recall(caption, SCENE, *LEXICONS)
    assert [(r["place"], r["shares_column"], r["recalled"]) for r in rows] == [
        (1, True, True),
        (2, True, False),
        (3, False, True),
    ]
    assert {r["objects"] for r in rows} == {3}


def test_a_phrase_naming_twins_once_goes_to_the_earlier_place():
    twins = [obj("heart", "red", "right", "middle"), obj("heart", "red", "left", "top")]
    rows = placed_recall("a red heart.", twins, *LEXICONS)
    assert [(r["place"], r["recalled"]) for r in rows] == [(1, True), (2, False)]
    both = placed_recall("a red heart and a red heart.", twins, *LEXICONS)
    assert all(r["recalled"] for r in both)


def test_an_object_without_a_known_cell_is_one_line_naming_the_fields():
    with pytest.raises(DataError, match="'h' in") as err:
        placed_recall("a red heart.", [{"shape": "heart", "colour": "red"}], *LEXICONS)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="no object list"):
        place_table({"a": "a red heart."}, {}, *LEXICONS)


def test_the_table_counts_objects_and_recall_per_place():
    table = place_table(
        {"a": "in the top left a red heart and a blue circle.", "b": "a green cross."},
        {"a": SCENE, "b": SCENE},
        *LEXICONS,
    )
    got = {(r.place, r.shares_column): (r.n, r.recall) for r in table.itertuples()}
    assert got == {(1, True): (2, 0.5), (2, True): (2, 0.5), (3, False): (2, 0.5)}


def test_position_words_give_the_cell_of_the_phrase_after_them():
    caption = (
        "there are three shapes: in the top left corner a red heart, on the left a green cross, "
        "at the bottom a blue circle and in the middle a yellow star, a purple square."
    )
    assert cell_phrases(caption, *LEXICONS) == [
        (("left", "top"), "heart", "red"),
        (("left", "middle"), "cross", "green"),
        (("centre", "bottom"), "circle", "blue"),
        (("centre", "middle"), "star", "yellow"),
        (None, "square", "purple"),
    ]


def test_what_the_caption_says_at_each_objects_cell():
    # the cross's cell with the heart's shape (its column partner); then with a shape no object
    # in its column has; then the circle's cell never named
    said = {
        "in the top left a red heart, in the bottom left a green heart and on the right a "
        "blue circle.": ["described", "partner_words", "cell_not_named"],
        "in the top left a red heart, in the bottom left a green star.": [
            "described",
            "other_words",
            "cell_not_named",
        ],
        "in the top left a red heart, in the bottom left a red cross and in the top right a "
        "blue circle.": ["described", "partner_words", "described"],
    }
    for caption, expected in said.items():
        assert [r["at_cell"] for r in placed_recall(caption, SCENE, *LEXICONS)] == expected
    # an object alone in its column has no partner: wrong words there are other words
    rows = placed_recall("in the top right a red circle.", SCENE, *LEXICONS)
    assert rows[2]["at_cell"] == "other_words"


def test_the_table_gives_the_share_of_each_outcome_at_the_cell():
    table = place_table(
        {
            "a": "in the top left a red heart, in the bottom left a green heart.",
            "b": "in the top left a red heart, in the bottom left a green cross.",
        },
        {"a": SCENE, "b": SCENE},
        *LEXICONS,
    )
    place2 = table[table["place"] == 2].iloc[0]
    assert (place2["recall"], place2["described"], place2["partner_words"]) == (0.5, 0.5, 0.5)
    assert table[list(AT_CELL)].sum(axis=1).tolist() == pytest.approx([1.0, 1.0, 1.0])


CELLS = [(h, v) for h in COLUMNS for v in ROWS]


@st.composite
def scene_and_caption(draw):
    cells = draw(st.lists(st.sampled_from(CELLS), min_size=1, max_size=3, unique=True))
    pairs = st.tuples(st.sampled_from(SHAPES), st.sampled_from(COLOURS))
    objects = [obj(*draw(pairs), h, v) for h, v in cells]
    named = draw(
        st.lists(
            st.one_of(st.sampled_from([(o["shape"], o["colour"]) for o in objects]), pairs),
            max_size=4,
        )
    )
    return objects, " and ".join(f"a {colour} {shape}" for shape, colour in named)


@settings(max_examples=200, deadline=None)
@given(scene_and_caption())
def test_the_places_recall_adds_up_to_the_overall_recall(case):
    objects, caption = case
    rows = placed_recall(caption, objects, *LEXICONS)
    pairs = [(o["shape"], o["colour"]) for o in objects]
    assert sum(r["recalled"] for r in rows) == caption_counts(caption, pairs, *LEXICONS).recalled
    assert sorted(r["place"] for r in rows) == list(range(1, len(objects) + 1))
    assert {r["at_cell"] for r in rows} <= set(AT_CELL)


def test_the_command_prints_mean_and_sd_over_result_files(tmp_path, capsys):
    captions = tmp_path / "dataset_shapes.json"
    images = [
        {
            "filename": f"test/{i:06d}.png",
            "split": "test",
            "imgid": i,
            "sentids": [i],
            "objects": SCENE,
            "sentences": [{"raw": "x", "tokens": ["x"], "imgid": i, "sentid": i}],
        }
        for i in range(2)
    ]
    captions.write_text(json.dumps({"dataset": "shapes", "images": images}))
    seeds = [
        ["in the top left a red heart, a green cross and a blue circle.", "a blue circle."],
        ["a red heart and a blue circle.", "a blue circle."],
    ]
    files = []
    for k, caps in enumerate(seeds):
        path = tmp_path / f"seed{k}.json"
        path.write_text(
            json.dumps([{"image_id": f"test/{i:06d}", "caption": c} for i, c in enumerate(caps)])
        )
        files.append(str(path))
    assert main([*files, "--captions", str(captions)]) == 0
    lines = capsys.readouterr().out.splitlines()
    place2 = next(line for line in lines if line.split()[:1] == ["2"])
    # place 2 (the green cross): seed 0 names it in one of two images, seed 1 in none
    assert place2.split()[2:5] == ["2", "0.25", "0.35"]
