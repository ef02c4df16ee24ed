"""The synthetic *Shapes* world: scenes, rendering, captions, domain splits and dataset writers.

The ``mini`` profile needs a captioning task that 2 CPU cores learn in minutes yet keeps what the
paper measures meaningful: five varied reference captions per image (CIDEr consensus), Karpathy
splits, a NoCaps-style in/near/out-of-domain split, a Visual-Genome-style VLP set and a text-only
corpus for the LM. Everything is written in the real datasets' on-disk formats so the real
loaders read it unchanged.

Scenes hold 1-3 objects (shape, colour, size) on a 3x3 grid with jitter, over plain, gradient or
mildly noisy light backgrounds. Objects are large relative to the 64x64 image and backgrounds are
mild because a prototype with small objects on noisy backgrounds trained a vision encoder that
told colours apart but hardly shapes.

Domain rules (``WorldConfig``): the out-of-domain shape (``star``) never appears in caption
training, validation or test images, nor in the VLP set; the withheld shape x colour pairs (the
near-domain) appear in none of them either. The LM corpus and the vision encoder's contrastive
pre-training may see everything, as GPT-2 and CLIP saw NoCaps' novel objects.

Every item is drawn from its own generator ``numpy.random.default_rng([seed, stream, index])``, so
an item never depends on how many items another split holds, and output is byte-identical for the
same seed and sizes.

Output layout of ``python -m ituning.data.shapes --out DIR`` (all image paths relative to ``DIR``,
except VG's ``url``, which is relative to ``DIR/visual_genome`` as in the real VG release)::

    DIR/dataset_shapes.json          Karpathy format, filename "train/000123.png"
    DIR/{train,val,test}/NNNNNN.png
    DIR/nocaps_shapes_val.json       NoCaps format, file_name "nocaps/NNNNNN.png"
    DIR/nocaps/NNNNNN.png
    DIR/visual_genome/region_descriptions.json, image_data.json, VG_100K/<id>.png
    DIR/lm_corpus.txt                one sentence a line
    DIR/world.json                   the configuration, domain facts and file counts
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from tqdm import tqdm

from ituning.data.shapes_vocab import (
    COLOUR_RGB,
    COLOUR_WORDS,
    COLOURS,
    COLUMNS,
    RELATION_PHRASES,
    ROWS,
    SHAPE_WORDS,
    SHAPES,
    SIZE_WORDS,
    SIZES,
)
from ituning.errors import ConfigError, cli_main, validation_line
from ituning.files import atomic_write_json

SceneKind = Literal["seen", "near", "ood", "any"]

#: Stream ids: one independent random stream per use, so splits never share an item.
STREAMS: dict[str, int] = {
    "train": 1,
    "val": 2,
    "test": 3,
    "nocaps-in": 4,
    "nocaps-near": 5,
    "nocaps-out": 6,
    "vlp": 7,
    "lm": 8,
    "clip": 9,
    "gate": 10,
    "gate-ood": 11,
}

_BACKGROUNDS: tuple[tuple[int, int, int], ...] = (
    (238, 238, 238),
    (215, 215, 215),
    (196, 196, 196),
    (246, 240, 224),
    (224, 234, 246),
    (228, 244, 228),
    (242, 230, 242),
    (205, 200, 188),
)


class WorldConfig(BaseModel):
    """The rules of the world (what may appear where, how it looks); not how many items to draw."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: int = Field(64, ge=32, le=512)
    supersample: int = Field(4, ge=1, le=8)
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = COLOURS
    ood_shape: str = "star"
    #: (shape, colour) pairs absent from caption training: the near-domain.
    withheld_pairs: tuple[tuple[str, str], ...] = (
        ("circle", "green"),
        ("square", "yellow"),
        ("triangle", "purple"),
        ("diamond", "orange"),
        ("cross", "red"),
        ("heart", "blue"),
    )
    #: Probability of 1, 2, 3 objects.
    object_count_probs: tuple[float, float, float] = (0.3, 0.4, 0.3)
    #: Object radii in pixels at image_size 64 (scaled with image_size).
    small_radius: float = Field(8.5, gt=0)
    large_radius: float = Field(12.5, gt=0)
    radius_jitter: float = Field(0.6, ge=0)
    position_jitter: float = Field(3.0, ge=0)
    colour_jitter: int = Field(12, ge=0, le=60)
    #: Standard deviation of the background noise on "noise" backgrounds (0-255 scale).
    background_noise: float = Field(5.0, ge=0, le=40)
    captions_per_image: int = Field(5, ge=1, le=20)

    @model_validator(mode="after")
    def _check(self) -> WorldConfig:
        unknown = [s for s in self.shapes if s not in SHAPE_WORDS]
        if unknown:
            raise ValueError(f"unknown shapes {unknown}; known: {list(SHAPE_WORDS)}")
        unknown = [c for c in self.colours if c not in COLOUR_RGB]
        if unknown:
            raise ValueError(f"unknown colours {unknown}; known: {list(COLOUR_RGB)}")
        if self.ood_shape not in self.shapes:
            raise ValueError(f"ood_shape {self.ood_shape!r} is not one of shapes {self.shapes}")
        if len(self.seen_shapes) < 3 or len(self.colours) < 3:
            raise ValueError("need at least 3 in-domain shapes and 3 colours")
        for s, c in self.withheld_pairs:
            if s not in self.seen_shapes or c not in self.colours:
                raise ValueError(f"withheld pair ({s}, {c}) must use an in-domain shape and colour")
        if abs(sum(self.object_count_probs) - 1.0) > 1e-6:
            raise ValueError("object_count_probs must sum to 1")
        if self.small_radius >= self.large_radius:
            raise ValueError("small_radius must be smaller than large_radius")
        return self

    @property
    def seen_shapes(self) -> tuple[str, ...]:
        return tuple(s for s in self.shapes if s != self.ood_shape)

    @property
    def seen_pairs(self) -> tuple[tuple[str, str], ...]:
        held = set(self.withheld_pairs)
        return tuple((s, c) for s in self.seen_shapes for c in self.colours if (s, c) not in held)

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


