"""Profiles: what a sweep's abstract axes mean on a given machine.

A spec says "LM size large, drop half the layers, VLP on"; a profile binds that to backbones, data
and a training budget and returns the one thing the library sees, a :class:`TrainConfig`. Both
profiles go through the same resolution code; they differ only in the tables below.

``mini`` (default): the harness's own pre-trained frozen mini backbones (``bench.mini_backbones``)
and the synthetic Shapes world (``ituning.data.shapes``), both built on first use under the runs
folder. Sized for a laptop or CI machine.

``paper``: GPT-2 base/medium/large and CLIP ViT-B/16 (``openai``) from the Hugging Face cache, and
the real datasets under ``--data-root``, laid out as::

    DATA_ROOT/coco/dataset_coco.json                Karpathy's split file (caption_datasets.zip)
    DATA_ROOT/coco/images/train2014/, val2014/       COCO 2014 images (the file's filepath/filename)
    DATA_ROOT/nocaps/nocaps_val_4500_captions.json   NoCaps validation annotations
    DATA_ROOT/nocaps/images/                         NoCaps validation images (file_name)
    DATA_ROOT/visual_genome/region_descriptions.json  Visual Genome v1.2 regions (VLP only)
    DATA_ROOT/visual_genome/image_data.json
    DATA_ROOT/visual_genome/VG_100K/, VG_100K_2/      Visual Genome images

``scale="tiny"`` shrinks a profile (data, backbones, budget) for tests: same code, smaller numbers.
"""

from __future__ import annotations

import fcntl
import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bench.sweep.folders import Resolved, RunPlan
from bench.sweep.spec import Point, SweepSpec
from ituning.errors import BackboneError, ConfigError, DataError
from ituning.train_config import TrainConfig

PROFILES = ("mini", "paper")
SCALES = ("full", "tiny")
MINI_SEED = 0  # the Shapes world and the mini backbones


@dataclass(frozen=True)
class LMChoice:
    """One LM size: what to load and the architecture numbers the axes resolve against."""

    name: str
    n_layers: int
    d_lm: int


@dataclass(frozen=True)
class Budget:
    """Every training/evaluation number a profile sets. The lead tunes ``MINI_BUDGET`` here."""

    epochs: int
    vlp_epochs: int
    batch_captions: int
    micro_batch_images: int
    lr: float
    warmup_ratio: float
    beam: int
    max_new_tokens: int
    eval_batch_images: int
    checkpoint_every: int
    max_caption_tokens: int = 32
    limit_train_images: int | None = None
    limit_eval_images: int | None = None
    blank_control: bool = False
    grounding: bool = False

    def settings(self) -> dict[str, Any]:
        """The TrainConfig fields this budget sets (dotted)."""
        return {
            "epochs": self.epochs,
            "vlp_epochs": self.vlp_epochs,
            "batch_captions": self.batch_captions,
            "micro_batch_images": self.micro_batch_images,
            "max_caption_tokens": self.max_caption_tokens,
            "checkpoint_every": self.checkpoint_every,
            "optim.lr": self.lr,
            "optim.warmup_ratio": self.warmup_ratio,
            "eval.beam": self.beam,
            "eval.max_new_tokens": self.max_new_tokens,
            "eval.batch_images": self.eval_batch_images,
            "eval.blank_control": self.blank_control,
            "eval.grounding": self.grounding,
            "data.limit_train_images": self.limit_train_images,
            "data.limit_eval_images": self.limit_eval_images,
        }


