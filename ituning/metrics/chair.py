"""CHAIR: object hallucination in COCO captions (Rohrbach, Hendricks et al., EMNLP 2018).

An image's objects are the COCO categories of its instance annotations together with the
categories its reference captions name. A generated caption's mentions are its words (and
two-word names such as "teddy bear") that the published synonym list maps to a category; a
mention hallucinates when its category is not among the image's objects.

* CHAIR-i: hallucinated mentions / all mentions (every occurrence counts);
* CHAIR-s: captions with at least one hallucinated mention / all captions.

The synonym list is the one the CHAIR authors published (``synonyms.txt``: one category a line,
its synonyms after it, comma-separated); it is read from the data root, not shipped. The
authors' rules for COCO's wording are kept: a qualifier before an animal or vehicle ("baby
elephant", "passenger train") does not name a person, "bow tie" is a tie, and a "seat" beside a
"toilet" is not a chair. Plurals are reduced by suffix rules guided by the synonym vocabulary (the
authors used ``pattern.en``), so a plural a rule misses counts as no mention, never as a wrong one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ituning.errors import DataError

_WORD = re.compile(r"[a-z]+")
_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")
_QUALIFIED = {
    **{f"{q} {a}": a for q in ("baby", "adult") for a in (*_ANIMALS, "animal", "cub")},
    **{f"passenger {v}": v for v in ("jet", "train")},
    "bow tie": "tie",
}
_IRREGULAR = {
    "men": "man",
    "women": "woman",
    "children": "child",
    "people": "person",
    "mice": "mouse",
}


@dataclass(frozen=True)
class ChairScores:
    captions: int
    hallucinated_captions: int
    mentions: int
    hallucinated_mentions: int

    @property
    def chair_s(self) -> float | None:
        return self.hallucinated_captions / self.captions if self.captions else None

    @property
    def chair_i(self) -> float | None:
        return self.hallucinated_mentions / self.mentions if self.mentions else None


class Chair:
    """Category matcher built from the published synonym list."""

    def __init__(self, synonym_lines: Iterable[str]) -> None:
        self.category: dict[str, str] = {}  # word or two-word name -> its category
        for n, line in enumerate(synonym_lines, 1):
            names = [s.strip().lower() for s in line.split(",") if s.strip()]
            if not names:
                continue
            for name in names:
                if self.category.get(name, names[0]) != names[0]:
                    raise DataError(
                        f"synonym list line {n}: {name!r} names both "
                        f"{self.category[name]!r} and {names[0]!r}"
                    )
                self.category[name] = names[0]
        if not self.category:
            raise DataError("synonym list is empty: expected 'category, synonym, ...' lines")
        self.categories = set(self.category.values())
        # single words of every name (two-word names and the qualifier rules included)
        self.vocab = {w for name in [*self.category, *_QUALIFIED] for w in name.split()}

    @classmethod
    def from_file(cls, path: Path | str) -> Chair:
        path = Path(path)
        if not path.is_file():
            raise DataError(
                f"{path}: missing; put the CHAIR synonym list there (synonyms.txt of the CHAIR "
                "authors' code, one 'category, synonym, ...' line per COCO category)"
            )
        return cls(path.read_text(encoding="utf-8").splitlines())

    def _singular(self, word: str) -> str:
        if word in self.vocab:
            return word
        if word in _IRREGULAR:
            return _IRREGULAR[word]
        for suffix, stem in (("ies", "y"), ("ves", "fe"), ("ves", "f"), ("es", ""), ("s", "")):
            if word.endswith(suffix) and word[: -len(suffix)] + stem in self.vocab:
                return word[: -len(suffix)] + stem
        return word

    def mentions(self, caption: str) -> list[str]:
        """The category of every object mention in ``caption``, in order."""
        words = [self._singular(w) for w in _WORD.findall(caption.lower())]
        found, i = [], 0
        while i < len(words):
            pair = " ".join(words[i : i + 2])
            if pair in _QUALIFIED and _QUALIFIED[pair] in self.category:
                found.append(self.category[_QUALIFIED[pair]])
                i += 2
            elif pair in self.category:
                found.append(self.category[pair])
                i += 2
            else:
                if words[i] in self.category and not (words[i] == "seat" and "toilet" in words):
                    found.append(self.category[words[i]])
                i += 1
        return found

    def image_objects(
        self, instances: Mapping[str, set[str]], references: Mapping[str, list[str]]
    ) -> dict[str, set[str]]:
        """Per image: its instance categories (names as COCO spells them, mapped through the
        list) and the categories its reference captions name."""
        out: dict[str, set[str]] = {}
        for image_id in set(instances) | set(references):
            named = {self.category.get(c.lower(), c.lower()) for c in instances.get(image_id, ())}
            for ref in references.get(image_id, ()):
                named.update(self.mentions(ref))
            out[image_id] = named
        return out

    def score(self, predictions: Mapping[str, str], objects: Mapping[str, set[str]]) -> ChairScores:
        missing = [k for k in predictions if k not in objects]
        if missing:
            raise DataError(
                f"{len(missing)} captioned images have no COCO objects (e.g. "
                f"{sorted(missing)[:3]}): are the instance annotations of the right split?"
            )
        caps = bad_caps = mentions = bad = 0
        for image_id, caption in predictions.items():
            found = self.mentions(caption)
            wrong = sum(c not in objects[image_id] for c in found)
            caps += 1
            bad_caps += wrong > 0
            mentions += len(found)
            bad += wrong
        return ChairScores(caps, bad_caps, mentions, bad)


def read_instances(path: Path | str, image_ids: Iterable[str] | None = None) -> dict[str, set[str]]:
    """COCO instance annotations (``instances_val2014.json``) as image id (text) -> category
    names; only ``image_ids`` if given. One line naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: missing; put COCO 2014's instances_val2014.json there (from "
            "annotations_trainval2014.zip) to score object hallucination (CHAIR)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        names = {int(c["id"]): str(c["name"]) for c in raw["categories"]}
        wanted = None if image_ids is None else {str(i) for i in image_ids}
        out: dict[str, set[str]] = {}
        for ann in raw["annotations"]:
            key = str(ann["image_id"])
            if wanted is None or key in wanted:
                out.setdefault(key, set()).add(names[int(ann["category_id"])])
        for image in raw.get("images", []):
            key = str(image["id"])
            if wanted is None or key in wanted:
                out.setdefault(key, set())
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: not COCO instance annotations ({type(exc).__name__}: {exc}); expected "
            "'categories' and 'annotations' with image_id and category_id"
        ) from None
    return out