class SplitSizes(BaseModel):
    """How many items each written split holds (Karpathy-like proportions by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: int = Field(4000, ge=1)
    val: int = Field(500, ge=1)
    test: int = Field(500, ge=1)
    nocaps_per_domain: int = Field(200, ge=1)
    vlp_images: int = Field(2000, ge=1)
    lm_sentences: int = Field(20000, ge=1)


# --------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str
    col: int  # 0..2, index into COLUMNS
    row: int  # 0..2, index into ROWS
    x: float  # centre, pixels
    y: float
    radius: float
    rgb: tuple[int, int, int]

    @property
    def h(self) -> str:
        return COLUMNS[self.col]

    @property
    def v(self) -> str:
        return ROWS[self.row]

    def bbox(self, image_size: int) -> tuple[int, int, int, int]:
        """Integer ``(x, y, width, height)`` box around the object, clipped to the image."""
        x0 = max(0, math.floor(self.x - self.radius * 1.1))
        y0 = max(0, math.floor(self.y - self.radius * 1.1))
        x1 = min(image_size, math.ceil(self.x + self.radius * 1.1))
        y1 = min(image_size, math.ceil(self.y + self.radius * 1.1))
        return x0, y0, x1 - x0, y1 - y0

    def to_json(self) -> dict:
        return {
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "x": round(self.x, 2),
            "y": round(self.y, 2),
            "radius": round(self.radius, 2),
            "h": self.h,
            "v": self.v,
        }


@dataclass(frozen=True)
class Background:
    kind: Literal["plain", "gradient", "noise"]
    c1: tuple[int, int, int]
    c2: tuple[int, int, int]
    vertical: bool
    noise_seed: int


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    background: Background


def item_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    """The generator of item ``index`` of ``stream``: independent of every other item."""
    return np.random.default_rng([seed, STREAMS[stream], index])


def _jitter_rgb(rng: np.random.Generator, rgb: Sequence[int], amount: int) -> tuple[int, int, int]:
    if amount == 0:
        return tuple(int(v) for v in rgb)  # type: ignore[return-value]
    d = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(np.clip(v + dv, 0, 255)) for v, dv in zip(rgb, d, strict=True))  # type: ignore[return-value]


def _pick_pairs(rng: np.random.Generator, world: WorldConfig, kind: SceneKind, n: int):
    if kind == "any":
        pool = [(s, c) for s in world.shapes for c in world.colours]
    else:
        pool = list(world.seen_pairs)
    first: tuple[str, str] | None = None
    if kind == "near":
        first = world.withheld_pairs[rng.integers(len(world.withheld_pairs))]
    elif kind == "ood":
        first = (world.ood_shape, world.colours[rng.integers(len(world.colours))])
    pairs: list[tuple[str, str]] = [first] if first else []
    while len(pairs) < n:
        cand = pool[rng.integers(len(pool))]
        if cand not in pairs:
            pairs.append(cand)
    order = rng.permutation(n)
    return [pairs[i] for i in order]


def sample_scene(rng: np.random.Generator, world: WorldConfig, kind: SceneKind) -> Scene:
    """Draw one scene.

    ``seen``: in-domain shapes and seen shape x colour pairs only (caption data, VLP, NoCaps
    in-domain); ``near``: one object has a withheld pair; ``ood``: one object is the
    out-of-domain shape; ``any``: everything (LM corpus, contrastive pre-training).
    """
    scale = world.image_size / 64.0
    n = int(rng.choice(3, p=world.object_count_probs)) + 1
    pairs = _pick_pairs(rng, world, kind, n)
    sizes = [SIZES[int(rng.integers(2))] for _ in range(n)]
    cell = world.image_size / 3.0
    objects: list[ShapeObject] = []
    for attempt in range(400):
        if attempt == 200:  # crowded layouts: fall back to small objects
            sizes = ["small"] * n
        cells = rng.choice(9, size=n, replace=False)
        placed: list[tuple[float, float, float]] = []
        for k in range(n):
            base = world.large_radius if sizes[k] == "large" else world.small_radius
            r = (base + rng.uniform(-world.radius_jitter, world.radius_jitter)) * scale
            col, row = int(cells[k] % 3), int(cells[k] // 3)
            jit = world.position_jitter * scale
            x = (col + 0.5) * cell + rng.uniform(-jit, jit)
            y = (row + 0.5) * cell + rng.uniform(-jit, jit)
            lo, hi = r * 1.1 + 1, world.image_size - r * 1.1 - 1
            placed.append((float(np.clip(x, lo, hi)), float(np.clip(y, lo, hi)), r))
        ok = all(
            math.hypot(a[0] - b[0], a[1] - b[1]) >= 1.1 * (a[2] + b[2]) + 1.5 * scale
            for a, b in itertools.combinations(placed, 2)
        )
        if ok:
            for k, (x, y, r) in enumerate(placed):
                shape, colour = pairs[k]
                objects.append(
                    ShapeObject(
                        shape=shape,
                        colour=colour,
                        size=sizes[k],
                        col=int(cells[k] % 3),
                        row=int(cells[k] // 3),
                        x=x,
                        y=y,
                        radius=r,
                        rgb=_jitter_rgb(rng, COLOUR_RGB[colour], world.colour_jitter),
                    )
                )
            break
    else:  # pragma: no cover - 3 small objects in 9 cells always fit
        raise RuntimeError("could not place objects")
    kinds = ("plain", "gradient", "noise")
    bg_kind = kinds[int(rng.choice(3, p=(0.4, 0.3, 0.3)))]
    c1 = _jitter_rgb(rng, _BACKGROUNDS[rng.integers(len(_BACKGROUNDS))], 6)
    c2 = _jitter_rgb(rng, _BACKGROUNDS[rng.integers(len(_BACKGROUNDS))], 6)
    bg = Background(
        kind=bg_kind,  # type: ignore[arg-type]
        c1=c1,
        c2=c2,
        vertical=bool(rng.integers(2)),
        noise_seed=int(rng.integers(2**31)),
    )
    return Scene(objects=tuple(objects), background=bg)


# --------------------------------------------------------------------------------------------
# Rendering


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "square":
        h = 0.78 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        R = 1.08 * r
        dy = 0.25 * R  # centre the bounding box, not the centroid
        return [
            (cx + R * math.cos(a), cy + dy + R * math.sin(a))
            for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        ]
    if shape == "diamond":
        return [(cx, cy - 1.08 * r), (cx + 0.72 * r, cy), (cx, cy + 1.08 * r), (cx - 0.72 * r, cy)]
    if shape == "cross":
        a, w = 1.0 * r, 0.34 * r
        return [
            (cx - w, cy - a), (cx + w, cy - a), (cx + w, cy - w), (cx + a, cy - w),
            (cx + a, cy + w), (cx + w, cy + w), (cx + w, cy + a), (cx - w, cy + a),
            (cx - w, cy + w), (cx - a, cy + w), (cx - a, cy - w), (cx - w, cy - w),
        ]  # fmt: skip
    if shape == "star":
        pts = []
        for k in range(10):
            rad = 1.1 * r if k % 2 == 0 else 0.45 * r
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + 0.06 * r + rad * math.sin(a)))
        return pts
    if shape == "heart":
        s = 1.05 * r / 16.5
        pts = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            hx = 16 * math.sin(t) ** 3
            hy = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((cx + s * hx, cy - s * (hy + 2.5)))
        return pts
    return None  # circle


def _background(bg: Background, size: int, noise_std: float) -> np.ndarray:
    c1 = np.array(bg.c1, dtype=np.float32)
    if bg.kind == "gradient":
        t = np.linspace(0.0, 1.0, size, dtype=np.float32)
        t = t[:, None] if bg.vertical else t[None, :]
        img = c1 + (np.array(bg.c2, dtype=np.float32) - c1) * t[..., None]
        img = np.broadcast_to(img, (size, size, 3)).copy()
    else:
        img = np.broadcast_to(c1, (size, size, 3)).copy()
    if bg.kind == "noise" and noise_std > 0:
        noise = np.random.default_rng(bg.noise_seed).normal(0.0, noise_std, (size, size, 1))
        img += noise.astype(np.float32)
    return img


def render(scene: Scene, world: WorldConfig) -> Image.Image:
    """Draw a scene as an RGB image (anti-aliased by supersampling the object masks)."""
    size, ss = world.image_size, world.supersample
    img = _background(scene.background, size, world.background_noise)
    for obj in scene.objects:
        mask = Image.new("L", (size * ss, size * ss), 0)
        draw = ImageDraw.Draw(mask)
        cx, cy, r = obj.x * ss, obj.y * ss, obj.radius * ss
        poly = _polygon(obj.shape, cx, cy, r)
        if poly is None:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        else:
            draw.polygon(poly, fill=255)
        if ss > 1:
            mask = mask.resize((size, size), Image.Resampling.BOX)
        alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
        img = img * (1.0 - alpha) + np.array(obj.rgb, dtype=np.float32) * alpha
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------------------------
# Language: tagged phrases, their meaning (a claim about the scene), truth and one-word swaps


@dataclass
class Mention:
    """What a phrase says about one object; ``None`` = not said."""

    shape: str
    colour: str
    size: str | None = None
    h: str | None = None
    v: str | None = None


@dataclass
class Claim:
    mentions: list[Mention]
    relations: list[tuple[str, int, int]] = field(default_factory=list)  # (relation, i, j)


#: One word and its tag: ``(attribute, index)`` where index is a mention index (or a relation
#: index for ``relation``), or ``None`` for words that carry no attribute.
Token = tuple[str, tuple[str, int] | None]


@dataclass
class Phrase:
    tokens: list[Token]
    claim: Claim

    @property
    def text(self) -> str:
        return tokens_to_text(self.tokens)

    @property
    def words(self) -> list[str]:
        return [w for w, _ in _fix_articles(self.tokens) if w not in {",", ":", "."}]


def _fix_articles(tokens: list[Token]) -> list[Token]:
    out = list(tokens)
    for i, (w, tag) in enumerate(out):
        if w in ("a", "an") and i + 1 < len(out):
            out[i] = ("an" if out[i + 1][0][0] in "aeiou" else "a", tag)
    return out


def tokens_to_text(tokens: list[Token]) -> str:
    """The raw caption: articles agreed, punctuation attached, capitalised, full stop."""
    text = ""
    for w, _ in _fix_articles(tokens):
        text += w if (w in {",", ":"} or not text) else " " + w
    return text[:1].upper() + text[1:] + "."


def _choose(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _mention_tokens(
    rng: np.random.Generator, obj: ShapeObject, mi: int, with_size: bool
) -> tuple[list[Token], Mention]:
    toks: list[Token] = [("a", None)]
    m = Mention(shape=obj.shape, colour=obj.colour)
    if with_size:
        toks.append((_choose(rng, SIZE_WORDS[obj.size]), ("size", mi)))
        m.size = obj.size
    toks.append((_choose(rng, COLOUR_WORDS[obj.colour]), ("colour", mi)))
    toks.append((_choose(rng, SHAPE_WORDS[obj.shape]), ("shape", mi)))
    return toks, m


def _position_tokens(
    rng: np.random.Generator, obj: ShapeObject, mi: int, m: Mention
) -> list[Token]:
    h, v = obj.h, obj.v
    if h == "centre" and v == "middle":
        return [("in", None), ("the", None), (_choose(rng, ("middle", "centre", "center")), None)]
    options = []
    if h != "centre":
        options.append("h")
    if v != "middle":
        options.append("v")
    if h != "centre" and v != "middle":
        options.append("hv")
    pick = _choose(rng, options)
    if pick == "h":
        m.h = h
        return [("on", None), ("the", None), (h, ("h", mi))]
    if pick == "v":
        m.v = v
        return [("at", None), ("the", None), (v, ("v", mi))]
    m.h, m.v = h, v
    toks: list[Token] = [("in", None), ("the", None), (v, ("v", mi)), (h, ("h", mi))]
    if rng.random() < 0.5:
        toks.append(("corner", None))
    return toks


def true_relations(a: ShapeObject, b: ShapeObject) -> list[str]:
    """Relations that hold from ``a`` to ``b`` (column and row order on the grid)."""
    out = []
    if a.col < b.col:
        out.append("left_of")
    if a.col > b.col:
        out.append("right_of")
    if a.row < b.row:
        out.append("above")
    if a.row > b.row:
        out.append("below")
    return out


def _relation_tokens(rng: np.random.Generator, rel: str, ri: int) -> list[Token]:
    words = _choose(rng, RELATION_PHRASES[rel])
    key = {"left_of": "left", "right_of": "right"}.get(rel)
    return [(w, ("relation", ri) if (w == key or len(words) == 1) else None) for w in words]


def _pick_relation(rng: np.random.Generator, objs: Sequence[ShapeObject], order: Sequence[int]):
    """A pair (i, j) of positions in ``order`` and a relation that holds from i to j."""
    pairs = [(i, j) for i in range(len(order)) for j in range(len(order)) if i != j]
    i, j = pairs[int(rng.integers(len(pairs)))]
    rel = _choose(rng, true_relations(objs[order[i]], objs[order[j]]))
    return i, j, rel


def canonical_phrase(obj: ShapeObject, *, with_position: bool = False) -> Phrase:
    """ "a <size> <colour> <shape>" in canonical words (one text per attribute combination),
    optionally followed by the object's grid position ("on the left", "in the top right")."""
    tokens: list[Token] = [
        ("a", None),
        (SIZE_WORDS[obj.size][0], ("size", 0)),
        (COLOUR_WORDS[obj.colour][0], ("colour", 0)),
        (SHAPE_WORDS[obj.shape][0], ("shape", 0)),
    ]
    m = Mention(obj.shape, obj.colour, obj.size)
    if with_position:
        h, v = obj.h, obj.v
        if h == "centre" and v == "middle":
            tokens += [("in", None), ("the", None), ("middle", None)]
        elif v == "middle":
            tokens += [("on", None), ("the", None), (h, ("h", 0))]
            m.h = h
        elif h == "centre":
            tokens += [("at", None), ("the", None), (v, ("v", 0))]
            m.v = v
        else:
            tokens += [("in", None), ("the", None), (v, ("v", 0)), (h, ("h", 0))]
            m.h, m.v = h, v
    return Phrase(tokens, Claim([m]))


