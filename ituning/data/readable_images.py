"""Which image files decode, remembered across runs by path, size and modification time.

Decoding every image of COCO and Visual Genome takes minutes. The sweep's preflight decodes each
once and a run that skips bad images (``data.skip_bad_images``) needs the same answer, so both ask
here, and an image that decoded before, unchanged since, is not decoded again. The record lives in
the user's cache folder (``$XDG_CACHE_HOME/ituning/readable_images.json``, by default under
``~/.cache``), not in the runs folder: a preflight that finds problems writes nothing there.
Only successes are remembered: a bad file is decoded (and reported) again until it is replaced.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ituning.errors import DataError
from ituning.files import atomic_write_json, user_cache_file


def image_check_cache() -> Path:
    """Where decoded images are remembered (see the module's docstring)."""
    return user_cache_file("readable_images.json")


def unreadable_images(
    paths: Iterable[Path], cache: Path | None = None, *, progress: bool = True
) -> dict[Path, str]:
    """Every image of ``paths`` decoded once (``ituning.data.images.load_image``, as training
    reads it): the ones that fail, with why. Files that decoded before, unchanged since, are
    skipped (``cache``)."""
    from ituning.data.images import load_image

    cache = cache or image_check_cache()
    known = _read_cache(cache)
    todo, stamps = [], {}
    for path in dict.fromkeys(paths):
        try:
            st = path.stat()
        except OSError:
            todo.append(path)
            continue
        stamps[path] = [st.st_size, st.st_mtime_ns]
        if known.get(str(path)) != stamps[path]:
            todo.append(path)

    def decode(path: Path) -> str | None:
        try:
            load_image(path)
        except DataError as exc:
            return str(exc)
        return None

    bad: dict[Path, str] = {}
    if todo:
        from tqdm import tqdm

        with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
            results = pool.map(decode, todo)
            bar = tqdm(
                results, total=len(todo), desc="preflight: decoding images", disable=not progress
            )
            for path, why in zip(todo, bar, strict=True):
                if why is None:
                    known[str(path)] = stamps[path]
                else:
                    bad[path] = why
        _write_cache(cache, known)
    return bad


def _read_cache(cache: Path) -> dict[str, list[int]]:
    try:
        raw = json.loads(cache.read_text())
        return raw if isinstance(raw, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache: Path, known: dict[str, list[int]]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cache, known)
