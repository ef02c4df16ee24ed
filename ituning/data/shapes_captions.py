"""Shapes language: tagged phrases, the claim each makes about its scene, and the caption generator.

Five varied reference captions per image make consensus metrics such as CIDEr meaningful, so
``describe`` varies templates and synonyms. Every word of a ``Phrase`` is tagged with the
attribute (and mention) it names, and the phrase carries its meaning as a ``Claim``: the tags let
``shapes_swaps.swap`` replace exactly one meaningful word, the claim lets ``claim_holds`` check
the result against the scene.

Generation continues on the item's generator after ``sample_scene``; the written world stays
byte-identical per seed only while the order of random draws here stays as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ituning.data.shapes_scene import MentionOrder, Scene, ShapeObject
from ituning.data.shapes_vocab import (
    CENTRE_CELL_WORDS,
    COLOUR_WORDS,
    RELATION_PHRASES,
    SHAPE_WORDS,
    SIZE_WORDS,
)


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
        return [("in", None), ("the", None), (_choose(rng, CENTRE_CELL_WORDS), None)]
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


def mention_order(
    rng: np.random.Generator, objs: Sequence[ShapeObject], rule: MentionOrder
) -> list[int]:
    """Indices of ``objs`` in the order a caption names them under ``rule``.

    The permutation is drawn under every rule, so that one call consumes the same draws whichever
    order the world uses (the words drawn after it may still differ: a relation between the first
    two objects depends on which they are).
    """
    drawn = [int(k) for k in rng.permutation(len(objs))]
    if rule == "random":
        return drawn
    if rule == "reading":
        return sorted(drawn, key=lambda k: (objs[k].col, objs[k].row))
    raise ValueError(f"unknown mention order {rule!r}")


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
        tokens += _where_tokens(obj, 0, m)
    return Phrase(tokens, Claim([m]))


def _where_tokens(obj: ShapeObject, mi: int, m: Mention) -> list[Token]:
    """The object's grid cell in canonical words ("in the top left", "on the right", "in the
    middle"), recorded in its mention."""
    h, v = obj.h, obj.v
    if h == "centre" and v == "middle":
        return [("in", None), ("the", None), ("middle", None)]
    if v == "middle":
        m.h = h
        return [("on", None), ("the", None), (h, ("h", mi))]
    if h == "centre":
        m.v = v
        return [("at", None), ("the", None), (v, ("v", mi))]
    m.h, m.v = h, v
    return [("in", None), ("the", None), (v, ("v", mi)), (h, ("h", mi))]


def describe(
    scene: Scene,
    rng: np.random.Generator,
    style: str = "caption",
    order: MentionOrder = "random",
    positions: bool = False,
) -> Phrase:
    """One description of the scene, naming its objects in ``order`` (the world's rule).

    ``caption``: a COCO-like sentence naming every object (templates and synonyms vary; with
    ``positions``, a multi-object caption puts each object after its grid cell);
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
        toks: list[Token] = []
        ms = []
        for mi, k in enumerate(mention_order(rng, objs, order)):
            if mi > 0:
                toks.append(("and", None) if mi == n - 1 else (",", None))
            t, m = _mention_tokens(rng, objs[k], mi, with_size=True)
            toks += t
            ms.append(m)
        return Phrase(toks, Claim(ms))
    if style == "relation":  # two objects in either order: the relation word says which is where
        drawn = rng.permutation(n)
        i, j, rel = _pick_relation(rng, objs, drawn)
        t1, m1 = _mention_tokens(rng, objs[drawn[i]], 0, with_size=rng.random() < 0.5)
        t2, m2 = _mention_tokens(rng, objs[drawn[j]], 1, with_size=rng.random() < 0.5)
        return Phrase(t1 + _relation_tokens(rng, rel, 0) + t2, Claim([m1, m2], [(rel, 0, 1)]))
    if style != "caption":
        raise ValueError(f"unknown style {style!r}")
    return _caption(scene, rng, order, positions)


def _caption(
    scene: Scene, rng: np.random.Generator, rule: MentionOrder, positions: bool = False
) -> Phrase:
    objs = scene.objects
    n = len(objs)
    order = mention_order(rng, objs, rule)
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
    if positions and n > 1:  # every object after where it is: "in the top left a red heart, ..."
        toks: list[Token] = []
        if rng.random() < 0.4:
            toks += [("there", None), ("are", None), (count, None), ("shapes", None), (":", None)]  # type: ignore[list-item]
        for mi in range(n):
            if mi > 0:
                toks.append(("and", None) if mi == n - 1 else (",", None))
            toks += _where_tokens(objs[order[mi]], mi, ms[mi]) + ment(mi)
        return Phrase(toks, claim)
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


def captions_for(
    scene: Scene,
    rng: np.random.Generator,
    n: int,
    order: MentionOrder = "random",
    positions: bool = False,
) -> list[Phrase]:
    """``n`` captions of a scene, distinct where the templates allow."""
    return distinct(lambda: describe(scene, rng, "caption", order, positions), n)


def distinct(draw: Callable[[], Phrase], n: int) -> list[Phrase]:
    """``n`` phrases from ``draw``, distinct where it allows (as a dataset's five references)."""
    out: list[Phrase] = []
    seen: set[str] = set()
    for _ in range(20 * n):
        p = draw()
        if p.text not in seen:
            seen.add(p.text)
            out.append(p)
            if len(out) == n:
                return out
    while len(out) < n:  # tiny worlds can run out of distinct captions
        out.append(draw())
    return out


def caption_words(text: str) -> list[str]:
    """Karpathy-style tokens: lowercase words, punctuation dropped."""
    for p in ".,:;!?":
        text = text.replace(p, " ")
    return text.lower().split()
