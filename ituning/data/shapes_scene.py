"""Shapes scenes: the world's rules (``WorldConfig``) and drawing random scenes from them.

Scenes hold 1-3 objects (shape, colour, size) on a 3x3 grid with jitter, over plain, gradient or
mildly noisy light backgrounds. Objects are large relative to the 64x64 image and backgrounds are
mild because a prototype with small objects on noisy backgrounds trained a vision encoder that
told colours apart but hardly shapes.

Domain rules (``WorldConfig``, applied by ``sample_scene``'s ``kind``): the out-of-domain shape
(``star``) never appears in caption training, validation or test images, nor in the VLP set; the
withheld shape x colour pairs (the near-domain) appear in none of them either. The LM corpus and
the vision encoder's contrastive pre-training may see everything, as GPT-2 and CLIP saw NoCaps'
novel objects.

Every item is drawn from its own generator ``numpy.random.default_rng([seed, stream, index])``
(``item_rng``), so an item never depends on how many items another split holds. The written world
is byte-identical per seed only while the order of random draws here stays as it is.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ituning.data.shapes_vocab import (
    COLOUR_RGB,
    COLOURS,
    COLUMNS,
    ROWS,
    SHAPE_WORDS,
    SHAPES,
    SIZES,
)

SceneKind = Literal["seen", "near", "ood", "any"]
#: In which order a caption names a scene's objects (see ``WorldConfig.mention_order``).
MentionOrder = Literal["random", "reading"]

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
    "flickr-train": 12,
    "flickr-val": 13,
    "flickr-test": 14,
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
    #: The same in Shapes-Flickr, the second captioning dataset: busier scenes.
    flickr_object_count_probs: tuple[float, float, float] = (0.1, 0.3, 0.6)
    #: Object radii in pixels at image_size 64 (scaled with image_size).
    small_radius: float = Field(8.5, gt=0)
    large_radius: float = Field(12.5, gt=0)
    radius_jitter: float = Field(0.6, ge=0)
    position_jitter: float = Field(3.0, ge=0)
    colour_jitter: int = Field(12, ge=0, le=60)
    #: Standard deviation of the background noise on "noise" backgrounds (0-255 scale).
    background_noise: float = Field(5.0, ge=0, le=40)
    captions_per_image: int = Field(5, ge=1, le=20)
    #: Order of the objects in captions and listings. ``random``: any order, as people write.
    #: ``reading``: column by column from the left, top to bottom within a column, so that the
    #: image alone decides which object comes next. With ``random``, mini-large I-Tuning learned to
    #: spread its attention evenly over the objects at every mention and named the same object
    #: again (half its phrases on 3-object scenes repeated one); the module, reading a frozen
    #: LM's state, could not learn "an object not yet named" (full fine-tuning could).
    mention_order: MentionOrder = "reading"
    #: Captions of several objects name each after its grid cell ("in the top left a red heart,
    #: on the right a ..."): then what a caption has named so far is in its text, where a frozen
    #: LM's state keeps it, and the next object is the one in the next cell.
    name_positions: bool = True

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
        for name in ("object_count_probs", "flickr_object_count_probs"):
            if abs(sum(getattr(self, name)) - 1.0) > 1e-6:
                raise ValueError(f"{name} must sum to 1")
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
