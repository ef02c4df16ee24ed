"""Reading dataset JSON so that every failure names the file and the field.

Readers walk untrusted JSON; :func:`need` turns "missing key / wrong type" into one line such as
``dataset_coco.json: images[3].sentences[0].raw: missing`` instead of a KeyError deep in a loop.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from ituning.errors import DataError
from ituning.files import read_regular

#: The largest dataset file read (Visual Genome's region descriptions are about 0.7 GB).
MAX_JSON_BYTES = 4 << 30


def read_json(path: Path | str, *, top: type = dict) -> Any:
    """Parse ``path``; a missing, non-regular or oversized file, bad JSON or the wrong top-level
    type is a DataError."""
    data = read_regular(
        path, "file", MAX_JSON_BYTES, form="JSON file", size="at most 4 GiB of JSON here",
        error=DataError,
    )  # fmt: skip
    return parse_json(data, str(path), top=top)


def read_json_member(archive: Path | str, member: str, *, top: type = dict) -> Any:
    """Parse one JSON file inside a zip/jar archive (e.g. COCO captions inside SPICE's jar)."""
    where = f"{archive}!{member}"
    try:
        with zipfile.ZipFile(archive) as zf:
            text = zf.read(member)
    except FileNotFoundError:
        raise DataError(f"{archive}: file not found") from None
    except KeyError:
        raise DataError(f"{where}: no such member in the archive") from None
    except zipfile.BadZipFile as exc:
        raise DataError(f"{archive}: not a readable zip archive ({exc})") from None
    return parse_json(text, where, top=top)


def parse_json(text: bytes, where: str, *, top: type = dict) -> Any:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: malformed JSON ({exc})") from None
    except RecursionError:
        raise DataError(f"{where}: malformed JSON (nested too deeply to be a dataset)") from None
    if not isinstance(data, top):
        raise DataError(
            f"{where}: top level is {type(data).__name__}, expected a JSON "
            f"{'object' if top is dict else 'array'}"
        )
    return data


def need(obj: Any, key: str | int, where: str, typ: type | tuple[type, ...] | None = None) -> Any:
    """``obj[key]``, checked; ``where`` is the field path of ``obj`` (``file:`` or ``file: images[3]``)."""
    if isinstance(key, int):
        path = f"{where}[{key}]"
    else:  # a top-level key is written "file: key", a nested one "file: images[3].key"
        path = f"{where} {key}" if where.endswith(":") else f"{where}.{key}"
    if isinstance(key, str):
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if key not in obj:
            raise DataError(f"{path}: missing")
        value = obj[key]
    else:
        value = obj[key]
    if typ is not None and (not isinstance(value, typ) or (typ is int and isinstance(value, bool))):
        names = "/".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
        raise DataError(f"{path}: expected {names}, got {type(value).__name__} {value!r:.60}")
    return value


def need_list(obj: Any, key: str, where: str) -> list[Any]:
    return need(obj, key, where, list)
