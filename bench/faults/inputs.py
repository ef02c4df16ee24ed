"""The inputs the rows damage: a fake paper data root and the malformed specs, flags and dataset
files of R1.

Why a fake root: the paper profile's loaders must see a complete, valid COCO Karpathy file, NoCaps
and Visual Genome (with real image files) so that each bad case differs from a good one in exactly
one field, and the error line must name that field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ituning.files import atomic_write_json

# ---------------------------------------------------------------------- the paper data root


def write_paper_root(root: Path, *, vlp: bool = True) -> Path:
    """A minimal valid ``--data-root`` for the paper profile: COCO and Flickr30k Karpathy files,
    NoCaps, Visual Genome, each with a few real PNG files; the fault scenarios then damage one
    field."""
    from PIL import Image

    def png(path: Path, colour: tuple[int, int, int]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), colour).save(path)

    images = []
    for i, split in enumerate(["train", "train", "restval", "val", "test"]):
        folder = "train2014" if split in ("train", "restval") else "val2014"
        name = f"COCO_{folder}_{i:012d}.jpg"
        png(root / "coco" / "images" / folder / name, (10 * i, 20, 30))
        sentences = [{"raw": f"a picture number {i} of a thing", "tokens": [], "imgid": i}]
        images.append(
            {
                "filepath": folder,
                "filename": name,
                "imgid": i,
                "cocoid": 100 + i,
                "split": split,
                "sentids": [i],
                "sentences": sentences,
            }
        )
    coco = {"dataset": "coco", "images": images}
    atomic_write_json(root / "coco" / "dataset_coco.json", coco, indent=1)
    instances = {  # CHAIR's inputs: every image holds a "thing"
        "images": [{"id": im["cocoid"]} for im in images],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"image_id": im["cocoid"], "category_id": 1} for im in images],
    }
    atomic_write_json(root / "coco" / "annotations" / "instances_val2014.json", instances)
    (root / "coco" / "annotations" / "synonyms.txt").write_text("thing, object\npicture\n")
    flickr = []  # Karpathy's Flickr30k file: no filepath, no cocoid; ids are file names
    for i, split in enumerate(["train", "train", "val", "test"]):
        name = f"{1000092795 + i}.jpg"
        png(root / "flickr30k" / "flickr30k-images" / name, (20, 10 * i, 40))
        sentences = [{"raw": f"a person number {i} on a thing", "tokens": [], "imgid": i}]
        flickr.append(
            {"filename": name, "imgid": i, "split": split, "sentids": [i], "sentences": sentences}
        )
    flickr_file = root / "flickr30k" / "dataset_flickr30k.json"
    atomic_write_json(flickr_file, {"dataset": "flickr30k", "images": flickr}, indent=1)
    nocaps_images, annotations = [], []
    for i, domain in enumerate(["in-domain", "near-domain", "out-of-domain"]):
        png(root / "nocaps" / "images" / f"{i:04d}.jpg", (30, 10 * i, 30))
        nocaps_images.append({"id": i, "file_name": f"{i:04d}.jpg", "domain": domain})
        annotations.append({"image_id": i, "id": i, "caption": f"a {domain} thing"})
    nocaps = {"images": nocaps_images, "annotations": annotations}
    atomic_write_json(root / "nocaps" / "nocaps_val_4500_captions.json", nocaps, indent=1)
    if vlp:
        vg = root / "visual_genome"
        data, regions = [], []
        for i in range(1, 3):
            png(vg / "VG_100K" / f"{i}.jpg", (5, 5, 10 * i))
            data.append({"image_id": i, "url": f"https://x/VG_100K/{i}.jpg", "coco_id": None})
            region = {"region_id": i, "image_id": i, "phrase": "a thing", "x": 0, "y": 0}
            regions.append({"id": i, "regions": [{**region, "width": 4, "height": 4}]})
        atomic_write_json(vg / "image_data.json", data, indent=1)
        atomic_write_json(vg / "region_descriptions.json", regions, indent=1)
    return root


def write_paper_weights(root: Path, backbones: Path) -> Path:
    """A ``--weights`` folder for the paper profile made of the tiny mini backbones under
    ``backbones`` (symlinks): the paper scenarios then test their data, not a missing download."""
    from bench.sweep.paper_profile import PAPER_LMS, VISION_FOLDER

    (built,) = [p for p in backbones.iterdir() if p.is_dir()]  # one backbones digest
    root.mkdir(parents=True, exist_ok=True)
    for size, lm in PAPER_LMS.items():
        (root / lm.name).symlink_to(built / f"mini-{size}", target_is_directory=True)
    (root / VISION_FOLDER).symlink_to(built / "mini-clip", target_is_directory=True)
    return root


def edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    """Rewrite a JSON file after ``edit`` changed its parsed data in place."""
    data = json.loads(path.read_text())
    edit(data)
    atomic_write_json(path, data, indent=1)


# ---------------------------------------------------------------------- malformed inputs (R1)


#: A valid spec that the "unknown key" style cases extend.
OK_SPEC = "name: t\naxes: {lm: [base]}\n"
#: (case, spec text or bytes, what the error line must name).
BAD_SPECS = [
    ("bad YAML", "name: [t\n", ("line 2", "not valid YAML")),
    ("tab indentation", "name: t\naxes:\n\tlm: [base]\n", ("line 3", "not valid YAML")),
    ("duplicate key", "name: t\nname: u\naxes: {lm: [base]}\n", ("line 2", "duplicate key 'name'")),
    ("not a mapping", "- 1\n", ("expected a mapping",)),
    ("empty file", "", ("expected a mapping",)),
    ("not UTF-8", b"name: t\xff\naxes: {lm: [base]}\n", ("not UTF-8",)),
    ("unknown key", OK_SPEC + "axis: {}\n", ("axis: unknown key",)),
    ("unknown axis", "name: t\naxes: {depth: [1]}\n", ("axes.depth: unknown key",)),
    ("unknown base key", "name: t\nbase: {size: 1}\naxes: {lm: [base]}\n", ("base.size",)),
    ("missing name", "axes: {lm: [base]}\n", ("name: expected a name",)),
    ("seed type", "name: t\naxes: {seed: [zero]}\n", ("axes.seed[0]", "integer")),
    ("vlp type", "name: t\naxes: {vlp: [maybe]}\n", ("axes.vlp[0]", "true or false")),
    ("lambda type", "name: t\naxes: {lambda: [big]}\n", ("axes.lambda[0]", "positive number")),
    ("lambda < 1", "name: t\naxes: {lambda: [0.5]}\n", ("λ=0.5", "lambda >= 1")),
    ("lambda < 0", "name: t\naxes: {lambda: [-1]}\n", ("axes.lambda[0]", "positive number")),
    ("lambda NaN", "name: t\naxes: {lambda: [.nan]}\n", ("axes.lambda[0]", "positive number")),
    ("bottleneck 0", "name: t\naxes: {bottleneck: [0]}\n", ("axes.bottleneck[0]",)),
    ("bottleneck 64", "name: t\naxes: {bottleneck: [64]}\n", ("axes.bottleneck[0]", "width: 64")),
    ("bottleneck width 0", "name: t\naxes: {bottleneck: [{width: 0}]}\n", ("bottleneck[0].width",)),
    ("drop 1.0", "name: t\naxes: {drop: [1.0]}\n", ("axes.drop[0]", "[0, 1)")),
    ("drop -2 layers", "name: t\naxes: {drop: [{layers: -2}]}\n", ("axes.drop[0].layers",)),
    (
        "drop every layer",
        "name: t\naxes: {lm: [large]}\nbase: {drop: {layers: 3}}\n",
        ("point [large", "drop: {'layers': 3}", "every module"),
    ),
    ("empty axis", "name: t\naxes: {seed: []}\n", ("axes.seed", "empty axis")),
    ("no axes", "name: t\naxes: {}\n", ("axes: expected a mapping",)),
    ("exclude all", OK_SPEC + "exclude: [{lm: base}]\n", ("exclude", "remove every point")),
    ("override unknown", OK_SPEC + "overrides: {epoch: 3}\n", ("overrides.epoch",)),
    ("override type", OK_SPEC + "overrides: {epochs: many}\n", ("overrides.epochs", "integer")),
    ("override range", OK_SPEC + "overrides: {eval.beam: 0}\n", ("overrides.eval.beam",)),
    ("override axis", OK_SPEC + "overrides: {itune.scale: 2}\n", ("overrides.itune.scale",)),
]
#: (case, extra sweep flags, what the error line must name).
BAD_FLAGS = [
    ("--workers x", ("--workers", "x"), ("--workers", "invalid int")),
    ("--workers -1", ("--workers", "-1"), ("--workers -1", "expected 0 to")),
    ("--profile huge", ("--profile", "huge"), ("--profile", "huge")),
    ("--scale big", ("--scale", "big"), ("--scale", "big")),
    ("unknown flag", ("--bogus",), ("unrecognized arguments: --bogus",)),
    ("--heartbeat abc", ("--heartbeat", "abc"), ("--heartbeat", "abc")),
    ("paper without data root", ("--profile", "paper"), ("--data-root",)),
    ("file tracking URI", ("--tracking-uri", "file:./mlruns"), ("file:./mlruns", "file store")),
    ("bad storage URL", ("--storage", "bogus://x/y"), ("bogus://x/y",)),
]


def bad_data_files() -> list[tuple[str, Callable[[Path], None], tuple[str, ...], bool]]:
    """(name, damage the paper root, what the error must name, needs a VLP spec)."""

    def coco(edit):
        return lambda root: edit_json(root / "coco" / "dataset_coco.json", edit)

    def nocaps(edit):
        return lambda root: edit_json(root / "nocaps" / "nocaps_val_4500_captions.json", edit)

    def regions(edit):
        return lambda root: edit_json(root / "visual_genome" / "region_descriptions.json", edit)

    def malformed(root: Path) -> None:
        (root / "coco" / "dataset_coco.json").write_text('{"dataset": "coco", "images": [')

    def no_image(root: Path) -> None:
        (root / "coco" / "images" / "val2014" / f"COCO_val2014_{3:012d}.jpg").unlink()

    return [
        ("COCO JSON malformed", malformed, ("dataset_coco.json", "malformed JSON"), False),
        ("COCO images missing", coco(lambda d: d.pop("images")), ("dataset_coco.json", "images: missing"), False),
        ("COCO sentences missing", coco(lambda d: d["images"][1].pop("sentences")), ("dataset_coco.json", "images[1].sentences: missing"), False),
        ("COCO raw missing", coco(lambda d: d["images"][2]["sentences"][0].pop("raw")), ("images[2].sentences[0].raw: missing",), False),
        ("COCO split type", coco(lambda d: d["images"][0].update(split=3)), ("images[0].split", "expected str"), False),
        ("COCO unknown split", coco(lambda d: d["images"][0].update(split="dev")), ("images[0].split", "'dev'"), False),
        ("COCO filename missing", coco(lambda d: d["images"][3].pop("filename")), ("images[3].filename: missing",), False),
        ("COCO cocoid type", coco(lambda d: d["images"][0].update(cocoid="x")), ("images[0].cocoid", "expected int"), False),
        ("COCO image file absent", no_image, ("dataset_coco.json: images[3].filename", "image not found"), False),
        ("NoCaps domain missing", nocaps(lambda d: d["images"][0].pop("domain")), ("nocaps_val_4500_captions.json", "images[0].domain: missing"), False),
        ("NoCaps unknown domain", nocaps(lambda d: d["images"][1].update(domain="x")), ("images[1].domain", "unknown domain"), False),
        ("NoCaps caption missing", nocaps(lambda d: d["annotations"][0].pop("caption")), ("annotations[0].caption: missing",), False),
        ("VG phrase missing", regions(lambda d: d[0]["regions"][0].pop("phrase")), ("region_descriptions.json", "[0].regions[0].phrase: missing"), True),
    ]  # fmt: skip
