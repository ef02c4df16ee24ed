"""Karpathy-split caption files: ``dataset_coco.json``, ``dataset_flickr30k.json``, ``dataset_shapes.json``.

Format: ``{"dataset": name, "images": [{"filepath"?, "filename", "imgid", "cocoid"?, "split",
"sentids", "sentences": [{"raw", "tokens", "imgid", "sentid"}]}]}``. ``restval`` counts as train (the
paper's 113.2k COCO training images); the original split stays in ``meta["karpathy_split"]``. Any
other per-image key (``imgid``, ``cocoid``, ``sentids``, the Shapes world's ``objects``) is kept in
``meta``. Captions are the ``raw`` sentences: evaluation tokenises references itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from ituning.data.jsonfile import need, need_list, read_json
from ituning.data.paths import require_images, safe_relpath
from ituning.data.records import CaptionDataset, CaptionRecord, build_dataset, make_image_id
from ituning.errors import DataError

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}
_NOT_META = {"filename", "filepath", "split", "sentences"}


def check_split_names(splits: Iterable[str] | None, where: str) -> set[str] | None:
    """Validate a requested subset of ``train``/``val``/``test``."""
    if splits is None:
        return None
    wanted = {splits} if isinstance(splits, str) else set(splits)
    bad = sorted(wanted - {"train", "val", "test"})
    if bad:
        raise DataError(f"{where}: unknown split {bad[0]!r} requested; expected train, val or test")
    return wanted


def read_karpathy(
    json_path: Path | str,
    image_root: Path | str,
    *,
    splits: Iterable[str] | None = None,
    check_images: bool = True,
    name: str | None = None,
) -> CaptionDataset:
    """Read a Karpathy-format file; ``splits`` keeps only those splits (``None``: all).

    Image ids are ``"<dataset>:<cocoid>"`` when the file has COCO ids, else ``"<dataset>:<file path
    without extension>"`` (``flickr30k:1000092795``, ``shapes:train/000123``). ``name`` overrides
    the file's ``"dataset"`` field.
    """
    json_path = Path(json_path)
    src = json_path.name
    wanted = check_split_names(splits, src)
    data = read_json(json_path)
    dataset = name if name is not None else need(data, "dataset", f"{src}:", str)
    if not dataset:
        raise DataError(f"{src}: dataset: empty dataset name")
    images = need_list(data, "images", f"{src}:")

    records: list[CaptionRecord] = []
    checks: list[tuple[str, str]] = []
    for i, img in enumerate(images):
        where = f"{src}: images[{i}]"
        if not isinstance(img, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(img).__name__}")
        raw_split = need(img, "split", where, str)
        if raw_split not in KARPATHY_SPLITS:
            raise DataError(
                f"{where}.split: unknown split {raw_split!r}; expected train, restval, val or test"
            )
        split = KARPATHY_SPLITS[raw_split]
        if wanted is not None and split not in wanted:
            continue
        filename = need(img, "filename", where, str)
        filepath = img.get("filepath")
        if filepath is not None and not isinstance(filepath, str):
            raise DataError(f"{where}.filepath: expected str, got {type(filepath).__name__}")
        file = safe_relpath(
            f"{filepath}/{filename}" if filepath else filename, where=f"{where}.filename"
        )
        if "cocoid" in img:
            natural: object = need(img, "cocoid", where, int)
        else:  # the path, not the stem: Shapes has train/000000.png and val/000000.png
            natural = str(PurePosixPath(file).with_suffix(""))
        captions = []
        for j, sent in enumerate(need_list(img, "sentences", where)):
            raw = need(sent, "raw", f"{where}.sentences[{j}]", str).strip()
            if raw:
                captions.append(raw)
        meta = {k: v for k, v in img.items() if k not in _NOT_META}
        meta["karpathy_split"] = raw_split
        records.append(
            CaptionRecord(
                image_id=make_image_id(dataset, natural),
                file=file,
                split=split,
                captions=tuple(captions),
                meta=meta,
            )
        )
        checks.append((file, f"{where}.filename"))
    if check_images:
        require_images(Path(image_root), checks)
    return build_dataset(dataset, image_root, records, source=src)
