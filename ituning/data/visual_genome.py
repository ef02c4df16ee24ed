"""Visual Genome region descriptions as vision-language pre-training (VLP) data.

Formats: ``region_descriptions.json`` = ``[{"id": image_id, "regions": [{"region_id", "image_id",
"phrase", "x", "y", "width", "height"}]}]`` and ``image_data.json`` = ``[{"image_id", "url",
"width", "height", "coco_id", "flickr_id"}]`` (version 1.0 names ``image_id`` ``id``; both are read).

One record per image: its ``captions`` are the region phrases, and ``meta["boxes"]`` holds the
matching ``(x, y, width, height)`` boxes (same order; ``meta["region_ids"]`` too). The image file is
the basename of ``url``, looked up as ``<folder>/<name>`` (the url's folder, ``VG_100K`` or
``VG_100K_2``), then ``<name>``, then under the other folder. ``exclude_coco_ids`` drops images that
are also COCO images, so pre-training cannot see COCO evaluation images.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from ituning.data.jsonfile import need, need_list, read_json
from ituning.data.paths import require_images, safe_relpath
from ituning.data.records import CaptionDataset, CaptionRecord, build_dataset, make_image_id
from ituning.errors import DataError

VG_FOLDERS = ("VG_100K", "VG_100K_2")


def _candidates(url: str, where: str) -> list[str]:
    pure = PurePosixPath(url.split("?", 1)[0])
    name = safe_relpath(pure.name, where=where)
    first = [f"{pure.parent.name}/{name}"] if pure.parent.name in VG_FOLDERS else []
    rest = [name] + [f"{d}/{name}" for d in VG_FOLDERS]
    return first + [c for c in rest if c not in first]


def read_visual_genome(
    region_json: Path | str,
    image_data_json: Path | str,
    image_root: Path | str,
    *,
    exclude_coco_ids: Iterable[int] = (),
    check_images: bool = True,
    name: str = "visual_genome",
    limit: int | None = None,
) -> CaptionDataset:
    """Read VG regions into VLP records (split ``"vlp"``, ids ``"<name>:<vg id>"``); with
    ``limit``, the first ``limit`` images only (their files alone are checked)."""
    region_json, image_data_json, root = Path(region_json), Path(image_data_json), Path(image_root)
    isrc = image_data_json.name
    excluded = {int(c) for c in exclude_coco_ids}

    info: dict[int, tuple[dict, list[str], str]] = {}
    for i, img in enumerate(read_json(image_data_json, top=list)):
        where = f"{isrc}: [{i}]"
        key = "image_id" if isinstance(img, dict) and "image_id" in img else "id"
        vid = need(img, key, where, int)
        url = need(img, "url", where, str)
        info[vid] = (img, _candidates(url, f"{where}.url"), f"{where}.url")

    rsrc = region_json.name
    records: list[CaptionRecord] = []
    checks: list[tuple[str, str]] = []
    for i, entry in enumerate(read_json(region_json, top=list)):
        if limit is not None and len(records) >= limit:
            break
        where = f"{rsrc}: [{i}]"
        key = "id" if isinstance(entry, dict) and "id" in entry else "image_id"
        vid = need(entry, key, where, int)
        if vid not in info:
            raise DataError(f"{where}.{key}: image {vid} is not in {isrc}")
        img, candidates, url_where = info[vid]
        coco_id = img.get("coco_id")
        if coco_id is not None and int(coco_id) in excluded:
            continue
        phrases, boxes, region_ids = [], [], []
        for j, reg in enumerate(need_list(entry, "regions", where)):
            rwhere = f"{where}.regions[{j}]"
            phrase = need(reg, "phrase", rwhere, str).strip()
            if not phrase:
                continue
            phrases.append(phrase)
            boxes.append(
                tuple(need(reg, k, rwhere, (int, float)) for k in ("x", "y", "width", "height"))
            )
            region_ids.append(reg.get("region_id"))
        if not phrases:
            continue
        file = candidates[0]
        if check_images:
            file = next((c for c in candidates if (root / c).is_file()), candidates[0])
        meta = {
            "vg_id": vid,
            "coco_id": coco_id,
            "flickr_id": img.get("flickr_id"),
            "width": img.get("width"),
            "height": img.get("height"),
            "boxes": tuple(boxes),
            "region_ids": tuple(region_ids),
        }
        records.append(
            CaptionRecord(
                image_id=make_image_id(name, vid),
                file=file,
                split="vlp",
                captions=tuple(phrases),
                meta=meta,
            )
        )
        checks.append((file, url_where))
    if check_images:
        require_images(root, checks)
    return build_dataset(name, root, records, source=rsrc)