# The paper: 4096-caption batches by accumulation, 30 epochs, VLP 10 epochs, beam 5. The learning
# rate and warm-up are not given in the paper; these are ours.
PAPER_BUDGET = Budget(
    epochs=30,
    vlp_epochs=10,
    batch_captions=4096,
    micro_batch_images=64,
    lr=1e-4,
    warmup_ratio=0.05,
    beam=5,
    max_new_tokens=20,
    eval_batch_images=64,
    checkpoint_every=50,
)
# Mini: sized so that table1 + table2 + dropping (10 distinct runs) fit in ~30 min on 2 CPU cores.
# 4 epochs of the 4,000 training images in 64-image steps (250 steps). Measured on mini-base
# (4 epochs, test split): lr 1e-3 / 3e-3 / 6e-3 / 1e-2 gave CIDEr 109 / 126 / 147 / 146 and
# shape-naming precision 0.54 / 0.75 / 0.83 / 0.81; 3 epochs at 6e-3 gave 129 and 0.76.
# Micro-batches of 16 images, split by caption length, halved the step time against one
# 64-image micro-batch (less padding, smaller matrices) at the same result.
MINI_BUDGET = Budget(
    epochs=4,
    vlp_epochs=1,
    batch_captions=320,
    micro_batch_images=16,
    lr=6e-3,
    warmup_ratio=0.05,
    beam=3,
    max_new_tokens=24,  # the longest Shapes caption is 20 tokens: room to finish every caption
    eval_batch_images=128,
    checkpoint_every=20,
    blank_control=True,
    grounding=True,
)
# Tiny: end-to-end tests (seconds per run). Not a result, a smoke test of every code path.
TINY_BUDGET = Budget(
    epochs=1,
    vlp_epochs=1,
    batch_captions=40,
    micro_batch_images=8,
    lr=1e-3,
    warmup_ratio=0.0,
    beam=1,
    max_new_tokens=6,
    eval_batch_images=16,
    checkpoint_every=2,
    max_caption_tokens=16,
    limit_train_images=32,
)

PAPER_LMS = {
    "base": LMChoice("gpt2", 12, 768),
    "medium": LMChoice("gpt2-medium", 24, 1024),
    "large": LMChoice("gpt2-large", 36, 1280),
}

PAPER_LAYOUT = {
    "captions": ("coco/dataset_coco.json", "Karpathy's COCO split file"),
    "image_root": ("coco/images", "COCO 2014 images (train2014/, val2014/)"),
    "nocaps": ("nocaps/nocaps_val_4500_captions.json", "NoCaps validation annotations"),
    "nocaps_image_root": ("nocaps/images", "NoCaps validation images"),
    "vlp_regions": ("visual_genome/region_descriptions.json", "Visual Genome regions"),
    "vlp_image_data": ("visual_genome/image_data.json", "Visual Genome image list"),
    "vlp_image_root": ("visual_genome", "Visual Genome images (VG_100K/, VG_100K_2/)"),
}


@dataclass(frozen=True)
class Profile:
    name: str
    scale: str
    runs_dir: Path
    lms: dict[str, LMChoice]
    vision: str
    vision_pretrained: str | None
    vision_width: int
    data: dict[str, str | None]
    budget: Budget
    settings: dict[str, Any] = field(default_factory=dict)
    _check: Any = None  # callable(profile, plans) -> None; validates user files, writes nothing
    _prepare: Any = None  # callable(profile, plans, progress) -> None; builds missing assets

    def check(self, plans: list[RunPlan] | None = None) -> None:
        """Validate what the user supplied (the paper's data root and dataset files) and write
        nothing: a sweep runs this before it opens any store, so a bad file is one error line
        with an empty run store."""
        if self._check is not None:
            self._check(self, plans or [])

    def prepare(
        self, plans: list[RunPlan] | None = None, *, progress: bool = True, checked: bool = False
    ) -> None:
        """:meth:`check` (unless already ``checked``), then build missing mini assets."""
        if not checked:
            self.check(plans)
        if self._prepare is not None:
            self._prepare(self, plans or [], progress)

    # ------------------------------------------------------------------ resolution

    def resolve(self, point: Point, overrides: dict[str, Any], *, source: str = "spec") -> RunPlan:
        lm = self.lms[point.lm]
        where = f"{source}: point [{point.label()}]"
        drop = point.drop.resolve(lm.n_layers)
        if drop >= lm.n_layers:
            raise ConfigError(
                f"{where}: drop: {point.drop.to_yaml()} means {drop} of the {lm.n_layers} layers "
                f"of {lm.name} (profile {self.name}), i.e. every module; the most is "
                f"{lm.n_layers - 1} (a fraction below {(lm.n_layers - 0.5) / lm.n_layers:.3g})"
            )
        r = point.bottleneck.resolve(lm.d_lm)
        tree: dict[str, Any] = {
            "backbones": {
                "lm": lm.name,
                "vision": self.vision,
                "vision_pretrained": self.vision_pretrained,
            },
            "itune": {"scale": point.lam, "bottleneck": r, "drop_first": drop},
            "data": {k: v for k, v in self.data.items() if v is not None},
            "vlp": point.vlp,
            "seed": point.seed,
            "feature_cache": str(self.runs_dir / "features"),
        }
        for dotted, value in {**self.budget.settings(), **self.settings, **overrides}.items():
            _set(tree, dotted, value)
        try:
            config = TrainConfig.model_validate(tree)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            raise ConfigError(
                f"{where}: {loc}: {err['msg'].removeprefix('Value error, ')}"
            ) from None
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        resolved = Resolved(
            lm_name=lm.name,
            n_layers=lm.n_layers,
            d_lm=lm.d_lm,
            d_vis=self.vision_width,
            drop_first=drop,
            bottleneck=r,
            trainable_params=trainable_params(self, lm, config),
        )
        return RunPlan(point=point, config=config, resolved=resolved)

    def plan(self, spec: SweepSpec) -> list[RunPlan]:
        """Every point of ``spec`` resolved; points that resolve to the same config run once."""
        plans: dict[str, RunPlan] = {}
        for point in spec.points():
            plan = self.resolve(point, spec.overrides, source=spec.source)
            plans.setdefault(plan.run_id, plan)
        return list(plans.values())


