"""COCO-style caption results files: ``[{"image_id": ..., "caption": ...}, ...]``.

The format the COCO and NoCaps evaluation servers accept. ``image_id`` is written as an int when every
id is a digit string (COCO, NoCaps), else as the string itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from ituning.errors import DataError
from ituning.files import atomic_write_json


def write_coco_results(predictions: Mapping[str, str], path: str | os.PathLike[str]) -> None:
    """Write predictions atomically (temporary file + rename), sorted by image id."""
    path = Path(path)
    ids = [str(k) for k in predictions]
    numeric = all(i.isdigit() for i in ids)
    captions = {str(k): v for k, v in predictions.items()}
    bad = [i for i, c in captions.items() if not isinstance(c, str)]
    if bad:
        raise DataError(
            f"{len(bad)} predictions are not strings (e.g. {bad[:3]}); cannot write {path}"
        )
    order = sorted(ids, key=int) if numeric else sorted(ids)
    rows = [{"image_id": int(i) if numeric else i, "caption": captions[i]} for i in order]
    atomic_write_json(path, rows, ensure_ascii=False, indent=0)


def read_coco_results(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a results file into ``{str(image_id): caption}``; reject malformed or duplicate rows."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"results file {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"results file {path} is not valid JSON ({exc})") from None
    if not isinstance(rows, list):
        raise DataError(
            f"results file {path} must hold a JSON list of {{image_id, caption}} objects"
        )
    out: dict[str, str] = {}
    for n, row in enumerate(rows):
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("image_id"), int | str)
            or isinstance(row.get("image_id"), bool)
            or not isinstance(row.get("caption"), str)
        ):
            raise DataError(
                f'results file {path}, entry {n}: expected {{"image_id": int|str, "caption": str}}'
            )
        key = str(row["image_id"])
        if key in out:
            raise DataError(f"results file {path} has image_id {key} twice (entry {n})")
        out[key] = row["caption"]
    return out
