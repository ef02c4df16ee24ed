"""Everything a sweep needs, checked before any point trains, each problem one line with its fix.

A GPU user must not learn after the backbones have loaded, or after hours, that a weight file is
not in the cache, that an image is truncated, that Java is missing or that the feature cache will
not fit on the disk. The profile lists what it can check (``Profile.problems``: data files, every
image decoded once, weights present locally, disk space), Java is checked for every profile, and
all problems are reported together (exit status 2), so one round of fixes is enough.

Decoding every image takes a while the first time (COCO + Visual Genome: minutes); an image that
decoded is remembered (:mod:`ituning.data.readable_images`), so the next preflight, and every
run that skips bad images, only decodes new or changed files.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ituning.errors import ITuningError

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


def bad_image_lines(bad: dict[Path, str]) -> list[str]:
    """One line per bad image (the first few), then a count of the rest."""
    fix = "replace the file, or pass --skip-bad-images to train and evaluate without it"
    reasons = list(bad.values())
    lines = [f"{why}; {fix}" for why in reasons[:SHOWN_BAD_IMAGES]]
    if len(reasons) > SHOWN_BAD_IMAGES:
        lines.append(f"... and {len(reasons) - SHOWN_BAD_IMAGES} more unreadable images; {fix}")
    return lines
