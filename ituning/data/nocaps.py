"""NoCaps (``nocaps_val_4500_captions.json``): images with a domain label and ~10 captions each.

Format: COCO-style ``{"images": [{"id", "file_name", "domain", "height", "width", ...}],
"annotations": [{"image_id", "id", "caption"}]}`` with ``domain`` one of ``in-domain``,
``near-domain``, ``out-of-domain``. An image-info file without ``annotations`` (the test split)
reads as records with no captions. The Shapes world writes its NoCaps-style set in this format.
"""

from __future__ import annotations

from pathlib import Path

from ituning.data.jsonfile import need, need_list, read_json
from ituning.data.paths import require_images, safe_relpath
from ituning.data.records import (
    NOCAPS_DOMAINS,
    CaptionDataset,
    CaptionRecord,
    build_dataset,
    make_image_id,
)
from ituning.errors import DataError

_NOT_META = {"id", "file_name", "domain"}


def read_nocaps(
    json_path: Path | str,
    image_root: Path | str,
    *,
    check_images: bool = True,
    name: str = "nocaps",
    split: str = "nocaps_val",
) -> CaptionDataset:
    """Read NoCaps-format captions; ids are ``"<name>:<id>"``, the domain is ``record.domain``."""
    json_path = Path(json_path)
    src = json_path.name
    data = read_json(json_path)
    images = need_list(data, "images", f"{src}:")

    caps: dict[int, list[tuple[int, str]]] = {}
    entries = []
    known: set[int] = set()
    for i, img in enumerate(images):
        where = f"{src}: images[{i}]"
        iid = need(img, "id", where, int)
        if iid in known:
            raise DataError(f"{where}.id: image id {iid} appears twice")
        known.add(iid)
        domain = need(img, "domain", where, str)
        if domain not in NOCAPS_DOMAINS:
            raise DataError(
                f"{where}.domain: unknown domain {domain!r}; expected one of {', '.join(NOCAPS_DOMAINS)}"
            )
        file = safe_relpath(need(img, "file_name", where, str), where=f"{where}.file_name")
        entries.append((iid, domain, file, img, f"{where}.file_name"))
    annotations = need_list(data, "annotations", f"{src}:") if "annotations" in data else []
    for i, ann in enumerate(annotations):
        where = f"{src}: annotations[{i}]"
        iid = need(ann, "image_id", where, int)
        if iid not in known:
            raise DataError(f"{where}.image_id: {iid} is not in {src}'s images")
        text = need(ann, "caption", where, str).strip()
        if text:
            caps.setdefault(iid, []).append((need(ann, "id", where, int), text))

    records = [
        CaptionRecord(
            image_id=make_image_id(name, iid),
            file=file,
            split=split,
            captions=tuple(t for _, t in sorted(caps.get(iid, []))),
            domain=domain,
            meta={"nocaps_id": iid, **{k: v for k, v in img.items() if k not in _NOT_META}},
        )
        for iid, domain, file, img, _ in entries
    ]
    if check_images:
        require_images(Path(image_root), [(e[2], e[4]) for e in entries])
    return build_dataset(name, image_root, records, source=src)
