"""Pre-train the ``mini`` profile's frozen backbones once, deterministically, and cache them.

``python -m bench.mini --out DIR [--seed 0] [--quick]`` writes::

    DIR/<name>-<hash>/mini-base/     GPT2LMHeadModel + word-level tokenizer (save_pretrained)
    DIR/<name>-<hash>/mini-medium/
    DIR/<name>-<hash>/mini-large/
    DIR/<name>-<hash>/mini-clip/     open_clip hub layout (open_clip_config.json + safetensors)
    DIR/<name>-<hash>/manifest.json  config, seed, file hashes, quality gates, timings

``<hash>`` covers the whole configuration, the seed and the Shapes world's rules, so a changed
configuration builds a new folder and an unchanged one is reused. ``manifest.json`` is written
last and atomically: a folder without it is an interrupted build and is rebuilt. A file lock
keeps two processes (sweep workers) from building the same folder at once.

Why they exist: no registry ships GPT-2 or CLIP weights and a frozen *random* LM cannot caption, so
the offline profile pre-trains its own tiny frozen backbones, mirroring the paper's setup in
miniature (an LM pre-trained on text alone, a vision encoder pre-trained contrastively).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.mini.clip import ClipSpec, ClipTrainConfig, TextEncoder, save_clip, to_pixels, train_clip
from bench.mini.gates import (
    VISION_TARGETS,
    cell_probe_lines,
    clip_scorer,
    gate_scenes,
    named_row_gates,
    patch_tokens,
    render_scenes,
    token_probe,
    vision_gates,
)
from bench.mini.lm import (
    LMSpec,
    LMTrainConfig,
    build_tokenizer,
    corpus_for,
    heldout_captions,
    heldout_flickr_captions,
    perplexity,
    save_lm,
    train_lm,
)
from ituning.data.shapes_scene import WorldConfig
from ituning.errors import ConfigError, cli_main, validation_line
from ituning.files import atomic_write_json, canonical_json, file_lock, sha256_file, sha256_text

#: Bump when the training code changes what a configuration produces (it enters the hash).
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CLIP_DIR = "mini-clip"


class MiniBackbonesConfig(BaseModel):
    """Everything that determines the backbones (besides the seed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "mini"
    #: GPT-2 base/medium/large in miniature: depths 3/6/9 (GPT-2's 12/24/36 over 4), widths
    #: 96/128/160 (768/1024/1280 over 8), heads 3/4/5 of width 32 (12/16/20 of width 64); widths
    #: are even, so the bottleneck r = d/2 is 48/64/80. A 2-layer, 48-wide base came close in
    #: perplexity, but I-Tuning on it named only half the shapes right (0.51 against 0.91 for
    #: 3x96, same vision tokens, same 300 steps).
    lms: tuple[LMSpec, ...] = (
        LMSpec(name="mini-base", n_layer=3, n_embd=96, n_head=3),
        LMSpec(name="mini-medium", n_layer=6, n_embd=128, n_head=4),
        LMSpec(name="mini-large", n_layer=9, n_embd=160, n_head=5),
    )
    lm_train: LMTrainConfig = LMTrainConfig()
    clip: ClipSpec = ClipSpec()
    clip_train: ClipTrainConfig = ClipTrainConfig()
    world: WorldConfig = WorldConfig()
    gate_images: int = Field(400, ge=2)

    @classmethod
    def quick(cls) -> MiniBackbonesConfig:
        """Seconds, for tests and smoke runs: tiny models, a few steps; gates are not meaningful."""
        return cls(
            name="quick",
            lms=(
                LMSpec(name="mini-base", n_layer=1, n_embd=16, n_head=2),
                LMSpec(name="mini-medium", n_layer=2, n_embd=24, n_head=2),
                LMSpec(name="mini-large", n_layer=3, n_embd=32, n_head=2),
            ),
            lm_train=LMTrainConfig(steps=3, batch_size=8, warmup_steps=1, eval_captions=20),
            clip=ClipSpec(
                embed_dim=16,
                patch_size=16,
                vision_width=32,
                vision_layers=1,
                vision_head_width=16,
                text_width=16,
                text_layers=1,
                text_heads=1,
            ),
            clip_train=ClipTrainConfig(steps=2, batch_size=4, warmup_steps=1),
            gate_images=8,
        )

    def digest(self, seed: int) -> str:
        payload = {"format": FORMAT_VERSION, "seed": seed, "config": self.model_dump(mode="json")}
        return sha256_text(canonical_json(payload))


@dataclass(frozen=True)
class BuiltLMs:
    """Where a built set of LMs lives (its manifest names them, smallest first)."""

    root: Path
    manifest: dict
    cached: bool

    @property
    def lm_dirs(self) -> dict[str, Path]:
        return {name: self.root / name for name in self.manifest["lms"]}


@dataclass(frozen=True)
class MiniBackbones(BuiltLMs):
    """Where a built set of backbones lives: the GPT-2 minis and the vision encoder."""

    @property
    def vision_dir(self) -> Path:
        return self.root / CLIP_DIR


def backbone_dir(out: Path, config: MiniBackbonesConfig, seed: int) -> Path:
    """The folder a configuration builds into: ``<out>/<name>-<first 10 hex of its hash>``."""
    return Path(out) / f"{config.name}-{config.digest(seed)[:10]}"


def read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((Path(root) / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def folder_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except the manifest (relative POSIX paths, sorted)."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp")
    }


def _log(msg: str, progress: bool) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def build_backbones(
    out: Path | str,
    config: MiniBackbonesConfig | None = None,
    seed: int = 0,
    *,
    progress: bool = True,
    parallel: bool = True,
) -> MiniBackbones:
    """Build (or reuse) the backbones of ``config``; returns where they are and their manifest.

    ``parallel`` trains the vision encoder in a second process while the LMs train here. Every
    training runs on one thread either way, so the weights do not depend on it (nor on the
    machine's core count): small matrices gain little from threads, and two single-threaded
    jobs use two cores better than one job on two threads.
    """
    config = config or MiniBackbonesConfig()
    root = backbone_dir(Path(out), config, seed)
    manifest, cached = build_once(root, lambda r: _build(r, config, seed, progress, parallel))
    return MiniBackbones(root, manifest, cached=cached)


def build_once(root: Path, build: Callable[[Path], dict]) -> tuple[dict, bool]:
    """``(manifest, cached)`` of the set in ``root``, built by ``build(root)`` unless complete.

    Under the folder's lock (sweep workers must not build it twice), a folder with a manifest is
    reused untouched; one without is an interrupted build, removed and built again. The manifest
    is written last, so it marks a complete set.
    """
    with file_lock(root.with_name(root.name + ".lock")):
        manifest = read_manifest(root)
        if manifest is not None:
            return manifest, True
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        manifest = build(root)
        atomic_write_json(root / MANIFEST, manifest, indent=2, sort_keys=True)
        return manifest, False


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _vision_job(root: str, config_json: str, seed: int, progress: bool) -> dict:
    """Train, save and gate the vision encoder (runs in a worker process or in-process)."""
    config = MiniBackbonesConfig.model_validate_json(config_json)
    with _single_thread():
        model, info = train_clip(config.clip, config.clip_train, config.world, seed, progress)
        save_clip(model, config.clip, Path(root) / CLIP_DIR)
        t = time.perf_counter()
        gates = evaluate_vision(model, config, seed)
    return {"info": info, "gates": gates, "gate_seconds": round(time.perf_counter() - t, 1)}


def pretrain_lms(
    root: Path,
    lms: Sequence[LMSpec],
    lm_train: LMTrainConfig,
    world: WorldConfig,
    seed: int,
    progress: bool,
) -> dict:
    """Pre-train every LM size on the same corpus for the same number of steps, save each to
    ``root/<name>``; shared by every LM family (``spec.new_model``) so all see the same text."""
    t = time.perf_counter()
    corpus = corpus_for(seed, world, lm_train)
    heldout = heldout_captions(seed, world, lm_train.eval_captions)
    flickr = heldout_flickr_captions(seed, world, lm_train.eval_captions)
    report: dict[str, dict] = {"_corpus_seconds": round(time.perf_counter() - t, 1)}  # type: ignore[dict-item]
    with _single_thread():
        for spec in lms:
            model, info = train_lm(spec, lm_train, world, seed, corpus, heldout, progress)
            save_lm(model, root / spec.name, lm_train.n_positions)
            info["heldout_perplexity_flickr"] = round(
                perplexity(model, build_tokenizer(), flickr, lm_train.n_positions), 4
            )
            report[spec.name] = {**info, **spec.model_dump(), "bottleneck_r": spec.n_embd // 2}
            _log(
                f"{spec.name}: held-out perplexity {info['heldout_perplexity']:.3f} (Shapes), "
                f"{info['heldout_perplexity_flickr']:.3f} (Shapes-Flickr)",
                progress,
            )
    return report


def lm_size_gate(lm_report: dict, names: Sequence[str]) -> bool:
    """Larger LM (``names`` smallest first) -> strictly lower held-out perplexity, on both sets."""
    return all(
        all(a > b for a, b in zip(ppls, ppls[1:], strict=False))
        for ppls in (
            [lm_report[name][key] for name in names]
            for key in ("heldout_perplexity", "heldout_perplexity_flickr")
        )
    )


def _build(
    root: Path, config: MiniBackbonesConfig, seed: int, progress: bool, parallel: bool
) -> dict:
    t_start = time.perf_counter()
    args = (str(root), config.model_dump_json(), seed, progress)
    if parallel:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            vision_future = pool.submit(_vision_job, *args)
            lm_report = pretrain_lms(
                root, config.lms, config.lm_train, config.world, seed, progress
            )
            vision = vision_future.result()
    else:
        lm_report = pretrain_lms(root, config.lms, config.lm_train, config.world, seed, progress)
        vision = _vision_job(*args)
    corpus_seconds = lm_report.pop("_corpus_seconds")
    lm_gate = lm_size_gate(lm_report, [s.name for s in config.lms])
    gates = vision["gates"]
    vision_pass = {k: gates.get(k, 0.0) >= v for k, v in VISION_TARGETS.items()}
    cells = named_row_gates({s.name: lm_report[s.name]["named_cell_probe"] for s in config.lms})
    timings = {
        "lm_corpus": corpus_seconds,
        **{s.name: lm_report[s.name]["train_seconds"] for s in config.lms},
        CLIP_DIR: vision["info"]["train_seconds"],
        "gates": vision["gate_seconds"],
        "total": round(time.perf_counter() - t_start, 1),
    }
    return {
        "name": config.name,
        "format": FORMAT_VERSION,
        "seed": seed,
        "config_sha256": config.digest(seed),
        "config": config.model_dump(mode="json"),
        "lms": [s.name for s in config.lms],
        "vision": CLIP_DIR,
        "lm_report": lm_report,
        "vision_report": vision["info"],
        "gates": {
            "lm_perplexity": {s.name: lm_report[s.name]["heldout_perplexity"] for s in config.lms},
            "lm_perplexity_flickr": {
                s.name: lm_report[s.name]["heldout_perplexity_flickr"] for s in config.lms
            },
            "lm_larger_is_better": lm_gate,
            "lm_named_colour_probe": {
                s.name: lm_report[s.name]["named_colour_probe"] for s in config.lms
            },
            **cells,
            "vision": gates,
            "vision_targets": VISION_TARGETS,
            "vision_pass": vision_pass,
            "passed": bool(
                lm_gate and all(cells["lm_named_row_pass"].values()) and all(vision_pass.values())
            ),
        },
        "timings_seconds": timings,
        "environment": {
            "torch": torch.__version__,
            "threads_per_job": 1,
            "parallel": parallel,
            "python": platform.python_version(),
        },
        "files": folder_hashes(root),
    }


def evaluate_vision(model, config: MiniBackbonesConfig, seed: int) -> dict[str, float]:
    """Swap-discrimination per attribute and the patch-token probe, on held-out scenes."""
    world = config.world
    scenes, pairs = gate_scenes(seed, world, config.gate_images)
    pixels = to_pixels(render_scenes(scenes, world), config.clip)
    model.eval()
    enc = TextEncoder(config.clip.context_length)
    out = vision_gates(clip_scorer(model, pixels, enc), pairs)
    tokens = patch_tokens(model.visual, pixels[: config.gate_images])
    out.update(
        token_probe(tokens, scenes[: config.gate_images], config.clip.patch_size, world, seed)
    )
    return out


def format_report(manifest: dict) -> str:
    g = manifest["gates"]
    lines = [f"mini backbones {manifest['name']} (seed {manifest['seed']}):"]
    flickr = g.get("lm_perplexity_flickr", {})
    for name, ppl in g["lm_perplexity"].items():
        other = f", Shapes-Flickr {flickr[name]:.3f}" if name in flickr else ""
        lines.append(f"  {name:12s} held-out perplexity: Shapes {ppl:.3f}{other}")
    verdict = "ok" if g["lm_larger_is_better"] else "FAIL"
    lines.append(f"  larger LM -> lower perplexity on both: {verdict}")
    for name, kept in g.get("lm_named_colour_probe", {}).items():
        shown = "n/a (too few captions)" if kept is None else f"{kept:.3f} (chance 1/6; reported)"
        lines.append(f"  {name:12s} named colours kept in its state: {shown}")
    lines += cell_probe_lines(g)
    for k, v in g["vision"].items():
        target = g["vision_targets"].get(k)
        mark = (
            ""
            if target is None
            else (f"  (>= {target}: ok)" if v >= target else f"  (>= {target}: FAIL)")
        )
        lines.append(f"  vision {k:18s} {v:.3f}{mark}")
    lines.append(
        f"  total {manifest['timings_seconds']['total']} s; all gates passed: {g['passed']}"
    )
    return "\n".join(lines)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.mini",
        description="Pre-train (once) the mini profile's frozen LMs and CLIP-style vision encoder.",
    )
    p.add_argument("--out", required=True, type=Path, help="cache folder for backbone sets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny models, seconds (tests, smoke runs)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a quality gate fails")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--serial", action="store_true", help="train the vision encoder after the LMs, not beside"
    )
    p.add_argument(
        "--padded",
        action="store_true",
        help="pre-train the LMs one caption per row from position 0, as before packing "
        "(LMTrainConfig.pack off): a set of its own, beside the default one, for comparison",
    )
    p.add_argument("--lm-steps", type=int, default=None, help="LM pre-training steps")
    args = p.parse_args(argv)
    try:
        config = MiniBackbonesConfig.quick() if args.quick else MiniBackbonesConfig()
        lm_train = config.lm_train.model_dump()
        if args.padded:
            lm_train["pack"] = False
        if args.lm_steps is not None:
            lm_train["steps"] = args.lm_steps
        config = config.model_copy(update={"lm_train": LMTrainConfig.model_validate(lm_train)})
    except ValidationError as exc:
        raise ConfigError(validation_line(exc, "mini backbones config")) from None
    built = build_backbones(
        args.out, config, args.seed, progress=not args.quiet, parallel=not args.serial
    )
    if built.cached:
        print(f"cached: {built.root} (built earlier with this configuration; nothing to do)")
    else:
        print(f"built: {built.root}")
    print(format_report(built.manifest))
    if args.strict and not built.manifest["gates"]["passed"]:
        return 1
    return 0
