"""Everything a sweep needs, checked before any point trains, each problem one line with its fix.

A GPU user must not learn after the backbones have loaded, or after hours, that a weight file is
not in the cache, that an image is truncated, that Java is missing or that the feature cache will
not fit on the disk. The profile lists what it can check (``Profile.problems``: data files, every
image decoded once, weights present locally, disk space), Java is checked for every profile, and
all problems are reported together (exit status 2), so one round of fixes is enough.

Decoding every image takes a while the first time (COCO + Visual Genome: minutes); an image that
decoded is remembered by path, size and modification time in the user's cache folder
(``$XDG_CACHE_HOME/ituning/readable_images.json``, by default under ``~/.cache``), so the next
preflight only decodes new or changed files. It is not kept in the runs folder: a preflight that
finds problems writes nothing there.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from ituning.errors import DataError, ITuningError
from ituning.files import atomic_write_json

if TYPE_CHECKING:
    from bench.sweep.plan import RunPlan
    from bench.sweep.profile import Profile

#: Bad images named one by one before the rest are counted.
SHOWN_BAD_IMAGES = 10
JAVA_FIX = "install a Java runtime (Debian: apt-get install openjdk-17-jre-headless)"


class PreflightError(ITuningError):
    """Every problem found, one ``error:`` line each (exit status 2)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\nerror: ".join(self.problems))


def problems(profile: Profile, plans: Sequence[RunPlan], *, progress: bool = True) -> list[str]:
    """What would stop ``plans`` under ``profile``, one line each with its fix."""
    found = (
        [] if shutil.which("java") else [f"java: not found on PATH (METEOR needs it); {JAVA_FIX}"]
    )
    return found + profile.problems(plans, progress=progress)


def preflight(profile: Profile, plans: Sequence[RunPlan], *, progress: bool = True) -> None:
    """Raise :class:`PreflightError` naming every problem, before any store or point is touched."""
    found = problems(profile, plans, progress=progress)
    if found:
        raise PreflightError(found)


def image_check_cache() -> Path:
    """Where decoded images are remembered (see the module's docstring)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "ituning" / "readable_images.json"


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


def bad_image_lines(bad: dict[Path, str]) -> list[str]:
    """One line per bad image (the first few), then a count of the rest."""
    fix = "replace the file, or pass --skip-bad-images to train and evaluate without it"
    reasons = list(bad.values())
    lines = [f"{why}; {fix}" for why in reasons[:SHOWN_BAD_IMAGES]]
    if len(reasons) > SHOWN_BAD_IMAGES:
        lines.append(f"... and {len(reasons) - SHOWN_BAD_IMAGES} more unreadable images; {fix}")
    return lines


def _read_cache(cache: Path) -> dict[str, list[int]]:
    try:
        raw = json.loads(cache.read_text())
        return raw if isinstance(raw, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache: Path, known: dict[str, list[int]]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cache, known)
