"""Shapes-Flickr, the mini profile's second captioning dataset: deterministic, disjoint from the
Shapes splits, true to its scenes, another register, and read by the real Karpathy loader."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ituning.data.karpathy import read_karpathy
from ituning.data.shapes import SplitSizes, make_item, write_world
from ituning.data.shapes_captions import caption_words
from ituning.data.shapes_flickr import CAPTIONS_FILE, flickr_caption, flickr_item
from ituning.data.shapes_scene import WorldConfig, item_rng, sample_scene
from ituning.data.shapes_swaps import claim_holds
from ituning.data.shapes_vocab import ATTRIBUTE_WORDS, WORD_CLASSES, all_words
from ituning.metrics.objects import caption_counts

WORLD = WorldConfig()
SIZES = SplitSizes(
    train=6, val=2, test=2, nocaps_per_domain=1, vlp_images=1, lm_sentences=10,
    flickr_train=30, flickr_val=4, flickr_test=4,
)  # fmt: skip
_LEXICON = {
    attribute: {w: cls for w, (a, cls) in WORD_CLASSES.items() if a == attribute}
    for attribute in ("shape", "colour")
}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("flickr")
    write_world(out, 0, WORLD, SIZES, progress=False)
    return out


def test_the_real_loader_reads_it_with_its_own_ids_and_split_sizes(written: Path) -> None:
    ds = read_karpathy(written / CAPTIONS_FILE, written)
    splits = Counter(r.split for r in ds.records)
    assert splits == {"train": 30, "val": 4, "test": 4}
    assert all(r.image_id.startswith("shapes_flickr:flickr/") for r in ds.records)
    shapes = read_karpathy(written / "dataset_shapes.json", written)
    assert not {r.image_id for r in ds.records} & {r.image_id for r in shapes.records}
    assert all(len(r.captions) == 5 and len(set(r.captions)) == 5 for r in ds.records)


def test_same_seed_same_items_other_seed_and_split_differ() -> None:
    assert flickr_item(0, "test", 2, WORLD) == flickr_item(0, "test", 2, WORLD)
    assert flickr_item(1, "test", 2, WORLD) != flickr_item(0, "test", 2, WORLD)
    assert flickr_item(0, "val", 2, WORLD) != flickr_item(0, "test", 2, WORLD)


def test_scenes_are_disjoint_from_the_shapes_splits() -> None:
    shapes = {
        make_item(0, s, i, WORLD, "seen").scene for s in ("train", "test") for i in range(300)
    }
    flickr = {flickr_item(0, s, i, WORLD)[0] for s in ("train", "test") for i in range(300)}
    assert not shapes & flickr


def test_captions_are_true_in_domain_and_scenes_are_busier() -> None:
    counts = Counter()
    for i in range(400):
        scene, _ = flickr_item(0, "train", i, WORLD)
        counts[len(scene.objects)] += 1
        assert all(o.shape != WORLD.ood_shape for o in scene.objects)
        assert not {(o.shape, o.colour) for o in scene.objects} & set(WORLD.withheld_pairs)
        rng = np.random.default_rng(i)
        for _ in range(5):
            phrase = flickr_caption(scene, rng)
            assert claim_holds(phrase.claim, scene), phrase.text
            objects = [(o.shape, o.colour) for o in scene.objects]
            c = caption_counts(phrase.text, objects, _LEXICON["shape"], _LEXICON["colour"])
            assert (c.recalled, c.correct, c.repeated) == (len(objects), len(objects), 0)
    # drawn under WorldConfig.flickr_object_count_probs (0.1, 0.3, 0.6): mostly three objects
    assert counts[3] > 0.5 * 400 and counts[1] < 0.2 * 400
    shapes_counts = Counter(
        len(sample_scene(item_rng(0, "train", i), WORLD, "seen").objects) for i in range(400)
    )
    assert counts[3] > shapes_counts[3] + 50


def test_another_register_in_the_lms_vocabulary() -> None:
    vocab = set(all_words())
    shapes_words = {w for words in ATTRIBUTE_WORDS.values() for ws in words.values() for w in ws}
    texts = [c for i in range(100) for c in flickr_item(0, "train", i, WORLD)[1]]
    words = Counter(w for t in texts for w in caption_words(t))
    assert set(words) <= vocab
    own = [w for w in words if w in WORD_CLASSES and w not in shapes_words]
    assert {"crimson", "disk", "lozenge", "chunky"} <= set(own)
    assert words["backdrop"] + words["background"] > 100
    assert sum(words[w] for w in own) > 0.2 * sum(words[w] for w in words if w in WORD_CLASSES)


def test_written_files_record_the_objects(written: Path) -> None:
    data = json.loads((written / CAPTIONS_FILE).read_text())
    assert data["dataset"] == "shapes_flickr"
    for img in data["images"]:
        assert (written / img["filename"]).is_file()
        assert 1 <= len(img["objects"]) <= 3
