"""Object recall, precision and repetition on hand-made captions and scenes (the issue's
examples among them), with the Shapes world's own synonyms."""

from __future__ import annotations

import pytest

from ituning.data.shapes_vocab import attribute_words
from ituning.errors import DataError
from ituning.metrics.objects import caption_counts, object_phrases, object_scores

SHAPES = attribute_words("shape")
COLOURS = attribute_words("colour")


def counts(caption, objects):
    return caption_counts(caption, objects, SHAPES, COLOURS)


def test_phrases_read_synonyms_sizes_plurals_and_a_missing_colour():
    text = "Three shapes, a big violet rhombus, two little red discs and a plus."
    assert object_phrases(text, SHAPES, COLOURS) == [
        ("diamond", "purple"),
        ("circle", "red"),
        ("cross", None),
    ]


def test_one_heart_named_three_times_recalls_one_object_and_repeats_twice():
    scene = [("heart", "red"), ("cross", "green"), ("heart", "purple")]
    c = counts(
        "There are three shapes, a little red heart, a little red heart and a red heart.", scene
    )
    assert (c.objects, c.recalled, c.phrases, c.correct, c.repeated) == (3, 1, 3, 3, 2)
    assert c.recall == pytest.approx(1 / 3) and c.precision == 1.0
    assert c.repetition == pytest.approx(2 / 3)


def test_a_correct_description_scores_perfectly_in_any_order_and_wording():
    scene = [("heart", "red"), ("cross", "green"), ("heart", "purple")]
    c = counts("A violet heart beneath a green plus and a tiny red heart.", scene)
    assert (c.recall, c.precision, c.repetition) == (1.0, 1.0, 0.0)


def test_two_equal_objects_need_two_phrases_and_a_wrong_colour_is_a_hallucination():
    scene = [("circle", "orange"), ("circle", "orange"), ("diamond", "green")]
    c = counts("A large orange circle, a large orange circle and a large orange circle.", scene)
    assert (c.recalled, c.correct, c.repeated) == (2, 3, 1)
    wrong = counts("A green heart.", [("diamond", "green")])
    assert (wrong.recall, wrong.precision, wrong.repetition) == (0.0, 0.0, 0.0)
    # an absent pair named twice: once against precision, once more as a repetition
    twice = counts("A blue star and a blue star.", [("square", "red")])
    assert (twice.correct, twice.repeated) == (0, 1)


def test_a_shape_without_its_colour_is_not_a_correct_phrase():
    c = counts("A square.", [("square", "red")])
    assert (c.phrases, c.correct, c.recalled) == (1, 0, 0)
    assert counts("There is nothing here.", [("square", "red")]).precision is None


def test_scores_are_kept_per_object_count_and_overall():
    objects = {
        "a": [("square", "red")],
        "b": [("square", "red"), ("circle", "blue")],
        "c": [("square", "red"), ("circle", "blue"), ("heart", "green")],
    }
    preds = {"a": "A red box.", "b": "A red square and a red square.", "c": "A red square."}
    scores = object_scores(preds, objects, SHAPES, COLOURS)
    assert scores.overall.recall == pytest.approx(3 / 6)
    assert scores.by_count[2].repetition == 0.5 and scores.by_count[3].recall == pytest.approx(
        1 / 3
    )
    metrics = scores.metrics("objects/test")
    assert metrics["objects/test/recall"] == pytest.approx(0.5)
    assert metrics["objects/test/n1/precision"] == 1.0
    assert metrics["objects/test/n3/images"] == 1.0


def test_an_image_without_an_object_list_is_one_clear_error():
    with pytest.raises(DataError, match="no object list"):
        object_scores({"x": "A red box."}, {}, SHAPES, COLOURS)
