"""Where each module looks when a caption is about to name its next object.

``python -m ituning.mention_attention --checkpoint DIR --captions dataset.json --image-root DIR``

Teacher-forced on the reference captions of scenes with three objects of three different colours
(so that a colour word says which object a phrase names), this records, for every module and for
the first, second and third object a caption names, the attention mass S (eq. 4) that the position
*predicting the object's colour word* puts on that object's patches, on the other objects' patches
and on the background. At that position the model chooses which object to name next.

Captions that name objects in any order cannot tell the model which object comes first, so the
best it can do at the first mention is spread evenly (1/3 each), and then leave out the objects
already named: 1/2 at the second mention, all of it at the third. A model that stays near 1/3
at every mention does not know which objects it has named, and repeats them. Captions that name
objects in a fixed order can be followed exactly: near 1 at every mention.

Rows are also split by whether the named object shares its grid column with another object: in
reading order (column by column) the object that comes next is then told from its neighbour by the
row words alone, and a module that finds objects by their order rather than by the words that
name their cell splits its attention between the two.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ituning.errors import ArgumentParser, DataError, cli_main

#: Mentions reported (a scene holds at most three objects).
MENTIONS = 3


def object_masks(
    objects: Sequence[Mapping], grid: int, region: tuple[float, float, float, float]
) -> list[np.ndarray]:
    """For each object, the patches (flattened ``grid x grid``) whose centre lies within its radius
    plus half a patch; ``region`` is the part of the image the encoder saw, in image pixels."""
    left, top, right, bottom = region
    xs = left + (np.arange(grid) + 0.5) * (right - left) / grid
    ys = top + (np.arange(grid) + 0.5) * (bottom - top) / grid
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    half = 0.5 * max((right - left), (bottom - top)) / grid
    return [
        ((xx - o["x"]) ** 2 + (yy - o["y"]) ** 2 <= (o["radius"] + half) ** 2).reshape(-1)
        for o in objects
    ]


def mention_masses(
    probs: np.ndarray, masks: Sequence[np.ndarray], named: Sequence[tuple[int, int]]
) -> list[tuple[int, int, float, float]]:
    """``(mention, object, on the named object, on the other objects)`` for each ``(position,
    object)`` in ``named``; ``probs`` is ``(T, N)``: each position's attention over the patches."""
    out = []
    for mention, (pos, k) in enumerate(named):
        mine = masks[k]
        others = np.zeros_like(mine)
        for j, m in enumerate(masks):
            if j != k:
                others |= m & ~mine
        out.append((mention, k, float(probs[pos, mine].sum()), float(probs[pos, others].sum())))
    return out


def _colour_positions(words: Sequence[str], colour_of: Mapping[str, int]) -> list[tuple[int, int]]:
    """``(position predicting the word, object)`` of each colour word that names an object."""
    from ituning.data.shapes_vocab import WORD_CLASSES

    out = []
    for p, word in enumerate(words):
        attribute, cls = WORD_CLASSES.get(word, (None, None))
        if attribute == "colour" and cls in colour_of:
            out.append((p - 1, colour_of[cls]))
    return out


@torch.inference_mode()
def mention_attention(
    checkpoint: Path, captions: Path, image_root: Path, *, split: str = "test", images: int = 150
) -> pd.DataFrame:
    """Mean attention mass per kept layer, mention and whether the named object shares its column
    (rows), over ``images`` scenes."""
    from ituning.checkpoint import build_from_checkpoint
    from ituning.data.images import load_image
    from ituning.data.karpathy import read_karpathy
    from ituning.text import CaptionCodec

    dataset = read_karpathy(captions, image_root, splits=[split])
    scenes = [
        r
        for r in dataset
        if len(r.meta.get("objects", ())) == 3
        and len({o["colour"] for o in r.meta["objects"]}) == 3
    ][:images]
    if not scenes:
        raise DataError(
            f"{captions}: no {split} image lists three objects of three colours; this diagnostic "
            "needs a Shapes-style dataset with an 'objects' list per image"
        )
    model, tokenizer, encoder = build_from_checkpoint(checkpoint)
    codec = CaptionCodec(tokenizer)
    layers = list(model.kept_layers)
    rows = []
    for rec in scenes:
        image = load_image(dataset.image_path(rec))
        visual = encoder(encoder.preprocess(image).unsqueeze(0)).to(model.visual_dtype)
        grid = math.isqrt(visual.shape[1] - int(encoder.include_cls))
        masks = object_masks(rec.meta["objects"], grid, encoder.seen_region(*image.size))
        colour_of = {o["colour"]: k for k, o in enumerate(rec.meta["objects"])}
        columns = Counter(o["h"] for o in rec.meta["objects"])
        shared = [columns[o["h"]] > 1 for o in rec.meta["objects"]]
        for caption in rec.captions:
            ids, mask = codec.encode([caption])
            words = [tokenizer.decode([t]).strip() for t in ids[0].tolist()]
            named = _colour_positions(words, colour_of)[:MENTIONS]
            with model.capture_attention(layers) as captured:
                model(input_ids=ids, attention_mask=mask, visual=visual)
            for layer in layers:
                probs = captured[layer][0][0].float().numpy()
                if encoder.include_cls:
                    probs = probs[:, 1:]
                for mention, k, on, off in mention_masses(probs, masks, named):
                    rows.append((layer, mention + 1, shared[k], on, off))
    keys = ["layer", "mention", "shares column"]
    table = pd.DataFrame(rows, columns=[*keys, "named object", "other objects"])
    table = table.groupby(keys).agg(
        **{
            "named object": ("named object", "mean"),
            "other objects": ("other objects", "mean"),
            "n": ("named object", "size"),
        }
    )
    table.insert(2, "background", 1.0 - table["named object"] - table["other objects"])
    return table


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m ituning.mention_attention", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a run's checkpoint/ folder")
    parser.add_argument("--captions", type=Path, required=True, help="Karpathy-format JSON")
    parser.add_argument("--image-root", type=Path, required=True, help="folder of its images")
    parser.add_argument("--split", default="test")
    parser.add_argument("--images", type=int, default=150, help="scenes to read (default 150)")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error("--images must be at least 1")
    table = mention_attention(
        args.checkpoint, args.captions, args.image_root, split=args.split, images=args.images
    )
    with pd.option_context("display.float_format", "{:.2f}".format, "display.max_rows", None):
        print(table.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
