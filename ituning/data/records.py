"""One record type for every caption source (COCO, Flickr30k, NoCaps, Visual Genome, Shapes).

Every reader turns its format into :class:`CaptionRecord` s inside a :class:`CaptionDataset`, so
training, decoding, evaluation and the feature cache never look at a source format again.

Image ids are ``"<dataset>:<natural id>"`` (``coco:391895``, ``flickr30k:1000092795``,
``visual_genome:1``, ``nocaps:0``). The natural ids of different sources overlap (Visual Genome's
numbering collides with COCO's), and the feature cache and result files key by image id, so the
prefix is what keeps a COCO image from ever receiving a Visual Genome image's features.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ituning.data.paths import resolve_image, safe_relpath
from ituning.errors import DataError

SPLITS = ("train", "val", "test", "nocaps_val", "nocaps_test", "vlp")
NOCAPS_DOMAINS = ("in-domain", "near-domain", "out-of-domain")


def make_image_id(dataset: str, natural_id: object) -> str:
    """The dataset-qualified id every reader uses (see the module docstring)."""
    return f"{dataset}:{natural_id}"


def natural_id(image_id: str) -> str:
    """The source's own id (``"coco:391895"`` -> ``"391895"``), e.g. for evaluation-server files."""
    return image_id.split(":", 1)[1] if ":" in image_id else image_id


@dataclass(frozen=True)
class CaptionRecord:
    """One image and its reference captions (or region phrases, for VLP)."""

    image_id: str
    file: str
    split: str
    captions: tuple[str, ...]
    domain: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.image_id, str) or not self.image_id:
            raise DataError(
                f"CaptionRecord: image_id must be a non-empty string, got {self.image_id!r}"
            )
        object.__setattr__(
            self, "file", safe_relpath(self.file, where=f"record {self.image_id}: file")
        )
        if self.split not in SPLITS:
            raise DataError(
                f"record {self.image_id}: unknown split {self.split!r}; expected one of {SPLITS}"
            )
        if self.domain is not None and self.domain not in NOCAPS_DOMAINS:
            raise DataError(
                f"record {self.image_id}: unknown domain {self.domain!r}; "
                f"expected one of {NOCAPS_DOMAINS}"
            )
        object.__setattr__(self, "captions", tuple(self.captions))
        if not all(isinstance(c, str) for c in self.captions):
            raise DataError(f"record {self.image_id}: every caption must be a string")
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def __hash__(self) -> int:
        return hash(self.image_id)


@dataclass(frozen=True)
class CaptionDataset:
    """Records of one source below one image root; ids are unique within it."""

    name: str
    image_root: Path
    records: tuple[CaptionRecord, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_root", Path(self.image_root))
        object.__setattr__(self, "records", tuple(self.records))
        ids = Counter(r.image_id for r in self.records)
        dup = next((i for i, n in ids.items() if n > 1), None)
        if dup is not None:
            raise DataError(f"dataset {self.name!r}: image_id {dup!r} appears {ids[dup]} times")
        object.__setattr__(self, "_by_id", {r.image_id: r for r in self.records})

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[CaptionRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> CaptionRecord:
        return self.records[index]

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names present, in :data:`SPLITS` order."""
        present = {r.split for r in self.records}
        return tuple(s for s in SPLITS if s in present)

    @property
    def num_captions(self) -> int:
        return sum(len(r.captions) for r in self.records)

    def split(self, name: str) -> CaptionDataset:
        """The records of split ``name`` (``restval`` was already folded into ``train``)."""
        if name not in SPLITS:
            raise DataError(
                f"dataset {self.name!r}: unknown split {name!r}; expected one of {SPLITS}"
            )
        if name not in self.splits:
            raise DataError(
                f"dataset {self.name!r} has no {name!r} split (it has: {', '.join(self.splits) or 'none'})"
            )
        return self.filter(lambda r: r.split == name)

    def filter(self, keep: Callable[[CaptionRecord], bool]) -> CaptionDataset:
        return CaptionDataset(self.name, self.image_root, tuple(r for r in self.records if keep(r)))

    def without(self, image_ids: Iterable[str]) -> CaptionDataset:
        """Drop some images, e.g. the ones feature extraction skipped as unreadable."""
        drop = set(image_ids)
        return self.filter(lambda r: r.image_id not in drop)

    def get(self, image_id: str) -> CaptionRecord:
        try:
            return self._by_id[image_id]  # type: ignore[attr-defined]
        except KeyError:
            raise DataError(f"dataset {self.name!r} has no image {image_id!r}") from None

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._by_id  # type: ignore[attr-defined]

    def image_path(self, rec: CaptionRecord) -> Path:
        return resolve_image(self.image_root, rec.file, where=f"record {rec.image_id}: file")


def build_dataset(
    name: str, image_root: Path | str, records: Iterable[CaptionRecord], *, source: str
) -> CaptionDataset:
    """A :class:`CaptionDataset` whose validation errors also name the ``source`` file."""
    try:
        return CaptionDataset(name, Path(image_root), tuple(records))
    except DataError as exc:
        raise DataError(f"{source}: {exc}") from None
