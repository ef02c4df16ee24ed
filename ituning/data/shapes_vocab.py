"""The Shapes world's vocabulary: attribute classes, the words that name them, and the reverse map.

One place defines which words mean which class so that the caption generator, the backbones'
pre-training and the "objects named correctly" metric can never disagree. Synonyms exist (as in
COCO, several words name one thing) so that five reference captions differ and consensus metrics
such as CIDEr mean something.
"""

from __future__ import annotations

from types import MappingProxyType

#: Shape classes, in a fixed order (class ids are indices). The out-of-domain shape is chosen by
#: the world configuration (``star`` by default) and must be one of these.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "heart", "star")

#: Colour classes and their nominal RGB (rendering adds a little jitter).
COLOUR_RGB: MappingProxyType[str, tuple[int, int, int]] = MappingProxyType(
    {
        "red": (215, 35, 35),
        "green": (30, 160, 60),
        "blue": (35, 75, 215),
        "yellow": (235, 200, 20),
        "purple": (135, 50, 185),
        "orange": (245, 125, 15),
    }
)
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)

SIZES: tuple[str, ...] = ("small", "large")

#: Grid columns (horizontal position) and rows (vertical position); objects sit in a 3x3 grid.
COLUMNS: tuple[str, ...] = ("left", "centre", "right")
ROWS: tuple[str, ...] = ("top", "middle", "bottom")
#: Words a caption names the centre cell with ("in the middle"); a position phrase that leaves an
#: axis out means its centre one ("on the left": the middle row).
CENTRE_CELL_WORDS: tuple[str, ...] = ("middle", "centre", "center")

#: Relations between two objects: ``left_of`` means "the first is in a column left of the second".
RELATIONS: tuple[str, ...] = ("left_of", "right_of", "above", "below")
OPPOSITE_RELATION: MappingProxyType[str, str] = MappingProxyType(
    {"left_of": "right_of", "right_of": "left_of", "above": "below", "below": "above"}
)

#: Words for each class; the first is the canonical one.
SHAPE_WORDS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "circle": ("circle", "disc"),
        "square": ("square", "box"),
        "triangle": ("triangle",),
        "diamond": ("diamond", "rhombus"),
        "cross": ("cross", "plus"),
        "heart": ("heart",),
        "star": ("star",),
    }
)
COLOUR_WORDS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {c: (c,) if c != "purple" else ("purple", "violet") for c in COLOURS}
)
SIZE_WORDS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {"small": ("small", "little", "tiny"), "large": ("large", "big")}
)
#: Multi-word relation phrases; the tagged (swappable) word is the one in RELATION_KEY_WORD.
RELATION_PHRASES: MappingProxyType[str, tuple[tuple[str, ...], ...]] = MappingProxyType(
    {
        "left_of": (("to", "the", "left", "of"), ("left", "of")),
        "right_of": (("to", "the", "right", "of"), ("right", "of")),
        "above": (("above",), ("over",)),
        "below": (("below",), ("under",), ("beneath",)),
    }
)

ATTRIBUTE_WORDS: MappingProxyType[str, MappingProxyType[str, tuple[str, ...]]] = MappingProxyType(
    {"shape": SHAPE_WORDS, "colour": COLOUR_WORDS, "size": SIZE_WORDS}
)

#: The register of Shapes-Flickr, the second captioning dataset (``shapes_flickr``): other
#: synonyms for the same classes (the plain word first, so the two datasets share it), as Flickr30k's
#: captions use other words than COCO's for the same things.
FLICKR_ATTRIBUTE_WORDS: MappingProxyType[str, MappingProxyType[str, tuple[str, ...]]] = (
    MappingProxyType(
        {
            "shape": MappingProxyType(
                {
                    "circle": ("circle", "disk", "dot"),
                    "square": ("square", "tile", "block"),
                    "triangle": ("triangle", "wedge"),
                    "diamond": ("diamond", "lozenge"),
                    "cross": ("cross", "plus"),
                    "heart": ("heart",),
                    "star": ("star",),
                }
            ),
            "colour": MappingProxyType(
                {
                    "red": ("red", "crimson", "scarlet"),
                    "green": ("green", "emerald"),
                    "blue": ("blue", "navy"),
                    "yellow": ("yellow", "golden"),
                    "purple": ("purple", "plum"),
                    "orange": ("orange", "amber"),
                }
            ),
            "size": MappingProxyType(
                {"small": ("small", "tiny", "miniature"), "large": ("large", "huge", "chunky")}
            ),
        }
    )
)
#: Shapes-Flickr names the background (plain, gradient, noisy) by one of these adjectives.
BACKGROUND_WORDS: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {"plain": ("plain", "flat"), "gradient": ("shaded", "fading"), "noise": ("speckled", "grainy")}
)


def _build_word_map() -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for register in (ATTRIBUTE_WORDS, FLICKR_ATTRIBUTE_WORDS):
        for attribute, classes in register.items():
            for cls, words in classes.items():
                for w in words:
                    out[w] = (attribute, cls)
    for w in ("left", "right"):
        out[w] = ("position", w)
    for w in ("top", "bottom"):
        out[w] = ("position", w)
    for w in CENTRE_CELL_WORDS:
        out[w] = ("position", "centre")
    for rel, phrases in RELATION_PHRASES.items():
        for phrase in phrases:
            if len(phrase) == 1:
                out[phrase[0]] = ("relation", rel)
    return out


#: ``word -> (attribute, class)`` for every attribute word, e.g. ``"disc" -> ("shape", "circle")``,
#: ``"violet" -> ("colour", "purple")``, ``"big" -> ("size", "large")``, ``"under" ->
#: ("relation", "below")``. "left"/"right" map to positions (they also occur in relations).
WORD_CLASSES: MappingProxyType[str, tuple[str, str]] = MappingProxyType(_build_word_map())

#: Every word any Shapes text can contain (template words included), for tokenizer coverage tests.
TEMPLATE_WORDS: tuple[str, ...] = (
    "a", "an", "the", "and", "there", "is", "are", "of", "on", "in", "at", "to", "picture",
    "image", "two", "three", "shapes", "corner",
    # Shapes-Flickr's templates
    "single", "one", "lone", "just", "pair", "trio", "group", "alone", "with", "from", "then",
    "reading", "sits", "rests", "lies", "backdrop", "background",
)  # fmt: skip
PUNCTUATION: tuple[str, ...] = (".", ",", ":")


def all_words() -> tuple[str, ...]:
    """Sorted vocabulary of all words (no punctuation) that Shapes texts may use."""
    words = set(TEMPLATE_WORDS) | set(WORD_CLASSES)
    words.update(w for ws in BACKGROUND_WORDS.values() for w in ws)
    for phrases in RELATION_PHRASES.values():
        for phrase in phrases:
            words.update(phrase)
    return tuple(sorted(words))


def attribute_words(attribute: str) -> dict[str, str]:
    """``word -> class`` of one attribute (``"shape"``, ``"colour"``, ...), synonyms included: the
    lexicons the object metrics read captions with."""
    return {w: c for w, (a, c) in WORD_CLASSES.items() if a == attribute}


def shape_of(word: str) -> str | None:
    """The shape class a word names, or None (case-insensitive)."""
    hit = WORD_CLASSES.get(word.lower())
    return hit[1] if hit and hit[0] == "shape" else None
