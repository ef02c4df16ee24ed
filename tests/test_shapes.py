"""The Shapes world: determinism, domain split, captions, swaps, on-disk formats."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ituning.data.karpathy import read_karpathy
from ituning.data.nocaps import read_nocaps
from ituning.data.shapes import SplitSizes, lm_sentences, main, make_item, write_world
from ituning.data.shapes_captions import canonical_phrase, caption_words, describe
from ituning.data.shapes_render import render
from ituning.data.shapes_scene import WorldConfig, item_rng, sample_scene
from ituning.data.shapes_swaps import claim_holds, swap
from ituning.data.shapes_vocab import COLOUR_RGB, WORD_CLASSES, all_words, shape_of
from ituning.data.visual_genome import read_visual_genome

WORLD = WorldConfig()
SMALL = SplitSizes(
    train=24, val=6, test=6, nocaps_per_domain=5, vlp_images=8, lm_sentences=60,
    flickr_train=6, flickr_val=2, flickr_test=2,
)  # fmt: skip


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    write_world(out, 0, WORLD, SMALL, progress=False)
    return out


def _shape_words(text: str) -> set[str]:
    return {s for s in map(shape_of, caption_words(text)) if s}


def test_same_seed_same_bytes_other_seed_differs(written: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert main(["--out", str(again), "--seed", "0", "--quiet", *_size_args(SMALL)]) == 0
    assert _tree_digest(again) == _tree_digest(written)
    other = tmp_path / "other"
    write_world(other, 1, WORLD, SMALL, progress=False)
    assert _tree_digest(other) != _tree_digest(written)


def _size_args(sizes: SplitSizes) -> list[str]:
    out = []
    for k, v in sizes.model_dump().items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def test_items_do_not_depend_on_other_split_sizes() -> None:
    a = make_item(0, "test", 3, WORLD, "seen")
    b = make_item(0, "test", 3, WORLD, "seen")
    assert a == b
    assert make_item(0, "val", 3, WORLD, "seen") != a


def test_karpathy_file_layout_and_five_captions(written: Path) -> None:
    data = json.loads((written / "dataset_shapes.json").read_text())
    assert data["dataset"] == "shapes"
    images = data["images"]
    assert [i["split"] for i in images].count("train") == SMALL.train
    assert [i["imgid"] for i in images] == list(range(len(images)))
    sentids = [s["sentid"] for i in images for s in i["sentences"]]
    assert sentids == list(range(len(sentids)))
    for img in images:
        assert (written / img["filename"]).is_file()
        assert len(img["sentences"]) == 5 and img["sentids"] == [
            s["sentid"] for s in img["sentences"]
        ]
        assert len({s["raw"] for s in img["sentences"]}) == 5
        for s in img["sentences"]:
            assert s["tokens"] == caption_words(s["raw"]) and len(s["tokens"]) <= 29
        mentioned = set().union(*(_shape_words(s["raw"]) for s in img["sentences"]))
        assert mentioned == {o["shape"] for o in img["objects"]}


def test_real_loaders_read_the_world(written: Path) -> None:
    ds = read_karpathy(written / "dataset_shapes.json", written)
    assert len(ds.records) == SMALL.train + SMALL.val + SMALL.test
    nc = read_nocaps(written / "nocaps_shapes_val.json", written)
    assert {r.domain for r in nc.records} == {"in-domain", "near-domain", "out-of-domain"}
    vg = written / "visual_genome"
    vlp = read_visual_genome(vg / "region_descriptions.json", vg / "image_data.json", vg)
    assert len(vlp.records) >= SMALL.vlp_images


def test_domain_split_in_written_files(written: Path) -> None:
    ood, held = WORLD.ood_shape, set(WORLD.withheld_pairs)
    data = json.loads((written / "dataset_shapes.json").read_text())
    for img in data["images"]:
        assert all(o["shape"] != ood for o in img["objects"])
        assert all((o["shape"], o["colour"]) not in held for o in img["objects"])
        assert all(ood not in _shape_words(s["raw"]) for s in img["sentences"])
    regions = json.loads((written / "visual_genome" / "region_descriptions.json").read_text())
    assert all(ood not in _shape_words(r["phrase"]) for im in regions for r in im["regions"])
    nocaps = json.loads((written / "nocaps_shapes_val.json").read_text())
    for img in nocaps["images"]:
        shapes = {o["shape"] for o in img["objects"]}
        pairs = {(o["shape"], o["colour"]) for o in img["objects"]}
        assert (ood in shapes) == (img["domain"] == "out-of-domain")
        if img["domain"] == "near-domain":
            assert pairs & held
        if img["domain"] == "in-domain":
            assert not pairs & held
    caps = [a for a in nocaps["annotations"]]
    assert len(caps) == 5 * len(nocaps["images"])
    corpus = (written / "lm_corpus.txt").read_text().splitlines()
    assert len(corpus) == SMALL.lm_sentences


def test_domain_split_over_many_scenes() -> None:
    """No rendering: 600 caption-training scenes never hold the OOD shape or a withheld pair."""
    held = set(WORLD.withheld_pairs)
    seen_pairs = set()
    for i in range(600):
        scene = sample_scene(item_rng(0, "train", i), WORLD, "seen")
        for o in scene.objects:
            assert o.shape != WORLD.ood_shape and (o.shape, o.colour) not in held
            seen_pairs.add((o.shape, o.colour))
    assert seen_pairs == set(WORLD.seen_pairs)  # every allowed pair does occur
    for i in range(100):
        near = sample_scene(item_rng(0, "nocaps-near", i), WORLD, "near")
        assert any((o.shape, o.colour) in held for o in near.objects)
        assert all(o.shape != WORLD.ood_shape for o in near.objects)
    assert any(WORLD.ood_shape in s for s in lm_sentences(0, WORLD, 200))


def test_captions_are_true_and_swaps_false() -> None:
    for i in range(200):
        rng = item_rng(0, "gate", i)
        scene = sample_scene(rng, WORLD, "any")
        for style in ("caption", "list", "object", "relation"):
            phrase = describe(scene, rng, style)
            assert claim_holds(phrase.claim, scene), phrase.text
            for kind in ("colour", "shape", "size", "position"):
                s = swap(phrase, scene, kind, rng, WORLD)
                if s is None:
                    continue
                assert not claim_holds(s.claim, scene), (phrase.text, s.text)
                pairs = zip(phrase.words, s.words, strict=True)
                changed = [a for a, b in pairs if a != b and a not in ("a", "an")]
                assert len(changed) == 1


def test_swap_example() -> None:
    rng = np.random.default_rng(0)
    scene = next(
        s
        for s in (sample_scene(item_rng(0, "gate", i), WORLD, "any") for i in range(50))
        if len(s.objects) == 1
    )
    phrase = describe(scene, rng, "list")
    s = swap(phrase, scene, "shape", rng, WORLD)
    assert s is not None and s.text != phrase.text
    assert _shape_words(s.text) != _shape_words(phrase.text)


def test_vocabulary_covers_texts_and_maps_synonyms() -> None:
    vocab = set(all_words())
    for text in lm_sentences(0, WORLD, 300):
        assert set(caption_words(text)) <= vocab, text
    assert WORD_CLASSES["disc"] == ("shape", "circle")
    assert WORD_CLASSES["violet"] == ("colour", "purple")
    assert WORD_CLASSES["big"] == ("size", "large")
    assert shape_of("Rhombus") == "diamond" and shape_of("red") is None


def test_render_draws_objects_in_their_colour() -> None:
    scene = sample_scene(item_rng(0, "train", 0), WORLD, "seen")
    img = np.asarray(render(scene, WORLD))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    for o in scene.objects:
        px = img[int(round(o.y)), int(round(o.x))].astype(int)
        assert np.abs(px - np.array(COLOUR_RGB[o.colour])).max() <= WORLD.colour_jitter + 2


def test_bad_config_is_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["--out", str(tmp_path), "--train", "0"]) == 2
    assert "error: shapes: train" in capsys.readouterr().err
    with pytest.raises(ValueError, match="ood_shape"):
        WorldConfig(ood_shape="hexagon")


def test_canonical_phrase_is_one_text_per_combination() -> None:
    scene = sample_scene(item_rng(0, "gate", 3), WORLD, "any")
    obj = scene.objects[0]
    p = canonical_phrase(obj)
    assert p.words[1:] == [obj.size, obj.colour, obj.shape]
    with_pos = canonical_phrase(obj, with_position=True)
    assert claim_holds(with_pos.claim, scene)
    assert with_pos.text.startswith(p.text[:-1])


def test_reading_order_names_objects_column_by_column_on_the_same_scenes() -> None:
    """Under ``reading`` every caption names the scene's objects left column first, top to bottom
    within a column; the scenes (and so the images) are those of ``random``."""
    reading = WORLD.model_copy(update={"mention_order": "reading"})
    checked = 0
    for i in range(60):
        a = make_item(0, "train", i, WORLD, "seen")
        b = make_item(0, "train", i, reading, "seen")
        assert a.scene == b.scene
        objects = sorted(b.scene.objects, key=lambda o: (o.col, o.row))
        for text in b.captions:
            named = [shape_of(w) for w in caption_words(text) if shape_of(w)]
            assert named == [o.shape for o in objects][: len(named)]
            checked += len(b.scene.objects) > 1
    assert checked > 50
    rng = item_rng(0, "train", 0)
    scene = sample_scene(rng, WORLD, "seen")
    with pytest.raises(ValueError, match="unknown mention order"):
        describe(scene, rng, "list", "spiral")  # type: ignore[arg-type]


def test_named_positions_put_every_object_after_its_cell_in_reading_order() -> None:
    world = WORLD.model_copy(update={"mention_order": "reading", "name_positions": True})
    cells = {"left": 0, "centre": 1, "right": 2, "top": 0, "middle": 1, "bottom": 2}
    checked = 0
    for i in range(60):
        item = make_item(0, "train", i, world, "seen")
        objects = sorted(item.scene.objects, key=lambda o: (o.col, o.row))
        if len(objects) < 2:
            continue
        for text in item.captions:
            words = caption_words(text)
            at = [k for k, w in enumerate(words) if shape_of(w)]
            assert [shape_of(words[k]) for k in at] == [o.shape for o in objects]
            start = 0
            for k, obj in zip(at, objects, strict=True):
                phrase = words[start:k]
                said = [w for w in phrase if w in cells]
                assert said and all(cells[w] in (obj.col, obj.row) for w in said), (text, obj)
                start = k + 1
            checked += 1
    assert checked > 100