def trainable_params(profile: Profile, lm: LMChoice, config: TrainConfig) -> int:
    """Trainable parameters without weights: ``ituning.params`` when the LM's architecture can be
    read (shipped GPT-2 configs, a built mini folder), else the module formula on the profile's
    architecture table (mini backbones not built yet)."""
    try:
        return _counted(lm.name, profile.vision, config.itune.model_dump_json())
    except Exception:
        from ituning.module import ITuningModule

        per_layer = ITuningModule.num_parameters(
            lm.d_lm, profile.vision_width, config.itune.bottleneck
        )
        return per_layer * (lm.n_layers - config.itune.drop_first)


@functools.lru_cache(maxsize=256)
def _counted(lm: str, vision: str, itune_json: str) -> int:
    from ituning.config import ITuningConfig
    from ituning.params import count_parameters

    itune = ITuningConfig.model_validate_json(itune_json)
    return int(count_parameters(lm, config=itune, vision=vision)["trainable"])


# ---------------------------------------------------------------------- the profiles


def get_profile(
    name: str = "mini",
    *,
    runs_dir: Path | str = "runs",
    data_root: Path | str | None = None,
    scale: str = "full",
) -> Profile:
    if name not in PROFILES:
        raise ConfigError(f"--profile {name}: unknown profile (allowed: {', '.join(PROFILES)})")
    if scale not in SCALES:
        raise ConfigError(f"--scale {scale}: unknown scale (allowed: {', '.join(SCALES)})")
    runs_dir = Path(runs_dir)
    if name == "paper":
        return _paper(runs_dir, data_root, scale)
    return _mini(runs_dir, scale)


def _paper(runs_dir: Path, data_root: Path | str | None, scale: str) -> Profile:
    if data_root is None:
        raise ConfigError(
            "profile paper needs --data-root DIR holding coco/dataset_coco.json, coco/images/, "
            "nocaps/ and visual_genome/ (layout: bench/profiles.py)"
        )
    root = Path(data_root)
    budget = PAPER_BUDGET if scale == "full" else TINY_BUDGET
    return Profile(
        name="paper",
        scale=scale,
        runs_dir=runs_dir,
        lms=PAPER_LMS,
        vision="ViT-B-16",
        vision_pretrained="openai",
        vision_width=768,
        data={key: str(root / rel) for key, (rel, _) in PAPER_LAYOUT.items()},
        budget=budget,
        _check=_check_paper_data,
    )