def describe(scene: Scene, rng: np.random.Generator, style: str = "caption") -> Phrase:
    """One description of the scene.

    ``caption``: a COCO-like sentence naming every object (templates and synonyms vary);
    ``list``: every object with its size ("a small red circle and a large blue square");
    ``object``: one object, sometimes with its position; ``relation``: two objects and a relation
    (falls back to ``object`` for one-object scenes).
    """
    objs = scene.objects
    n = len(objs)
    if style == "relation" and n == 1:
        style = "object"
    if style == "object":
        k = int(rng.integers(n))
        toks, m = _mention_tokens(rng, objs[k], 0, with_size=rng.random() < 0.5)
        if rng.random() < 0.5:
            toks += _position_tokens(rng, objs[k], 0, m)
        return Phrase(toks, Claim([m]))
    if style == "list":
        order = rng.permutation(n)
        toks: list[Token] = []
        ms = []
        for mi, k in enumerate(order):
            if mi > 0:
                toks.append(("and", None) if mi == n - 1 else (",", None))
            t, m = _mention_tokens(rng, objs[k], mi, with_size=True)
            toks += t
            ms.append(m)
        return Phrase(toks, Claim(ms))
    if style == "relation":
        order = rng.permutation(n)
        i, j, rel = _pick_relation(rng, objs, order)
        t1, m1 = _mention_tokens(rng, objs[order[i]], 0, with_size=rng.random() < 0.5)
        t2, m2 = _mention_tokens(rng, objs[order[j]], 1, with_size=rng.random() < 0.5)
        return Phrase(t1 + _relation_tokens(rng, rel, 0) + t2, Claim([m1, m2], [(rel, 0, 1)]))
    if style != "caption":
        raise ValueError(f"unknown style {style!r}")
    return _caption(scene, rng)


