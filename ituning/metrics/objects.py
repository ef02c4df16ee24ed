"""Object recall, precision and repetition of captions, against each image's list of objects.

Naming precision (``grounding``) asks only whether a named shape is in the image, so a caption
that names one heart three times for a scene of a heart, a plus and another heart scores
perfectly. Here every object phrase (a colour and a shape word, e.g. "a little violet rhombus")
is matched against the image's objects as a multiset of (shape, colour):

* **recall**: the image's objects that some phrase names, each phrase used once (a scene of two
  red hearts needs two "red heart" phrases);
* **precision**: phrases whose (shape, colour) is in the image at all;
* **repetition**: phrases beyond the number of objects the image holds of that (shape, colour),
  e.g. the second and third "red heart" when the scene has one (a pair the image lacks counts
  once against precision, and each further mention of it as a repetition).

A shape word without a colour word before it (since the previous shape) is a phrase with no
colour: it never counts as correct, as the issue's "named with the right shape and colour" asks.
Counts are kept per number of objects in the image, because captions of one-object scenes are
easy and the failures sit in the three-object ones.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ituning.data.shapes_vocab import CENTRE_CELL_WORDS, COLUMNS, ROWS
from ituning.errors import DataError

_WORD = re.compile(r"[a-z]+")

Pair = tuple[str, str]  # (shape, colour)
CellPhrase = tuple[tuple[str, str] | None, str, str | None]  # (cell, shape, colour)


@dataclass
class ObjectCounts:
    """Totals over a set of images (one object count, or all)."""

    images: int = 0
    objects: int = 0
    recalled: int = 0
    phrases: int = 0
    correct: int = 0
    repeated: int = 0

    def add(self, other: ObjectCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def recall(self) -> float | None:
        return self.recalled / self.objects if self.objects else None

    @property
    def precision(self) -> float | None:
        return self.correct / self.phrases if self.phrases else None

    @property
    def repetition(self) -> float | None:
        return self.repeated / self.phrases if self.phrases else None


@dataclass
class ObjectScores:
    """:class:`ObjectCounts` over all images and per number of objects in the image."""

    overall: ObjectCounts = field(default_factory=ObjectCounts)
    by_count: dict[int, ObjectCounts] = field(default_factory=dict)

    def metrics(self, prefix: str) -> dict[str, float]:
        """``{prefix}/recall``, ``/precision``, ``/repetition``, ``/images``, and the same per
        object count (``{prefix}/n3/recall``): MLflow metric names."""
        out: dict[str, float] = {}
        groups = [(prefix, self.overall)]
        groups += [(f"{prefix}/n{n}", c) for n, c in sorted(self.by_count.items())]
        for where, counts in groups:
            for name in ("recall", "precision", "repetition"):
                value = getattr(counts, name)
                if value is not None:
                    out[f"{where}/{name}"] = value
            out[f"{where}/images"] = float(counts.images)
        return out


def object_phrases(
    caption: str, shapes: Mapping[str, str], colours: Mapping[str, str]
) -> list[tuple[str, str | None]]:
    """``(shape, colour or None)`` of every shape word in ``caption``, with the last colour word
    since the previous shape word. ``shapes``/``colours`` map words (synonyms included) to classes;
    a plural "-s"/"-es" is read as the singular."""
    return [(shape, colour) for _, shape, colour in cell_phrases(caption, shapes, colours)]


#: Position words of Shapes captions that name a row or a column (the centre ones are implied).
_ROW_WORDS = tuple(w for w in ROWS if w not in CENTRE_CELL_WORDS)
_COLUMN_WORDS = tuple(w for w in COLUMNS if w not in CENTRE_CELL_WORDS)


def cell_phrases(
    caption: str, shapes: Mapping[str, str], colours: Mapping[str, str]
) -> list[CellPhrase]:
    """``(cell, shape, colour or None)`` of every shape word, as :func:`object_phrases` reads it,
    with the grid cell ``(column, row)`` that the position words since the previous shape word
    name ("in the bottom left a red heart": ``("left", "bottom")``; "on the left": the middle
    row), or ``None`` where there are none. Shapes captions put an object's cell before it."""
    found: list[CellPhrase] = []
    colour: str | None = None
    column = row = None
    placed = False
    for word in _WORD.findall(caption.lower()):
        shape = _lookup(word, shapes)
        if shape is not None:
            cell = (column or COLUMNS[1], row or ROWS[1]) if placed else None
            found.append((cell, shape, colour))
            colour = column = row = None
            placed = False
        elif word in _ROW_WORDS or word in _COLUMN_WORDS or word in CENTRE_CELL_WORDS:
            row = word if word in _ROW_WORDS else row
            column = word if word in _COLUMN_WORDS else column
            placed = True
        else:
            colour = _lookup(word, colours) or colour
    return found


def _lookup(word: str, classes: Mapping[str, str]) -> str | None:
    if word in classes:
        return classes[word]
    for suffix in ("es", "s"):
        if word.endswith(suffix) and word[: -len(suffix)] in classes:
            return classes[word[: -len(suffix)]]
    return None


def caption_counts(
    caption: str,
    objects: Sequence[Pair],
    shapes: Mapping[str, str],
    colours: Mapping[str, str],
) -> ObjectCounts:
    """The counts of one caption against its image's objects ``[(shape, colour), ...]``."""
    held = Counter(objects)
    phrases = object_phrases(caption, shapes, colours)
    named = Counter(p for p in phrases if p[1] is not None)
    return ObjectCounts(
        images=1,
        objects=len(objects),
        recalled=sum(min(n, named[pair]) for pair, n in held.items()),
        phrases=len(phrases),
        correct=sum(n for pair, n in named.items() if pair in held),
        repeated=sum(max(0, n - max(held[pair], 1)) for pair, n in named.items()),
    )


def object_scores(
    predictions: Mapping[str, str],
    objects: Mapping[str, Sequence[Pair]],
    shapes: Mapping[str, str],
    colours: Mapping[str, str],
) -> ObjectScores:
    """Recall, precision and repetition of ``predictions`` (image id -> caption) against
    ``objects`` (image id -> its (shape, colour) pairs), overall and per object count."""
    missing = [k for k in predictions if k not in objects]
    if missing:
        raise DataError(
            f"{len(missing)} captioned images have no object list (e.g. {sorted(missing)[:3]}): "
            "give the objects of every predicted image"
        )
    scores = ObjectScores()
    for image_id, caption in predictions.items():
        counts = caption_counts(caption, objects[image_id], shapes, colours)
        scores.overall.add(counts)
        scores.by_count.setdefault(len(objects[image_id]), ObjectCounts()).add(counts)
    return scores
