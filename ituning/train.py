"""Train one I-Tuning model and evaluate it: ``python -m ituning.train --config FILE [--set k=v]``.

:func:`run_experiment` is the single entry point that the harness (``bench``) drives; everything it
needs is in one :class:`~ituning.run_config.TrainConfig`. A run folder holds::

    config.json        the resolved configuration (its digest is the run id)
    state/             resumable training state, rewritten every ``checkpoint_every`` steps
    checkpoint/        the trained modules (safetensors) + backbone identities
    predictions_*.json COCO results format
    result.json        metrics, written last: its presence means "finished"

Calling it again on a finished folder returns the stored result; on a killed one it resumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ituning.errors import ArgumentParser, ConfigError, cli_main, printable
from ituning.files import atomic_write_json
from ituning.phase_clock import PhaseClock
from ituning.run_config import TrainConfig, load_train_config
from ituning.yaml_input import load_yaml

# torch, transformers and open_clip take seconds to import: they are imported where they are used,
# so that `python -m ituning.train` reports a bad configuration at once and `bench` can read
# results without them.
if TYPE_CHECKING:
    import torch

    from ituning.data.records import CaptionDataset
    from ituning.distributed import DistContext
    from ituning.vision import VisionEncoder

__all__ = ["RunResult", "run_experiment", "main"]  # NonFiniteLossError: see __getattr__


def __getattr__(name: str):
    if name == "NonFiniteLossError":  # re-exported lazily (it lives with the torch training loop)
        from ituning.stage_loop import NonFiniteLossError

        return NonFiniteLossError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


MetricFn = Callable[[str, float, int], None]
StageFn = Callable[[str], None]
RESULT_FILE = "result.json"
SKIPPED_FILE = "skipped_images.json"


@dataclass
class RunResult:
    metrics: dict[str, float]
    unavailable: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, Path] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "metrics": self.metrics,
            "unavailable": self.unavailable,
            "artifacts": {k: str(v) for k, v in self.artifacts.items()},
        }

    @classmethod
    def from_json(cls, raw: dict) -> RunResult:
        return cls(
            metrics={k: float(v) for k, v in raw["metrics"].items()},
            unavailable=dict(raw.get("unavailable", {})),
            artifacts={k: Path(v) for k, v in raw.get("artifacts", {}).items()},
        )


def _write_json_atomic(path: Path, payload) -> None:
    atomic_write_json(path, payload, indent=2, sort_keys=True)


def finished_result(out_dir: Path) -> RunResult | None:
    """The stored result of a finished run folder, else ``None``.

    An unreadable ``result.json`` (damaged on disk: it is written atomically) counts as absent, so
    the run is evaluated again from its saved state instead of failing with a JSON traceback.
    """
    path = Path(out_dir) / RESULT_FILE
    try:
        return RunResult.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass
class LoadedData:
    captions: CaptionDataset
    train: CaptionDataset
    evals: dict[str, CaptionDataset]
    vlp: CaptionDataset | None
    #: Images left out by ``data.skip_bad_images``: file -> why it could not be read.
    skipped: dict[str, str] = field(default_factory=dict)


def load_data(cfg: TrainConfig) -> LoadedData:
    from ituning.data.karpathy import read_karpathy
    from ituning.data.nocaps import read_nocaps
    from ituning.data.records import CaptionDataset
    from ituning.data.visual_genome import read_visual_genome

    d = cfg.data
    captions = read_karpathy(d.captions, d.image_root)
    train = captions.split("train")
    if d.limit_train_images:
        train = CaptionDataset(train.name, train.image_root, train.records[: d.limit_train_images])
    evals = {}
    for split in cfg.eval.splits:
        evals[split] = captions.split(split)
    if cfg.eval.nocaps and d.nocaps is not None:
        evals["nocaps"] = read_nocaps(d.nocaps, d.nocaps_image_root or d.image_root)
    if d.limit_eval_images:
        evals = {
            k: CaptionDataset(v.name, v.image_root, first_images(v.records, d.limit_eval_images))
            for k, v in evals.items()
        }
    vlp = None
    if cfg.vlp:
        # VLP must never see an image the captioner is evaluated on (COCO val/test inside VG).
        held_out = {
            str(r.meta["cocoid"]) for r in captions if r.split != "train" and "cocoid" in r.meta
        }
        vlp = read_visual_genome(
            d.vlp_regions,
            d.vlp_image_data,
            d.vlp_image_root or d.vlp_regions.parent,
            exclude_coco_ids=held_out,
            limit=d.limit_vlp_images,
        )
    data = LoadedData(captions, train, evals, vlp)
    return _without_bad_images(data) if d.skip_bad_images else data


def _without_bad_images(data: LoadedData) -> LoadedData:
    """``data`` without the records whose image cannot be decoded (``load_image``, as training
    reads it), and which files those were. Images that decoded before, unchanged since, are not
    decoded again (:mod:`ituning.data.readable_images`): a sweep's points share the answer."""
    from ituning.data.readable_images import unreadable_images
    from ituning.data.records import CaptionDataset
    from ituning.errors import DataError

    datasets = [data.train, *data.evals.values(), *([data.vlp] if data.vlp is not None else [])]
    skipped: dict[str, str] = {}
    paths = {}
    for ds in datasets:
        for rec in ds:
            try:
                paths[rec.image_id, ds.name] = ds.image_path(rec)
            except DataError as exc:  # a file name that leaves the image root
                skipped[str(rec.file)] = str(exc)
    bad = unreadable_images(paths.values(), progress=False)
    skipped.update({str(path): why for path, why in bad.items()})

    def readable(ds: CaptionDataset) -> CaptionDataset:
        kept = [
            r
            for r in ds
            if (r.image_id, ds.name) in paths and paths[r.image_id, ds.name] not in bad
        ]
        return CaptionDataset(ds.name, ds.image_root, kept)

    return LoadedData(
        data.captions,
        readable(data.train),
        {k: readable(v) for k, v in data.evals.items()},
        readable(data.vlp) if data.vlp is not None else None,
        skipped,
    )