def _check_paper_data(profile: Profile, plans: list[RunPlan]) -> None:
    """One line naming the first missing path and what belongs there, or the first bad file and
    field: the dataset files are read as the runs will read them (image files must exist)."""
    needed = ["captions", "image_root"]
    if any(p.config.eval.nocaps for p in plans):
        needed += ["nocaps", "nocaps_image_root"]
    if any(p.config.vlp for p in plans):
        needed += ["vlp_regions", "vlp_image_data", "vlp_image_root"]
    root = Path(profile.data["captions"]).parent.parent
    if not root.is_dir():
        raise DataError(
            f"--data-root {root}: no such folder; it must hold coco/, nocaps/ and visual_genome/ "
            "(layout: bench/profiles.py)"
        )
    for key in needed:
        path = Path(profile.data[key])
        rel, what = PAPER_LAYOUT[key]
        if not path.exists():
            raise DataError(
                f"{path}: missing; put {what} there (data root layout: bench/profiles.py)"
            )
    for plan in plans:
        _check_dataset_files(plan.config)


_DATA_CHECKED: set[str] = set()


def _check_dataset_files(config: TrainConfig) -> None:
    """``load_data`` as a run calls it, once per data setup and state of its files per process."""
    from ituning.train import load_data

    files = [config.data.captions]
    if config.eval.nocaps and config.data.nocaps is not None:
        files.append(config.data.nocaps)
    if config.vlp:
        files += [config.data.vlp_regions, config.data.vlp_image_data]
    stamps = []
    for path in files:
        try:
            st = Path(path).stat()
            stamps.append((str(path), st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append((str(path), None, None))
    key = repr(
        (
            config.data.model_dump_json(),
            config.eval.nocaps,
            config.eval.splits,
            config.vlp,
            stamps,
        )
    )
    if key not in _DATA_CHECKED:
        load_data(config)
        _DATA_CHECKED.add(key)


# ---------------------------------------------------------------------- mini


def _mini_backbones_config(scale: str):
    from bench.mini.backbones import MiniBackbonesConfig

    return MiniBackbonesConfig() if scale == "full" else MiniBackbonesConfig.quick()


def _world_sizes(scale: str):
    from ituning.data.shapes import SplitSizes

    if scale == "full":
        return SplitSizes()
    return SplitSizes(train=48, val=8, test=8, nocaps_per_domain=4, vlp_images=16, lm_sentences=50)


def _mini(runs_dir: Path, scale: str) -> Profile:
    """Folders are known before anything is built (their names hash the build configuration), so a
    dry run resolves the same run ids as the real run, and the architecture numbers come from the
    configuration, not from weights."""
    from bench.mini.backbones import CLIP_DIR, backbone_dir

    config = _mini_backbones_config(scale)
    root = backbone_dir(runs_dir / "backbones", config, MINI_SEED)
    world = runs_dir / "data" / ("shapes" if scale == "full" else f"shapes-{scale}")
    return Profile(
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
        _prepare=_build_mini,
    )


def _build_mini(profile: Profile, plans: list[RunPlan], progress: bool) -> None:
    """Write the Shapes world and pre-train the backbones unless already there (both locked, so
    concurrent workers build once)."""
    from bench.mini.backbones import build_backbones
    from ituning.data.shapes import WorldConfig, write_world

    world = Path(profile.data["image_root"])
    world.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(world.with_name(world.name + ".lock")):
        if not (world / "world.json").is_file():
            if progress:
                print(f"writing the Shapes world to {world} (once)", file=sys.stderr)
            write_world(
                world, MINI_SEED, WorldConfig(), _world_sizes(profile.scale), progress=progress
            )
    config = _mini_backbones_config(profile.scale)
    built = build_backbones(profile.runs_dir / "backbones", config, MINI_SEED, progress=progress)
    expected = Path(profile.vision).parent
    if built.root != expected:  # the profile resolved paths from the same function: a bug if not
        raise AssertionError(f"mini backbones built in {built.root}, expected {expected}")
    _verify_backbones(built.root, built.manifest)


def _verify_backbones(root: Path, manifest: dict) -> None:
    """Every file the build recorded is still there, unchanged: a deleted or damaged weight file
    would otherwise fail every run with a loader error, or train on other weights than recorded."""
    from bench.mini.backbones import MANIFEST, folder_hashes

    found = folder_hashes(root)
    for rel, sha in sorted(manifest.get("files", {}).items()):
        if found.get(rel) != sha:
            state = "missing" if rel not in found else "changed since it was built"
            raise BackboneError(
                f"{root / rel}: {state} (its sha256 is in {MANIFEST}); delete {root} and rerun "
                "to rebuild the mini backbones"
            )


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