def _caption(scene: Scene, rng: np.random.Generator) -> Phrase:
    objs = scene.objects
    n = len(objs)
    order = [int(k) for k in rng.permutation(n)]
    with_size = rng.random() < 0.6
    mts = [_mention_tokens(rng, objs[k], mi, with_size) for mi, k in enumerate(order)]
    ms = [m for _, m in mts]
    claim = Claim(ms)

    def ment(mi: int) -> list[Token]:
        return list(mts[mi][0])

    def listing() -> list[Token]:
        toks: list[Token] = []
        for mi in range(n):
            if mi > 0:
                toks.append(("and", None) if mi == n - 1 else (",", None))
            toks += ment(mi)
        return toks

    count = {2: "two", 3: "three"}.get(n)
    if n == 1:
        t = int(rng.integers(5))
        if t == 0:
            toks = ment(0)
        elif t == 1:
            toks = ment(0) + _position_tokens(rng, objs[order[0]], 0, ms[0])
        elif t == 2:
            toks = [("there", None), ("is", None)] + ment(0)
            toks += _position_tokens(rng, objs[order[0]], 0, ms[0])
        elif t == 3:
            toks = [("a", None), ("picture", None), ("of", None)] + ment(0)
        else:
            toks = [("an", None), ("image", None), ("of", None)] + ment(0)
        return Phrase(toks, claim)
    t = int(rng.integers(4))
    if t == 0:
        toks = listing()
    elif t == 1:
        toks = [(count, None), ("shapes", None), (",", None)] + listing()  # type: ignore[list-item]
    elif t == 2:
        toks = [("there", None), ("are", None), (count, None), ("shapes", None), (",", None)]  # type: ignore[list-item]
        toks += listing()
    else:
        # a relation between the first two mentions, then the rest
        rel = _choose(rng, true_relations(objs[order[0]], objs[order[1]]))
        toks = ment(0) + _relation_tokens(rng, rel, 0) + ment(1)
        claim.relations.append((rel, 0, 1))
        if n == 3:
            toks += [("and", None)] + ment(2)
    return Phrase(toks, claim)


