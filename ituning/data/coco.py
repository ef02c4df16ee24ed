"""The COCO Karpathy split built from the official 2014 caption annotations.

``dataset_coco.json`` is not always at hand; the official ``captions_train2014.json`` /
``captions_val2014.json`` plus the Karpathy test and val image lists (shipped in
``ituning/data/coco_karpathy/``) give the same split: test and val are the listed 5,000 images each,
train is every other image of COCO 2014 train and val (82,783 "train" + 30,504 "restval" =
113,287). Records match :func:`~ituning.data.karpathy.read_karpathy` on ``dataset_coco.json``: same
ids (``coco:<id>``), same files (``train2014/...``, ``val2014/...``), same ``karpathy_split``.

The annotations may come from a folder, two files, or a zip/jar holding them; pycocoevalcap's SPICE
jar carries the full 2014 caption annotations (:func:`pycocoevalcap_coco_archive`), which is how the
real test references are available offline even without the images.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ituning.data.jsonfile import need, need_list, read_json, read_json_member
from ituning.data.karpathy import check_split_names
from ituning.data.paths import require_images, safe_relpath
from ituning.data.records import CaptionDataset, CaptionRecord, build_dataset, make_image_id
from ituning.errors import DataError
from ituning.files import read_regular

ANNOTATION_FOLDERS = ("train2014", "val2014")


def pycocoevalcap_coco_archive() -> Path | None:
    """The jar inside the installed pycocoevalcap that holds COCO 2014 captions, if present."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    jar = Path(next(iter(spec.submodule_search_locations))) / "spice" / "spice-1.0.jar"
    return jar if jar.is_file() else None


def _load_annotations(source: Path | str | Sequence[Path | str]) -> list[tuple[str, str, Any]]:
    """``(folder, where, parsed JSON)`` for each of ``captions_{train,val}2014.json``."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = [path / f"captions_{f}.json" for f in ANNOTATION_FOLDERS]
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
            out = []
            for folder in ANNOTATION_FOLDERS:
                member = next((n for n in names if n.endswith(f"captions_{folder}.json")), None)
                if member is None:
                    raise DataError(f"{path}: archive holds no captions_{folder}.json")
                out.append((folder, f"{path.name}!{member}", read_json_member(path, member)))
            return out
        elif path.exists():
            raise DataError(
                f"{path}: expected a folder with captions_train2014.json and captions_val2014.json, "
                "those two files, or a zip holding them"
            )
        else:
            raise DataError(f"{path}: not found (COCO caption annotations)")
    else:
        files = [Path(p) for p in source]
    out = []
    for f in files:
        stem = f.stem
        if not stem.startswith("captions_"):
            raise DataError(
                f"{f}: expected a file named captions_<folder>.json (e.g. captions_val2014.json)"
            )
        out.append((stem[len("captions_") :], f.name, read_json(f)))
    return out


def _read_list(name: str, lists_dir: Path | None) -> tuple[str, list[str]]:
    if lists_dir is None:
        res = importlib.resources.files("ituning.data").joinpath("coco_karpathy").joinpath(name)
        where, text = f"ituning/data/coco_karpathy/{name}", res.read_text(encoding="utf-8")
    else:
        path = Path(lists_dir) / name
        data = read_regular(
            path, "Karpathy image list", 16 << 20, form="text file", size="a few hundred KB",
            error=DataError,
        )  # fmt: skip
        where, text = str(path), data.decode("utf-8", errors="replace")
    return where, [line.strip() for line in text.splitlines() if line.strip()]


def build_coco_karpathy(
    captions: Path | str | Sequence[Path | str],
    image_root: Path | str,
    *,
    splits: Iterable[str] | None = None,
    check_images: bool = True,
    lists_dir: Path | str | None = None,
) -> CaptionDataset:
    """Build the Karpathy COCO split from official annotations (see the module docstring).

    ``captions``: a folder with ``captions_train2014.json`` and ``captions_val2014.json``, those
    files, or a zip/jar holding them. ``lists_dir`` overrides the shipped
    ``test_images.txt``/``val_images.txt``.
    """
    wanted = check_split_names(splits, "build_coco_karpathy")
    lists_dir = Path(lists_dir) if lists_dir is not None else None
    by_name: dict[str, str] = {}
    list_where: dict[str, str] = {}
    for split, fname in (("test", "test_images.txt"), ("val", "val_images.txt")):
        where, names = _read_list(fname, lists_dir)
        for lineno, n in enumerate(names, 1):
            if n in by_name:
                raise DataError(
                    f"{where}:{lineno}: {n} is already listed in the {by_name[n]} split; "
                    "the Karpathy lists must be disjoint"
                )
            by_name[n] = split
            list_where[n] = f"{where}:{lineno}"

    records: list[CaptionRecord] = []
    checks: list[tuple[str, str]] = []
    seen: set[str] = set()
    for folder, src, data in _load_annotations(captions):
        images = need_list(data, "images", f"{src}:")
        caps: dict[int, list[tuple[int, str]]] = {}
        known = set()
        for i, img in enumerate(images):
            known.add(need(img, "id", f"{src}: images[{i}]", int))
        for i, ann in enumerate(need_list(data, "annotations", f"{src}:")):
            where = f"{src}: annotations[{i}]"
            image_id = need(ann, "image_id", where, int)
            if image_id not in known:
                raise DataError(f"{where}.image_id: {image_id} is not in {src}'s images")
            text = need(ann, "caption", where, str).strip()
            if text:
                caps.setdefault(image_id, []).append((need(ann, "id", where, int), text))
        for i, img in enumerate(images):
            where = f"{src}: images[{i}]"
            cid = img["id"]
            name = need(img, "file_name", where, str)
            seen.add(name)
            split = by_name.get(name, "train")
            karpathy_split = (
                split if split != "train" else ("train" if folder == "train2014" else "restval")
            )
            if wanted is not None and split not in wanted:
                continue
            file = safe_relpath(f"{folder}/{name}", where=f"{where}.file_name")
            meta = {"cocoid": cid, "karpathy_split": karpathy_split}
            for key in ("width", "height"):
                if key in img:
                    meta[key] = img[key]
            records.append(
                CaptionRecord(
                    image_id=make_image_id("coco", cid),
                    file=file,
                    split=split,
                    captions=tuple(t for _, t in sorted(caps.get(cid, []))),
                    meta=meta,
                )
            )
            checks.append((file, f"{where}.file_name"))
    absent = [n for n in by_name if n not in seen]
    if absent:
        raise DataError(
            f"{list_where[absent[0]]}: {absent[0]} is not in the caption annotations "
            f"({len(absent)} listed images absent; are both captions_train2014.json and "
            "captions_val2014.json given?)"
        )
    if check_images:
        require_images(Path(image_root), checks)
    return build_dataset("coco", image_root, records, source="build_coco_karpathy")
