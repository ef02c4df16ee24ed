"""Grounding check for synthetic worlds: are the objects a caption names really in the image?

CIDEr rewards fluent, typical captions even when they name the wrong object (a prototype captioned
colours right and shapes wrong at a CIDEr above 1). Naming precision counts, over all generated
captions, how many object mentions name a class that is present in the image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ituning.errors import ConfigError, DataError

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class NamingCounts:
    """Result of :func:`naming_precision`.

    ``mentions``: lexicon words in the captions; ``correct``: those whose class is present in the
    image; ``precision`` = correct / mentions (None without mentions). ``present_nameable``/``present_named``: present classes the lexicon can name / that the
    caption did name (for recall). ``per_class``: class -> (correct, mentions).
    """

    mentions: int = 0
    correct: int = 0
    images: int = 0
    images_with_mentions: int = 0
    present_nameable: int = 0
    present_named: int = 0
    per_class: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def precision(self) -> float | None:
        return self.correct / self.mentions if self.mentions else None

    @property
    def recall(self) -> float | None:
        return self.present_named / self.present_nameable if self.present_nameable else None


class _Lexicon:
    """Phrase -> class matcher: longest phrase first, optional plural '-s'/'-es' on any word."""

    def __init__(self, lexicon: Mapping[str, str], plurals: bool) -> None:
        self.phrases: dict[tuple[str, ...], str] = {}
        for phrase, cls in lexicon.items():
            words = tuple(_words(phrase))
            if not words or not isinstance(cls, str) or not cls:
                raise ConfigError(
                    f"lexicon entry {phrase!r} -> {cls!r}: need a word and a class name"
                )
            if self.phrases.get(words, cls) != cls:
                raise ConfigError(
                    f"lexicon maps {' '.join(words)!r} to both {self.phrases[words]!r} and {cls!r}"
                )
            self.phrases[words] = cls
        self.vocab = {w for words in self.phrases for w in words}
        self.longest = max(len(w) for w in self.phrases)
        self.classes = set(self.phrases.values())
        self.plurals = plurals

    def _singular(self, word: str) -> str:
        if not self.plurals or word in self.vocab:
            return word
        for suffix in ("s", "es"):
            if word.endswith(suffix) and word[: -len(suffix)] in self.vocab:
                return word[: -len(suffix)]
        return word

    def mentions(self, caption: str) -> list[str]:
        words = [self._singular(w) for w in _words(caption)]
        found, i = [], 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                cls = self.phrases.get(tuple(words[i : i + n]))
                if cls is not None:
                    found.append(cls)
                    i += n
                    break
            else:
                i += 1
        return found


def naming_precision(
    predictions: Mapping[str, str],
    present: Mapping[str, set[str]],
    lexicon: Mapping[str, str],
    *,
    plurals: bool = True,
) -> NamingCounts:
    """Count object mentions in ``predictions`` and how many name a class ``present`` in the image.

    ``.precision`` is the share of mentions naming a present class (None without any mention).

    ``lexicon`` maps a word or phrase (case-insensitive; synonyms as separate entries) to its class;
    every occurrence in a caption is a mention. With ``plurals``, "circles"/"boxes" match "circle"/
    "box". Every predicted image needs an entry in ``present`` (class names as in the lexicon).
    """
    matcher = _Lexicon(lexicon, plurals)
    presence = {str(k): set(v) for k, v in present.items()}
    missing = [str(k) for k in predictions if str(k) not in presence]
    if missing:
        raise DataError(
            f"{len(missing)} captioned images have no object list (e.g. {sorted(missing)[:3]}): "
            "give present classes for every predicted image"
        )
    mentions = correct = with_mentions = nameable = named = 0
    per_class: dict[str, list[int]] = {}
    for image_id, caption in predictions.items():
        classes_here = presence[str(image_id)]
        found = matcher.mentions(caption)
        with_mentions += bool(found)
        for cls in found:
            hit = cls in classes_here
            mentions += 1
            correct += hit
            counts = per_class.setdefault(cls, [0, 0])
            counts[0] += hit
            counts[1] += 1
        nameable_here = classes_here & matcher.classes
        nameable += len(nameable_here)
        named += len(nameable_here & set(found))
    return NamingCounts(
        mentions=mentions,
        correct=correct,
        images=len(predictions),
        images_with_mentions=with_mentions,
        present_nameable=nameable,
        present_named=named,
        per_class={c: (v[0], v[1]) for c, v in sorted(per_class.items())},
    )
