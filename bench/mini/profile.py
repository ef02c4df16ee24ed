"""The ``mini`` profile: the harness's own frozen mini backbones and the synthetic Shapes world.

Both are built on first use under the runs folder, each behind a file lock so that concurrent
workers build once. Their folders are known before anything is built (the backbones' folder name
hashes their build configuration), so a dry run resolves the same run ids as the real run and the
architecture numbers come from the configuration, not from weights.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bench.mini.backbones import (
    CLIP_DIR,
    MANIFEST,
    MiniBackbonesConfig,
    backbone_dir,
    build_backbones,
    folder_hashes,
)
from bench.sweep.budgets import MINI_BUDGET, TINY_BUDGET
from bench.sweep.plan import RunPlan
from bench.sweep.profile import LMChoice, Profile
from ituning.errors import BackboneError
from ituning.files import file_lock

MINI_SEED = 0  # the Shapes world and the mini backbones


def backbones_config(scale: str) -> MiniBackbonesConfig:
    return MiniBackbonesConfig() if scale == "full" else MiniBackbonesConfig.quick()


def _world_sizes(scale: str):
    from ituning.data.shapes import SplitSizes

    if scale == "full":
        return SplitSizes()
    return SplitSizes(train=48, val=8, test=8, nocaps_per_domain=4, vlp_images=16, lm_sentences=50)


@dataclass(frozen=True)
class MiniProfile(Profile):
    cpu_workers: ClassVar[bool] = True

    def prepare(self, plans: Sequence[RunPlan] = (), *, progress: bool = True) -> None:
        """Write the Shapes world and pre-train the backbones unless already there."""
        from ituning.data.shapes import write_world
        from ituning.data.shapes_scene import WorldConfig

        world = Path(self.data["image_root"])
        with file_lock(world.with_name(world.name + ".lock")):
            if not (world / "world.json").is_file():
                if progress:
                    print(f"writing the Shapes world to {world} (once)", file=sys.stderr)
                sizes = _world_sizes(self.scale)
                write_world(world, MINI_SEED, WorldConfig(), sizes, progress=progress)
        config = backbones_config(self.scale)
        built = build_backbones(self.runs_dir / "backbones", config, MINI_SEED, progress=progress)
        expected = Path(self.vision).parent
        if built.root != expected:  # resolved from the same function as the build: a bug if not
            raise AssertionError(f"mini backbones built in {built.root}, expected {expected}")
        verify_backbones(built.root, built.manifest)


def verify_backbones(root: Path, manifest: dict) -> None:
    """Every file the build recorded is still there, unchanged: a deleted or damaged weight file
    would otherwise fail every run with a loader error, or train on other weights than recorded."""
    found = folder_hashes(root)
    for rel, sha in sorted(manifest.get("files", {}).items()):
        if found.get(rel) != sha:
            state = "missing" if rel not in found else "changed since it was built"
            raise BackboneError(
                f"{root / rel}: {state} (its sha256 is in {MANIFEST}); delete {root} and rerun "
                "to rebuild the mini backbones"
            )


def mini_profile(runs_dir: Path, scale: str) -> MiniProfile:
    config = backbones_config(scale)
    root = backbone_dir(runs_dir / "backbones", config, MINI_SEED)
    world = runs_dir / "data" / ("shapes" if scale == "full" else f"shapes-{scale}")
    return MiniProfile(
        name="mini",
        scale=scale,
        runs_dir=runs_dir,
        lms={
            size: LMChoice(str(root / spec.name), spec.n_layer, spec.n_embd)
            for size, spec in zip(("base", "medium", "large"), config.lms, strict=True)
        },
        vision=str(root / CLIP_DIR),
        vision_pretrained=None,
        vision_width=config.clip.vision_width,
        data={
            "captions": str(world / "dataset_shapes.json"),
            "image_root": str(world),
            "nocaps": str(world / "nocaps_shapes_val.json"),
            "nocaps_image_root": str(world),
            "vlp_regions": str(world / "visual_genome" / "region_descriptions.json"),
            "vlp_image_data": str(world / "visual_genome" / "image_data.json"),
            "vlp_image_root": str(world / "visual_genome"),
        },
        budget=MINI_BUDGET if scale == "full" else TINY_BUDGET,
        # The mini LMs have 48 positions and captions of up to 32 tokens: a prefix of 10 (ClipCap's
        # MLP default; its transformer's is 40) for both variants, the transformer over 10
        # projected tokens.
        clipcap={"prefix_length": 10, "clip_length": 10},
    )
