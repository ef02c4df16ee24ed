"""The synthetic *Shapes* world written to disk: domain splits, dataset files and the CLI.

The ``mini`` profile needs a captioning task that 2 CPU cores learn in minutes yet keeps what the
paper measures meaningful: five varied reference captions per image (CIDEr consensus), Karpathy
splits, a NoCaps-style in/near/out-of-domain split, a Visual-Genome-style VLP set and a text-only
corpus for the LM. Everything is written in the real datasets' on-disk formats so the real
loaders read it unchanged.

The world is built in layers, one module each: ``shapes_vocab`` (words), ``shapes_scene`` (rules,
objects, scene sampling), ``shapes_render`` (images), ``shapes_captions`` (phrases, captions),
``shapes_swaps`` (truth, one-word swaps) and this module (items, splits, files, CLI). Which scene
kind each split draws is decided here, which enforces the domain rules of ``WorldConfig``.

Every item is drawn from its own generator (``shapes_scene.item_rng``), so output is
byte-identical for the same seed and sizes, and an item never depends on another split's size.

Output layout of ``python -m ituning.data.shapes --out DIR`` (all image paths relative to ``DIR``,
except VG's ``url``, which is relative to ``DIR/visual_genome`` as in the real VG release)::

    DIR/dataset_shapes.json          Karpathy format, filename "train/000123.png"
    DIR/{train,val,test}/NNNNNN.png
    DIR/dataset_shapes_flickr.json   Shapes-Flickr (``shapes_flickr``), filename "flickr/train/..."
    DIR/flickr/{train,val,test}/NNNNNN.png
    DIR/nocaps_shapes_val.json       NoCaps format, file_name "nocaps/NNNNNN.png"
    DIR/nocaps/NNNNNN.png
    DIR/visual_genome/region_descriptions.json, image_data.json, VG_100K/<id>.png
    DIR/lm_corpus.txt                one sentence a line
    DIR/world.json                   the configuration, domain facts and file counts
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from ituning.data.shapes_captions import _choose, caption_words, captions_for, describe
from ituning.data.shapes_flickr import CAPTIONS_FILE as FLICKR_CAPTIONS
from ituning.data.shapes_flickr import DATASET as FLICKR
from ituning.data.shapes_flickr import IMAGE_FOLDER as FLICKR_IMAGES
from ituning.data.shapes_flickr import flickr_caption, flickr_item
from ituning.data.shapes_render import render
from ituning.data.shapes_scene import Scene, SceneKind, WorldConfig, item_rng, sample_scene
from ituning.errors import ConfigError, cli_main, validation_line
from ituning.files import atomic_write_json


class SplitSizes(BaseModel):
    """How many items each written split holds (Karpathy-like proportions by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: int = Field(4000, ge=1)
    val: int = Field(500, ge=1)
    test: int = Field(500, ge=1)
    nocaps_per_domain: int = Field(200, ge=1)
    vlp_images: int = Field(2000, ge=1)
    lm_sentences: int = Field(20000, ge=1)
    #: Shapes-Flickr: a quarter of ``train``, val and test in Flickr30k's proportions (29.8k/1k/1k).
    flickr_train: int = Field(1000, ge=1)
    flickr_val: int = Field(34, ge=1)
    flickr_test: int = Field(34, ge=1)


@dataclass(frozen=True)
class Item:
    scene: Scene
    captions: tuple[str, ...]


def make_item(seed: int, stream: str, index: int, world: WorldConfig, kind: SceneKind) -> Item:
    rng = item_rng(seed, stream, index)
    scene = sample_scene(rng, world, kind)
    caps = captions_for(
        scene, rng, world.captions_per_image, world.mention_order, world.name_positions
    )
    return Item(scene, tuple(p.text for p in caps))


def lm_sentences(seed: int, world: WorldConfig, count: int) -> Iterator[str]:
    """Text-only corpus: captions and phrases of scenes that may contain every class, in both
    datasets' registers (one sentence in seven is a Shapes-Flickr caption)."""
    styles = ("caption", "caption", "caption", "list", "object", "relation", "flickr")
    for i in range(count):
        rng = item_rng(seed, "lm", i)
        scene = sample_scene(rng, world, "any")
        style = _choose(rng, styles)
        if style == "flickr":
            yield flickr_caption(scene, rng).text
        else:
            yield describe(scene, rng, style, world.mention_order, world.name_positions).text


def _save_png(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=False, compress_level=6)


def _write_json(obj, path: Path) -> None:
    atomic_write_json(path, obj, separators=(",", ":"))


def write_world(
    out: Path, seed: int, world: WorldConfig, sizes: SplitSizes, progress: bool = True
) -> dict:
    """Generate and write every Shapes file under ``out``; returns the summary written to world.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    total = sizes.train + sizes.val + sizes.test + 3 * sizes.nocaps_per_domain + sizes.vlp_images
    total += sizes.flickr_train + sizes.flickr_val + sizes.flickr_test
    bar = tqdm(total=total, desc="shapes: images", unit="img", disable=not progress)

    # Karpathy captions: Shapes, then Shapes-Flickr
    images: list[dict] = []
    for split in ("train", "val", "test"):
        for i in range(getattr(sizes, split)):
            item = make_item(seed, split, i, world, "seen")
            fname = f"{split}/{i:06d}.png"
            images.append(
                _karpathy_image(out, fname, split, item.scene, item.captions, world, images)
            )
            bar.update()
    _write_json({"dataset": "shapes", "images": images}, out / "dataset_shapes.json")
    images = []
    for split in ("train", "val", "test"):
        for i in range(getattr(sizes, f"flickr_{split}")):
            scene, caps = flickr_item(seed, split, i, world)
            fname = f"{FLICKR_IMAGES}/{split}/{i:06d}.png"
            images.append(_karpathy_image(out, fname, split, scene, caps, world, images))
            bar.update()
    _write_json({"dataset": FLICKR, "images": images}, out / FLICKR_CAPTIONS)

    # NoCaps-style validation
    nc_images, nc_anns, ann_id, nc_id = [], [], 0, 0
    for domain, stream, kind in (
        ("in-domain", "nocaps-in", "seen"),
        ("near-domain", "nocaps-near", "near"),
        ("out-of-domain", "nocaps-out", "ood"),
    ):
        for i in range(sizes.nocaps_per_domain):
            item = make_item(seed, stream, i, world, kind)  # type: ignore[arg-type]
            fname = f"nocaps/{nc_id:06d}.png"
            _save_png(render(item.scene, world), out / fname)
            nc_images.append(
                {
                    "id": nc_id,
                    "file_name": fname,
                    "domain": domain,
                    "height": world.image_size,
                    "width": world.image_size,
                    "objects": [o.to_json() for o in item.scene.objects],
                }
            )
            for raw in item.captions:
                nc_anns.append({"image_id": nc_id, "id": ann_id, "caption": raw})
                ann_id += 1
            nc_id += 1
            bar.update()
    _write_json({"images": nc_images, "annotations": nc_anns}, out / "nocaps_shapes_val.json")

    # Visual-Genome-style VLP set: region phrases for separate images
    vg = out / "visual_genome"
    regions_all, image_data, region_id = [], [], 1
    for i in range(sizes.vlp_images):
        image_id = i + 1
        rng = item_rng(seed, "vlp", i)
        scene = sample_scene(rng, world, "seen")
        _save_png(render(scene, world), vg / "VG_100K" / f"{image_id}.png")
        regions = []
        for k, obj in enumerate(scene.objects):
            one = Scene((obj,), scene.background)
            text = describe(one, rng, "object").text
            x, y, w, h = obj.bbox(world.image_size)
            regions.append(_region(region_id, image_id, text, x, y, w, h))
            region_id += 1
            for other in scene.objects[k + 1 :]:
                two = Scene((obj, other), scene.background)
                text = describe(two, rng, "relation").text
                b1, b2 = obj.bbox(world.image_size), other.bbox(world.image_size)
                x0, y0 = min(b1[0], b2[0]), min(b1[1], b2[1])
                x1 = max(b1[0] + b1[2], b2[0] + b2[2])
                y1 = max(b1[1] + b1[3], b2[1] + b2[3])
                regions.append(_region(region_id, image_id, text, x0, y0, x1 - x0, y1 - y0))
                region_id += 1
        regions_all.append({"id": image_id, "regions": regions})
        image_data.append(
            {
                "image_id": image_id,
                "url": f"VG_100K/{image_id}.png",
                "width": world.image_size,
                "height": world.image_size,
                "coco_id": None,
                "flickr_id": None,
            }
        )
        bar.update()
    bar.close()
    _write_json(regions_all, vg / "region_descriptions.json")
    _write_json(image_data, vg / "image_data.json")

    # Text-only LM corpus
    corpus = list(
        tqdm(
            lm_sentences(seed, world, sizes.lm_sentences),
            total=sizes.lm_sentences,
            desc="shapes: lm corpus",
            disable=not progress,
        )
    )
    (out / "lm_corpus.txt").write_text("\n".join(corpus) + "\n", encoding="utf-8")

    summary = {
        "seed": seed,
        "world": world.model_dump(mode="json"),
        "sizes": sizes.model_dump(mode="json"),
        "ood_shape": world.ood_shape,
        "withheld_pairs": [list(p) for p in world.withheld_pairs],
        "layout": {
            "karpathy": "dataset_shapes.json (filename relative to this folder)",
            "flickr": f"{FLICKR_CAPTIONS} (Shapes-Flickr; filename relative to this folder)",
            "nocaps": "nocaps_shapes_val.json (file_name relative to this folder)",
            "visual_genome": "visual_genome/ (url relative to visual_genome/)",
            "lm_corpus": "lm_corpus.txt",
        },
    }
    _write_json(summary, out / "world.json")
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def _karpathy_image(
    out: Path,
    fname: str,
    split: str,
    scene: Scene,
    captions: Sequence[str],
    world: WorldConfig,
    before: Sequence[dict],
) -> dict:
    """Render one image and return its Karpathy entry; ids continue from the entries ``before``."""
    _save_png(render(scene, world), out / fname)
    imgid = len(before)
    first = before[-1]["sentids"][-1] + 1 if before else 0
    ids = list(range(first, first + len(captions)))
    return {
        "filename": fname,
        "imgid": imgid,
        "split": split,
        "sentids": ids,
        "sentences": [
            {"raw": raw, "tokens": caption_words(raw), "imgid": imgid, "sentid": sid}
            for raw, sid in zip(captions, ids, strict=True)
        ],
        "objects": [o.to_json() for o in scene.objects],
    }


def _region(region_id: int, image_id: int, phrase: str, x: int, y: int, w: int, h: int) -> dict:
    return {
        "region_id": region_id,
        "image_id": image_id,
        "phrase": phrase,
        "x": x,
        "y": y,
        "width": w,
        "height": h,
    }


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ituning.data.shapes --out DIR [--seed 0] [--train N ...]``."""
    defaults = SplitSizes()
    p = argparse.ArgumentParser(
        prog="python -m ituning.data.shapes", description="Write the synthetic Shapes world."
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (the image root)")
    p.add_argument("--seed", type=int, default=0)
    for name in SplitSizes.model_fields:
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    p.add_argument("--image-size", type=int, default=WorldConfig().image_size)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        sizes = SplitSizes(**{k: getattr(args, k) for k in SplitSizes.model_fields})
        world = WorldConfig(image_size=args.image_size)
    except ValidationError as exc:
        raise ConfigError(validation_line(exc, "shapes")) from None
    summary = write_world(args.out, args.seed, world, sizes, progress=not args.quiet)
    print(f"wrote the Shapes world to {args.out} in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
