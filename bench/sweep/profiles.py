"""The named profiles, ``mini`` (default) and ``paper``: which one a name means, at which scale.

The profile kinds live in their own modules (``bench.mini.profile``, ``bench.sweep.paper_profile``)
on the common base ``bench.sweep.profile.Profile``; they are imported when asked for, so reading a
spec or a report does not load the training stack.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.sweep.profile import Profile
from ituning.errors import ConfigError

PROFILES = ("mini", "paper")
SCALES = ("full", "tiny")


def get_profile(
    name: str = "mini",
    *,
    runs_dir: Path | str = "runs",
    data_root: Path | str | None = None,
    scale: str = "full",
    weights: Path | str | None = None,
    skip_bad_images: bool = False,
) -> Profile:
    if name not in PROFILES:
        raise ConfigError(f"--profile {name}: unknown profile (allowed: {', '.join(PROFILES)})")
    if scale not in SCALES:
        raise ConfigError(f"--scale {scale}: unknown scale (allowed: {', '.join(SCALES)})")
    if name == "paper":
        from bench.sweep.paper_profile import paper_profile

        profile = paper_profile(Path(runs_dir), data_root, scale, weights=weights)
        if skip_bad_images:
            profile.settings["data.skip_bad_images"] = True
        return profile
    if weights is not None or skip_bad_images:
        flag = "--weights" if weights is not None else "--skip-bad-images"
        raise ConfigError(f"{flag}: only the paper profile reads outside weights and images")
    from bench.mini.profile import mini_profile

    return mini_profile(Path(runs_dir), scale)


def add_paper_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-root`` and ``--weights``: where the paper profile finds its data and backbones."""
    parser.add_argument(
        "--data-root",
        type=Path,
        help="the paper profile's datasets (layout: bench/sweep/paper_profile.py)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        help="the paper profile's backbones from local folders instead of the Hugging Face cache "
        "(layout: bench/sweep/paper_profile.py)",
    )
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="train and evaluate without the images that cannot be decoded (each run lists them)",
    )


def profile_from_args(args: argparse.Namespace, *, scale: str | None = None) -> Profile:
    """The profile a command line names (``--profile``, ``--runs-dir``, :func:`add_paper_arguments`'
    flags, and ``--scale`` unless ``scale`` is given)."""
    return get_profile(
        args.profile,
        runs_dir=args.runs_dir,
        data_root=args.data_root,
        scale=scale or args.scale,
        weights=args.weights,
        skip_bad_images=args.skip_bad_images,
    )


def profile_class(name: str) -> type[Profile]:
    """The class of profile ``name``: what kind of task and machine it stands for."""
    if name == "paper":
        from bench.sweep.paper_profile import PaperProfile

        return PaperProfile
    from bench.mini.profile import MiniProfile

    return MiniProfile
