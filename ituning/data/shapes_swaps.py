"""Truth of a phrase for a scene, and one-word swaps that make a phrase false.

A swapped phrase is a hard negative: the same text as a true description but for one colour,
shape, size or position word, so only a model that sees that attribute can tell the two apart.
The ``mini`` CLIP pre-trains on them and its vision gate scores them (``bench/mini``).
``claim_holds`` is the referee: a swap counts only if its claim is false for the scene.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

import numpy as np

from ituning.data.shapes_captions import Claim, Mention, Phrase, _choose, true_relations
from ituning.data.shapes_scene import Scene, ShapeObject, WorldConfig
from ituning.data.shapes_vocab import COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS, SIZES


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