def first_images(records, limit: int) -> tuple:
    """The first ``limit`` records, taken in turn from each domain where records have domains.

    A NoCaps-style file lists its domains one after the other: cutting it in file order would
    evaluate in-domain images only.
    """
    by_domain: dict[str | None, list] = {}
    for rec in records:
        by_domain.setdefault(rec.domain, []).append(rec)
    if len(by_domain) == 1:
        return tuple(records[:limit])
    rounds = max(len(group) for group in by_domain.values())
    interleaved = [g[i] for i in range(rounds) for g in by_domain.values() if i < len(g)]
    return tuple(interleaved[:limit])


def feature_dtype(cfg: TrainConfig) -> torch.dtype:
    import torch

    return torch.float16 if cfg.feature_dtype == "float16" else torch.float32


def _visual_source(cfg: TrainConfig, encoder: VisionEncoder, datasets, dist: DistContext):
    """Cached patch tokens (extracted once, by rank 0) or the live encoder; identical tensors."""
    from ituning.data.features import CachedFeatures, FeatureCache, LiveFeatures

    dtype = feature_dtype(cfg)
    if cfg.features == "live":
        return LiveFeatures(encoder, datasets, dtype=dtype)
    cache = FeatureCache(cfg.feature_cache, encoder, dtype=dtype)
    if dist.is_main:
        for ds in datasets:
            cache.extract(ds)
    dist.barrier()
    return CachedFeatures(cache)