def _mention_holds(m: Mention, o: ShapeObject) -> bool:
    return (
        m.shape == o.shape
        and m.colour == o.colour
        and (m.size is None or m.size == o.size)
        and (m.h is None or m.h == o.h)
        and (m.v is None or m.v == o.v)
    )


def claim_holds(claim: Claim, scene: Scene) -> bool:
    """Whether distinct objects of the scene satisfy every mention and relation of the claim."""
    objs = scene.objects
    if len(claim.mentions) > len(objs):
        return False
    for assign in itertools.permutations(range(len(objs)), len(claim.mentions)):
        if not all(_mention_holds(m, objs[k]) for m, k in zip(claim.mentions, assign, strict=True)):
            continue
        if all(
            rel in true_relations(objs[assign[i]], objs[assign[j]]) for rel, i, j in claim.relations
        ):
            return True
    return False


_OPPOSITE_WORD = {
    "left": "right", "right": "left", "top": "bottom", "bottom": "top",
    "above": "below", "over": "under", "below": "above", "under": "over", "beneath": "above",
}  # fmt: skip
_POS_OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
_REL_OPPOSITE = {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}

SwapKind = Literal["colour", "shape", "size", "position"]


def swap(
    phrase: Phrase,
    scene: Scene,
    kind: SwapKind,
    rng: np.random.Generator,
    world: WorldConfig,
    *,
    shape_pool: Sequence[str] | None = None,
    target_shape: str | None = None,
    source_shape: str | None = None,
) -> Phrase | None:
    """The phrase with one ``kind`` word replaced so that it is false for the scene, or None.

    ``position`` swaps an absolute position (left/right, top/bottom) or a relation
    (left of/right of, above/below). ``shape_pool`` limits replacement shapes; ``target_shape``
    forces the replacement and ``source_shape`` restricts which mentioned shape is replaced.
    """
    tags = ("h", "v", "relation") if kind == "position" else (kind,)
    idx = [i for i, (_, tag) in enumerate(phrase.tokens) if tag and tag[0] in tags]
    if source_shape is not None:
        idx = [
            i for i in idx if phrase.claim.mentions[phrase.tokens[i][1][1]].shape == source_shape
        ]  # type: ignore[index]
    for i in rng.permutation(len(idx)) if idx else []:
        ti = idx[int(i)]
        word, (attr, k) = phrase.tokens[ti]  # type: ignore[misc]
        claim = Claim([replace(m) for m in phrase.claim.mentions], list(phrase.claim.relations))
        if attr in ("colour", "shape", "size"):
            current = getattr(claim.mentions[k], attr)
            if attr == "colour":
                pool = list(world.colours)
            elif attr == "size":
                pool = list(SIZES)
            else:
                pool = list(shape_pool if shape_pool is not None else world.shapes)
            choices = [c for c in pool if c != current]
            if target_shape is not None and attr == "shape":
                choices = [target_shape] if target_shape != current else []
            if not choices:
                continue
            new = _choose(rng, choices)
            setattr(claim.mentions[k], attr, new)
            new_word = {"colour": COLOUR_WORDS, "size": SIZE_WORDS, "shape": SHAPE_WORDS}[attr][
                new
            ][0]
        elif attr in ("h", "v"):
            setattr(claim.mentions[k], attr, _POS_OPPOSITE[getattr(claim.mentions[k], attr)])
            new_word = _OPPOSITE_WORD[word]
        else:  # relation
            rel, a, b = claim.relations[k]
            claim.relations[k] = (_REL_OPPOSITE[rel], a, b)
            new_word = _OPPOSITE_WORD[word]
        if claim_holds(claim, scene):
            continue
        tokens = list(phrase.tokens)
        tokens[ti] = (new_word, tokens[ti][1])
        return Phrase(tokens, claim)
    return None


