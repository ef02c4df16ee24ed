"""Shapes-Flickr: the ``mini`` profile's second captioning dataset, playing Flickr30k's part.

The paper's Table 1 scores every model on two datasets, MSCOCO and Flickr30k, each trained on its
own train split. Shapes-Flickr is a second task over the same rendered world, not a copy of the
Shapes captions: scenes are busier (mostly three objects, ``WorldConfig.flickr_object_count_probs``)
and captions speak another register: other synonyms (``FLICKR_ATTRIBUTE_WORDS``: "a tiny crimson
disk"), the background named ("on a speckled backdrop"), counts as phrases ("a trio of shapes"),
and objects listed "from left to right" instead of after their grid cells. The frozen backbones
stay the ones already pre-trained; their LM corpus includes this register, as GPT-2's text
included Flickr-like captions.

Splits keep Flickr30k's proportions (Karpathy: 29.8k / 1k / 1k) at a quarter of the Shapes train
split; every item comes from its own random stream (``flickr-train`` ...), so the dataset is
deterministic and disjoint from the Shapes splits. Scenes are in-domain (``seen``): the
out-of-domain shape and the withheld pairs stay out of caption training here too.
"""

from __future__ import annotations

import numpy as np

from ituning.data.shapes_captions import (
    Claim,
    Mention,
    Phrase,
    Token,
    _choose,
    _where_tokens,
    distinct,
    mention_order,
)
from ituning.data.shapes_scene import Scene, ShapeObject, WorldConfig, item_rng, sample_scene
from ituning.data.shapes_vocab import BACKGROUND_WORDS, FLICKR_ATTRIBUTE_WORDS

#: Karpathy ``dataset`` name; image ids are ``shapes_flickr:<file path>``, apart from Shapes'.
DATASET = "shapes_flickr"
CAPTIONS_FILE = f"dataset_{DATASET}.json"
#: Folder of its images under the world's image root.
IMAGE_FOLDER = "flickr"

_COUNT_PHRASES: dict[int, tuple[tuple[str, ...], ...]] = {
    2: (("a", "pair", "of", "shapes"), ("two", "shapes")),
    3: (
        ("a", "trio", "of", "shapes"),
        ("three", "shapes"),
        ("a", "group", "of", "three", "shapes"),
    ),
}
_ALONE = (("a", "single"), ("one", "lone"), ("just", "one"))
_ORDER = (
    ("from", "left", "to", "right"),
    ("left", "to", "right"),
    ("reading", "from", "the", "left"),
)
_VERBS = ("sits", "rests", "lies")


def flickr_world(world: WorldConfig) -> WorldConfig:
    """The rules Shapes-Flickr's scenes are drawn under: the world's, with its object counts."""
    return world.model_copy(update={"object_count_probs": world.flickr_object_count_probs})


def _plain(words: tuple[str, ...]) -> list[Token]:
    return [(w, None) for w in words]


def _mention(
    rng: np.random.Generator, obj: ShapeObject, mi: int, with_size: bool
) -> tuple[list[Token], Mention]:
    words = FLICKR_ATTRIBUTE_WORDS
    toks: list[Token] = [("a", None)]
    m = Mention(shape=obj.shape, colour=obj.colour)
    if with_size:
        toks.append((_choose(rng, words["size"][obj.size]), ("size", mi)))
        m.size = obj.size
    toks.append((_choose(rng, words["colour"][obj.colour]), ("colour", mi)))
    toks.append((_choose(rng, words["shape"][obj.shape]), ("shape", mi)))
    return toks, m


def _backdrop(rng: np.random.Generator, scene: Scene) -> list[Token]:
    adjective = _choose(rng, BACKGROUND_WORDS[scene.background.kind])
    return [("a", None), (adjective, None), (_choose(rng, ("backdrop", "background")), None)]


def flickr_caption(scene: Scene, rng: np.random.Generator) -> Phrase:
    """One Shapes-Flickr caption of ``scene``: objects in reading order (column by column from the
    left, top to bottom), "from left to right", often with the background and a count phrase."""
    objs = scene.objects
    n = len(objs)
    order = mention_order(rng, objs, "reading")
    with_size = rng.random() < 0.5
    mts = [_mention(rng, objs[k], mi, with_size) for mi, k in enumerate(order)]
    claim = Claim([m for _, m in mts])
    t = int(rng.integers(4))
    if n == 1:
        ment, m = mts[0]
        if t == 0:  # "a single tiny crimson disk sits on a speckled backdrop"
            toks = _plain(_choose(rng, _ALONE)) + ment[1:] + [(_choose(rng, _VERBS), None)]
            toks += [("on", None)] + _backdrop(rng, scene)
        elif t == 1:  # "a crimson disk, alone on a plain background"
            toks = ment + [(",", None), ("alone", None), ("on", None)] + _backdrop(rng, scene)
        elif t == 2:  # "a shaded backdrop with a golden wedge"
            toks = _backdrop(rng, scene) + [("with", None)] + ment
        else:  # "a navy tile sits in the top left"
            toks = ment + [(_choose(rng, _VERBS), None)] + _where_tokens(objs[order[0]], 0, m)
        return Phrase(toks, claim)
    listing: list[Token] = []
    for mi, (ment, _) in enumerate(mts):
        if mi > 0:
            listing.append(("and", None) if mi == n - 1 else (",", None))
        listing += ment
    count = _plain(_choose(rng, _COUNT_PHRASES[n]))
    if (
        t == 0
    ):  # "a trio of shapes on a grainy backdrop, from left to right: a ..., a ... and a ..."
        toks = count + [("on", None)] + _backdrop(rng, scene) + [(",", None)]
        toks += _plain(_choose(rng, _ORDER)) + [(":", None)] + listing
    elif t == 1:  # "from left to right, a ... and a ... on a flat background"
        toks = _plain(_choose(rng, _ORDER)) + [(",", None)] + listing + [("on", None)]
        toks += _backdrop(rng, scene)
    elif t == 2:  # "three shapes: a ..., then a ..., then a ..."
        toks = count + [(":", None)]
        for mi, (ment, _) in enumerate(mts):
            toks += ([(",", None), ("then", None)] if mi else []) + ment
    else:  # "a fading backdrop with a ..., a ... and a ..., left to right"
        toks = _backdrop(rng, scene) + [("with", None)] + listing + [(",", None)]
        toks += _plain(_choose(rng, _ORDER))
    return Phrase(toks, claim)


def flickr_captions(scene: Scene, rng: np.random.Generator, n: int) -> list[Phrase]:
    """``n`` captions of a scene, distinct where the templates allow."""
    return distinct(lambda: flickr_caption(scene, rng), n)


def flickr_item(seed: int, split: str, index: int, world: WorldConfig) -> tuple[Scene, list[str]]:
    """Item ``index`` of Shapes-Flickr's ``split``: its scene and reference captions."""
    rng = item_rng(seed, f"flickr-{split}", index)
    scene = sample_scene(rng, flickr_world(world), "seen")
    return scene, [p.text for p in flickr_captions(scene, rng, world.captions_per_image)]