def run_experiment(
    config: TrainConfig,
    out_dir: Path,
    *,
    on_metric: MetricFn | None = None,
    on_stage: StageFn | None = None,
    progress: bool = True,
    scorer=None,
) -> RunResult:
    """Train (resuming if a state exists), evaluate, and write ``result.json`` last.

    ``scorer``: a :class:`~ituning.metrics.CaptionScorer` to reuse (a sweep worker passes one, so
    METEOR's JVM starts once per worker, not once per run); by default one is made and closed here.
    """
    import torch

    from ituning.backbones import load_lm
    from ituning.checkpoint import save_checkpoint
    from ituning.distributed import setup, teardown
    from ituning.methods.registry import build_captioner, clip_projection, is_clipcap
    from ituning.run_evaluation import evaluate_run
    from ituning.stage_loop import StageTrainer
    from ituning.text import CaptionCodec
    from ituning.vision import load_vision

    out_dir = Path(out_dir)
    stage = on_stage or (lambda name: None)
    resolved = json.loads(config.canonical_json())
    _check_same_run(out_dir, resolved)
    done = finished_result(out_dir)
    if done is not None:
        return done
    data = load_data(config)  # a bad dataset file fails here, before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(out_dir / "config.json", resolved)
    if data.skipped:
        _write_json_atomic(out_dir / SKIPPED_FILE, data.skipped)
    started = time.perf_counter()
    clock = PhaseClock()
    dist = setup(config.device)
    try:
        torch.manual_seed(config.seed)
        stage("load")
        with clock("load"):
            lm, tokenizer = load_lm(config.backbones.lm, progress=progress)
            encoder = load_vision(
                config.backbones.vision,
                config.backbones.vision_pretrained,
                include_cls=config.include_cls,
            )
            model = build_captioner(
                config.method,
                lm,
                encoder.width,
                itune=config.itune,
                clipcap=config.clipcap,
                projection=clip_projection(encoder.visual) if is_clipcap(config.method) else None,
                max_tokens=max(config.max_caption_tokens, 1 + config.eval.max_new_tokens),
            ).to(dist.device)
            encoder = encoder.to(dist.device)
            codec = CaptionCodec(tokenizer, max_tokens=config.max_caption_tokens)
        stage("features")
        with clock("features"):
            sources = [data.train, *data.evals.values(), *([data.vlp] if data.vlp else [])]
            visual = _visual_source(config, encoder, sources, dist)

        trainer = StageTrainer(
            model,
            codec,
            visual,
            config,
            dist,
            out_dir / "state",
            on_metric=on_metric,
            progress=progress,
        )
        curves = {}
        if data.vlp is not None:
            stage("vlp")
            with clock("vlp"):
                curves["vlp"] = trainer.fit("vlp", data.vlp.records, config.vlp_epochs)
        stage("train")
        with clock("train"):
            curves["train"] = trainer.fit("train", data.train.records, config.epochs)
        train_time = time.perf_counter() - started
        if not dist.is_main:
            return RunResult(metrics={})

        stage("checkpoint")
        ckpt = out_dir / "checkpoint"
        with clock("checkpoint"):
            save_checkpoint(
                model, ckpt, lm_id=config.backbones.lm, vision_id=_vision_identity(config, encoder)
            )
        stage("evaluate")
        result = evaluate_run(
            config, model, codec, encoder, visual, data, out_dir, progress, scorer, clock
        )
        counts = model.parameter_counts()
        result.metrics.update(
            {
                "train/final_loss": curves["train"][-1][1] if curves["train"] else float("nan"),
                "trainable_params": float(counts["trainable"]),
                "frozen_params": float(counts["frozen"]),
                "train_time_s": train_time,
                "train_captions_per_s": trainer.captions_per_s,
                "wall_time_s": time.perf_counter() - started,
                **clock.metrics(),
            }
        )
        result.artifacts.update({"config": out_dir / "config.json", "checkpoint": ckpt})
        if data.skipped:
            result.artifacts["skipped_images"] = out_dir / SKIPPED_FILE
        _write_json_atomic(out_dir / RESULT_FILE, result.to_json())
        return result
    finally:
        teardown(dist)


def _check_same_run(out_dir: Path, resolved: dict) -> None:
    """Refuse a folder that holds another configuration's run: resuming its state (or returning
    its result) would silently mix two experiments."""
    path = out_dir / "config.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # a new folder, or a run killed before its config was fully written
    if stored != resolved:
        changed = sorted(
            k for k in resolved.keys() | stored.keys() if stored.get(k) != resolved.get(k)
        )
        raise ConfigError(
            f"{out_dir} holds a run of another configuration (differs in {', '.join(changed)}); "
            "choose another run folder or delete this one"
        )


def _vision_identity(cfg: TrainConfig, encoder: VisionEncoder) -> dict:
    return {
        "name": cfg.backbones.vision,
        "pretrained": cfg.backbones.vision_pretrained,
        "include_cls": cfg.include_cls,
        "identity": encoder.identity,
    }


def _parse_overrides(pairs: list[str]) -> dict:
    overrides = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE (e.g. --set epochs=3)")
        key, value = pair.split("=", 1)
        # Plain data within the limits of a config file (a !!python tag is refused, never built).
        overrides[key] = load_yaml(value, printable(f"--set {key}"), "--set value")
    return overrides


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m ituning.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="YAML/JSON TrainConfig")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="run folder (default runs/train/<digest>)"
    )
    args = parser.parse_args(argv)
    cfg = load_train_config(args.config, _parse_overrides(args.set))
    out = args.out or Path("runs/train") / cfg.digest()
    result = run_experiment(cfg, out)
    if result.metrics:
        width = max(len(k) for k in result.metrics)
        for key in sorted(result.metrics):
            print(f"{key:<{width}}  {result.metrics[key]:.4f}")
        for key, why in sorted(result.unavailable.items()):
            print(f"{key:<{width}}  unavailable: {why}")
        print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
