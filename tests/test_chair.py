"""CHAIR-i / CHAIR-s on hand-made captions, a hand-made synonym list in the published format and
a small COCO-format instance file, counted by hand."""

from __future__ import annotations

import json

import pytest

from ituning.errors import DataError
from ituning.metrics.chair import Chair, read_instances

SYNONYMS = [
    "person, man, woman, child, people, passenger",
    "dog, puppy",
    "elephant",
    "chair, seat",
    "toilet",
    "teddy bear, teddybear",
    "tie, necktie",
    "train",
    "dining table, table",
]


@pytest.fixture
def chair() -> Chair:
    return Chair(SYNONYMS)


def test_mentions_map_synonyms_plurals_and_two_word_names(chair):
    assert chair.mentions("Two women and a puppy next to teddy bears at a table.") == [
        "person",
        "dog",
        "teddy bear",
        "dining table",
    ]
    assert chair.mentions("Children and men.") == ["person", "person"]


def test_the_authors_rules_for_coco_wording(chair):
    # a qualifier before an animal or vehicle is not a person; a bow tie is a tie
    assert chair.mentions("A baby elephant near a passenger train.") == ["elephant", "train"]
    assert chair.mentions("A man in a bow tie.") == ["person", "tie"]
    # a seat beside a toilet is not a chair
    assert chair.mentions("A toilet seat is up.") == ["toilet"]
    assert chair.mentions("A seat by the window.") == ["chair"]


def test_chair_i_counts_every_mention_and_chair_s_every_caption(chair):
    objects = {"1": {"person", "dog"}, "2": {"elephant"}, "3": {"toilet"}}
    preds = {
        "1": "A man and a dog on a chair.",  # chair hallucinated: 1 of 3
        "2": "An elephant and an elephant next to a dog and a dog.",  # 2 of 4
        "3": "A white toilet.",  # none
    }
    scores = chair.score(preds, objects)
    assert (scores.mentions, scores.hallucinated_mentions) == (8, 3)
    assert scores.chair_i == pytest.approx(3 / 8)
    assert scores.chair_s == pytest.approx(2 / 3)


def test_image_objects_join_instances_and_what_the_references_name(chair, tmp_path):
    coco = {
        "images": [{"id": 7}, {"id": 8}, {"id": 9}],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
        "annotations": [
            {"image_id": 7, "category_id": 1},
            {"image_id": 7, "category_id": 18},
            {"image_id": 8, "category_id": 18},
        ],
    }
    path = tmp_path / "instances_val2014.json"
    path.write_text(json.dumps(coco))
    instances = read_instances(path, ["7", "8", "9"])
    assert instances == {"7": {"person", "dog"}, "8": {"dog"}, "9": set()}
    objects = chair.image_objects(instances, {"9": ["A man sits on a chair."]})
    assert objects["9"] == {"person", "chair"} and objects["8"] == {"dog"}
    # the chair the references name in image 9 is no hallucination there
    assert chair.score({"9": "A chair."}, objects).chair_s == 0.0


def test_missing_or_malformed_files_are_one_clear_line(tmp_path):
    with pytest.raises(DataError, match="instances_val2014.json there"):
        read_instances(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(DataError, match="not COCO instance annotations"):
        read_instances(bad)
    with pytest.raises(DataError, match="CHAIR synonym list there"):
        Chair.from_file(tmp_path / "synonyms.txt")
    with pytest.raises(DataError, match="names both"):
        Chair(["dog, puppy", "cat, puppy"])
    with pytest.raises(DataError, match="no COCO objects"):
        Chair(SYNONYMS).score({"5": "A dog."}, {})


def test_a_coco_split_is_scored_from_the_paper_profiles_layout(tmp_path):
    """The paper profile points every run at the data root's CHAIR inputs; an evaluation of a
    COCO-format split with them logs CHAIR-i/-s, and without them says where they belong."""
    from bench.faults.inputs import write_paper_root
    from bench.sweep.profiles import get_profile
    from bench.sweep.spec import parse_spec
    from ituning.data.records import CaptionDataset, CaptionRecord
    from ituning.evaluate import EvalOutput, hallucination

    root = write_paper_root(tmp_path / "data", vlp=False)
    profile = get_profile("paper", runs_dir=tmp_path / "runs", data_root=root, scale="tiny")
    data = profile.plan(parse_spec("name: t\naxes: {lm: [base]}\n"))[0].config.data
    assert data.instances == root / "coco" / "annotations" / "instances_val2014.json"
    assert data.chair_synonyms == root / "coco" / "annotations" / "synonyms.txt"

    records = [
        CaptionRecord(f"coco:{i}", f"{i}.jpg", "test", (f"A thing number {i}.",))
        for i in (103, 104)
    ]
    split = CaptionDataset("test", tmp_path, records)
    out = EvalOutput()
    preds = {"coco:103": "A thing in a picture.", "coco:104": "An object."}
    hallucination("test", split, preds, data.instances, data.chair_synonyms, out)
    # "picture" is a category of the list that neither image holds: 1 of 3 mentions, 1 of 2 captions
    assert out.metrics["chair/test/chair_i"] == pytest.approx(1 / 3)
    assert out.metrics["chair/test/chair_s"] == pytest.approx(1 / 2)

    data.instances.unlink()
    out = EvalOutput()
    hallucination("test", split, preds, data.instances, data.chair_synonyms, out)
    assert "instances_val2014.json: missing; put COCO's" in out.unavailable["chair/test"]
    assert not any(k.startswith("chair/") for k in out.metrics)
