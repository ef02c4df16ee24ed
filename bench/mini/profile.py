"""The ``mini`` profile: the harness's own frozen mini backbones and the synthetic Shapes world.

Both are built on first use under the runs folder, each behind a file lock so that concurrent
workers build once. Their folders are known before anything is built (the backbones' folder name
hashes their build configuration), so a dry run resolves the same run ids as the real run and the
architecture numbers come from the configuration, not from weights.

Its LMs: the GPT-2 minis (``base``, ``medium``, ``large``), their Llama-architecture twins
(``llama-*``, ``bench.mini.llama``) and, at full scale, SmolLM2-135M-Instruct and its random-weight
control (``smollm2``, ``smollm2-random``, ``bench.mini.smollm2``). A sweep builds only the sets its
points use.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from bench.mini.backbones import (
    CLIP_DIR,
    MANIFEST,
    MiniBackbonesConfig,
    backbone_dir,
    build_backbones,
    folder_hashes,
)
from bench.mini.llama import MiniLlamaConfig, llama_dir
from bench.sweep.axes import LM_SIZES
from bench.sweep.budgets import MINI_SMOLLM2_BUDGET, budget_of
from bench.sweep.plan import RunPlan
from bench.sweep.profile import LMChoice, Profile
from ituning.data.shapes_flickr import CAPTIONS_FILE as FLICKR
from ituning.errors import BackboneError
from ituning.files import file_lock

if TYPE_CHECKING:
    from bench.sweep.cost import DataSizes
    from ituning.data.shapes import SplitSizes
    from ituning.data.shapes_scene import WorldConfig

MINI_SEED = 0  # the Shapes world and the mini backbones
LLAMA_NAMES = tuple(f"llama-{size}" for size in LM_SIZES)
SMOLLM2_NAMES = ("smollm2", "smollm2-random")


def backbones_config(scale: str) -> MiniBackbonesConfig:
    return MiniBackbonesConfig() if scale == "full" else MiniBackbonesConfig.quick()


def llama_set_config(scale: str) -> MiniLlamaConfig:
    """The Llama minis of a scale: the twins of that scale's GPT-2 set (quick at tiny)."""
    return MiniLlamaConfig.twin_of(backbones_config(scale))


def _uses(plans: Sequence[RunPlan], names) -> set[str]:
    return {plan.point["lm"] for plan in plans} & set(names)


def _world_sizes(scale: str):
    from ituning.data.shapes import SplitSizes

    if scale == "full":
        return SplitSizes()
    return SplitSizes(
        train=48, val=8, test=8, nocaps_per_domain=4, vlp_images=16, lm_sentences=50,
        flickr_train=12, flickr_val=4, flickr_test=4,
    )  # fmt: skip


def _rules(world: WorldConfig, sizes: SplitSizes) -> dict:
    """What a written world records about how it was made (see ``write_world``)."""
    return {
        "seed": MINI_SEED,
        "world": world.model_dump(mode="json"),
        "sizes": sizes.model_dump(mode="json"),
    }