def captions_for(scene: Scene, rng: np.random.Generator, n: int) -> list[Phrase]:
    """``n`` captions of a scene, distinct where the templates allow."""
    out: list[Phrase] = []
    seen: set[str] = set()
    for _ in range(20 * n):
        p = describe(scene, rng, "caption")
        if p.text not in seen:
            seen.add(p.text)
            out.append(p)
            if len(out) == n:
                return out
    while len(out) < n:  # tiny worlds can run out of distinct captions
        out.append(describe(scene, rng, "caption"))
    return out


def caption_words(text: str) -> list[str]:
    """Karpathy-style tokens: lowercase words, punctuation dropped."""
    for p in ".,:;!?":
        text = text.replace(p, " ")
    return text.lower().split()


# --------------------------------------------------------------------------------------------
# Items and writers


@dataclass(frozen=True)
class Item:
    scene: Scene
    captions: tuple[str, ...]


def make_item(seed: int, stream: str, index: int, world: WorldConfig, kind: SceneKind) -> Item:
    rng = item_rng(seed, stream, index)
    scene = sample_scene(rng, world, kind)
    caps = captions_for(scene, rng, world.captions_per_image)
    return Item(scene, tuple(p.text for p in caps))


def lm_sentences(seed: int, world: WorldConfig, count: int) -> Iterator[str]:
    """Text-only corpus: captions and phrases of scenes that may contain every class."""
    styles = ("caption", "caption", "caption", "list", "object", "relation")
    for i in range(count):
        rng = item_rng(seed, "lm", i)
        scene = sample_scene(rng, world, "any")
        yield describe(scene, rng, _choose(rng, styles)).text


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
    bar = tqdm(total=total, desc="shapes: images", unit="img", disable=not progress)

    # Karpathy captions
    images, imgid, sentid = [], 0, 0
    for split in ("train", "val", "test"):
        for i in range(getattr(sizes, split)):
            item = make_item(seed, split, i, world, "seen")
            fname = f"{split}/{i:06d}.png"
            _save_png(render(item.scene, world), out / fname)
            sents, ids = [], []
            for raw in item.captions:
                sents.append(
                    {"raw": raw, "tokens": caption_words(raw), "imgid": imgid, "sentid": sentid}
                )
                ids.append(sentid)
                sentid += 1
            images.append(
                {
                    "filename": fname,
                    "imgid": imgid,
                    "split": split,
                    "sentids": ids,
                    "sentences": sents,
                    "objects": [o.to_json() for o in item.scene.objects],
                }
            )
            imgid += 1
            bar.update()
    _write_json({"dataset": "shapes", "images": images}, out / "dataset_shapes.json")

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
            "nocaps": "nocaps_shapes_val.json (file_name relative to this folder)",
            "visual_genome": "visual_genome/ (url relative to visual_genome/)",
            "lm_corpus": "lm_corpus.txt",
        },
    }
    _write_json(summary, out / "world.json")
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


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