def _written_rules(folder: Path) -> dict | None:
    """The rules recorded by the world in ``folder``; ``None`` when it was never fully written
    (``world.json`` comes last). A world written under other rules is rewritten in place, and the
    feature cache re-encodes the images whose files changed."""
    try:
        summary = json.loads((folder / "world.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {key: summary.get(key) for key in ("seed", "world", "sizes")}


@dataclass(frozen=True)
class MiniProfile(Profile):
    cpu_workers: ClassVar[bool] = True

    def prepare(self, plans: Sequence[RunPlan] = (), *, progress: bool = True) -> None:
        """Write the Shapes world and pre-train the backbones unless already there."""
        from ituning.data.shapes import write_world

        config = backbones_config(self.scale)
        world = Path(self.datasets["coco"]["image_root"])
        sizes = _world_sizes(self.scale)
        with file_lock(world.with_name(world.name + ".lock")):
            written = _written_rules(world)
            wanted = _rules(config.world, sizes)
            if written != wanted:
                if progress:
                    why = "once" if written is None else "its rules changed since it was written"
                    print(f"writing the Shapes world to {world} ({why})", file=sys.stderr)
                write_world(world, MINI_SEED, config.world, sizes, progress=progress)
        built = build_backbones(self.runs_dir / "backbones", config, MINI_SEED, progress=progress)
        expected = Path(self.vision).parent
        if built.root != expected:  # resolved from the same function as the build: a bug if not
            raise AssertionError(f"mini backbones built in {built.root}, expected {expected}")
        verify_backbones(built.root, built.manifest)
        self.prepare_lms(plans, progress=progress)

    def prepare_lms(self, plans: Sequence[RunPlan], *, progress: bool = True) -> None:
        """The Llama minis and SmolLM2 only when a plan runs on one (minutes and 0.5-1 GB each,
        which GPT-2 sweeps need not pay)."""
        if _uses(plans, LLAMA_NAMES):
            from bench.mini.llama import build_llama_lms

            llama = build_llama_lms(
                self.runs_dir / "backbones",
                MINI_SEED,
                config=llama_set_config(self.scale),
                progress=progress,
            )
            expected = Path(self.lms["llama-base"].name).parent
            if llama.root != expected:  # the same function names both: a bug if not
                raise AssertionError(f"mini Llama LMs built in {llama.root}, expected {expected}")
            verify_backbones(llama.root, llama.manifest)
        smollm2 = _uses(plans, SMOLLM2_NAMES)
        if smollm2:
            from bench.mini.smollm2 import prepare_smollm2

            prepare_smollm2(self.runs_dir / "backbones", smollm2, progress=progress)

    def lm_architecture(self, name: str):
        """Known before the backbones are built: their configuration says it (SmolLM2's: the
        config that ships with ``ituning``)."""
        from bench.mini.lm import lm_config

        folder = Path(name).name
        if name in {self.lms[n].name for n in SMOLLM2_NAMES if n in self.lms}:
            from bench.mini.smollm2 import smollm2_architecture

            return smollm2_architecture()
        if folder.startswith("llama-"):
            from bench.mini.llama import llama_config

            llama = llama_set_config(self.scale)
            (spec,) = [s for s in llama.lms if s.name == folder]
            return llama_config(spec, llama.lm_train)
        config = backbones_config(self.scale)
        (spec,) = [s for s in config.lms if s.name == folder]
        return lm_config(spec, config.lm_train)

    def vision_architecture(self, include_cls: bool):
        import torch

        from bench.mini.clip import model_cfg
        from bench.perf.models import build_vision

        spec = model_cfg(backbones_config(self.scale).clip)
        return build_vision(spec, torch.device("cpu"), include_cls=include_cls)

    def data_sizes(self) -> dict[str, DataSizes]:
        """Known before the world is written: it is generated to these sizes."""
        from bench.sweep.cost import DataSizes

        sizes = _world_sizes(self.scale)
        nocaps, vlp = 3 * sizes.nocaps_per_domain, sizes.vlp_images
        return {
            "coco": DataSizes(
                {"train": sizes.train, "val": sizes.val, "test": sizes.test}, nocaps, vlp
            ),
            "flickr30k": DataSizes(
                {"train": sizes.flickr_train, "val": sizes.flickr_val, "test": sizes.flickr_test},
                None,
                vlp,
            ),
        }


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


def _data(world: Path, captions: str, *, nocaps: bool) -> dict[str, str | None]:
    """One dataset of the Shapes world: its captions, the world's NoCaps-style set where asked
    (MSCOCO's part: NoCaps scores COCO-trained models), the shared VLP set."""
    return {
        "captions": str(world / captions),
        "image_root": str(world),
        "nocaps": str(world / "nocaps_shapes_val.json") if nocaps else None,
        "nocaps_image_root": str(world) if nocaps else None,
        "vlp_regions": str(world / "visual_genome" / "region_descriptions.json"),
        "vlp_image_data": str(world / "visual_genome" / "image_data.json"),
        "vlp_image_root": str(world / "visual_genome"),
    }


def _lms(runs_dir: Path, scale: str) -> tuple[dict[str, LMChoice], dict[str, str]]:
    """Each LM's folder and architecture numbers, known before anything is built; and the LMs
    this machine cannot have (SmolLM2 without its package), with why. SmolLM2 is full scale only:
    a 135M-parameter LM is no smoke test."""
    config = backbones_config(scale)
    root = backbone_dir(runs_dir / "backbones", config, MINI_SEED)
    llama = llama_set_config(scale)
    llama_root = llama_dir(runs_dir / "backbones", llama, MINI_SEED)
    lms = {
        size: LMChoice(str(root / spec.name), spec.n_layer, spec.n_embd)
        for size, spec in zip(LM_SIZES, config.lms, strict=True)
    }
    lms.update(
        (name, LMChoice(str(llama_root / spec.name), spec.n_layer, spec.n_embd))
        for name, spec in zip(LLAMA_NAMES, llama.lms, strict=True)
    )
    unavailable: dict[str, str] = {}
    if scale == "full":
        from bench.mini.smollm2 import smollm2_architecture, smollm2_dirs

        arch = smollm2_architecture()
        try:
            dirs = smollm2_dirs(runs_dir / "backbones")
        except BackboneError as exc:
            unavailable = dict.fromkeys(SMOLLM2_NAMES, str(exc))
        else:
            lms.update(
                (
                    name,
                    LMChoice(
                        str(dirs[name]),
                        arch.num_hidden_layers,
                        arch.hidden_size,
                        budget=MINI_SMOLLM2_BUDGET,
                    ),
                )
                for name in SMOLLM2_NAMES
            )
    return lms, unavailable


def mini_profile(runs_dir: Path, scale: str) -> MiniProfile:
    config = backbones_config(scale)
    root = backbone_dir(runs_dir / "backbones", config, MINI_SEED)
    world = runs_dir / "data" / ("shapes" if scale == "full" else f"shapes-{scale}")
    lms, unavailable = _lms(runs_dir, scale)
    return MiniProfile(
        name="mini",
        scale=scale,
        runs_dir=runs_dir,
        lms=lms,
        unavailable=unavailable,
        vision=str(root / CLIP_DIR),
        vision_pretrained=None,
        vision_width=config.clip.vision_width,
        datasets={
            "coco": _data(world, "dataset_shapes.json", nocaps=True),
            "flickr30k": _data(world, FLICKR, nocaps=False),
        },
        budget=budget_of("mini", scale),
        # The mini LMs have 48 positions and captions of up to 40 tokens plus the end token (cells
        # named): a prefix of 7 (ClipCap's MLP default is 10, its transformer's 40) for both
        # variants, the transformer over 7 projected tokens.
        clipcap={"prefix_length": 7, "clip_length": 7},
    )
