"""Trainable/frozen parameter counts without weights (the paper's "#Params" column).

Builds the LM from its configuration alone and the vision tower from open_clip's bundled config, both
on the meta device (no memory, no download), builds each method's trainable part as training does,
and counts. ``python -m ituning.params --lm gpt2-large --drop-first 18 --json``.

Methods (``--method``):

* ``itune`` (default): the I-Tuning modules; the LM and the visual tower frozen.
* ``full``: the same modules plus every LM weight (tied embeddings once).
* ``clipcap-transformer`` / ``clipcap-mlp``: ClipCap's mapper from CLIP's pooled image embedding
  (width ``d_clip``, the tower's projection output: 512 for ViT-B-16), plus the LM when the
  variant fine-tunes it (``clipcap-mlp``); ``--prefix-length``/``--clip-length``/``--num-layers``
  override the published defaults. :mod:`ituning.methods.clipcap_accounting` compares them with
  the 43M the paper prints for ClipCap.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM

from ituning.backbones import lm_config
from ituning.config import ITuningConfig
from ituning.errors import ArgumentParser, BackboneError, ConfigError, cli_main, validation_line
from ituning.inject import ITuningModel
from ituning.methods.clipcap_config import VARIANTS, ClipCapConfig
from ituning.methods.mappers import build_mapper, mapper_parameter_count
from ituning.module import ITuningModule
from ituning.vision import VisionEncoder, vision_from_config

METHODS = ("itune", "full", *VARIANTS)


def clip_embedding_width(enc: VisionEncoder) -> int:
    """d_clip: the width of CLIP's pooled image embedding, the output of the tower's ``proj``."""
    proj = getattr(enc.visual, "proj", None)
    if proj is None:
        raise BackboneError(
            f"vision model '{enc.name}' has no CLIP image projection (proj); ClipCap maps the "
            "projected embedding, so it needs a tower that has one"
        )
    return int(proj.shape[1])


def count_parameters(
    lm: str,
    *,
    config: ITuningConfig | None = None,
    vision: str | os.PathLike = "ViT-B-16",
    method: str = "itune",
    clipcap: ClipCapConfig | None = None,
) -> dict[str, Any]:
    """Counts for ``method`` on LM ``lm`` (shipped GPT-2 name, Hub id in the cache, or local folder)
    + ``vision``. ``config`` shapes the I-Tuning modules (``itune``/``full``), ``clipcap`` the
    mapper (default: the variant's published settings).

    ``frozen`` is the whole visual tower plus the LM (tied embeddings counted once) unless the method
    trains it.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method '{method}'; one of {', '.join(METHODS)}")
    cfg = lm_config(lm)
    with torch.device("meta"):
        lm_model = AutoModelForCausalLM.from_config(cfg)
    lm_params = sum(p.numel() for p in lm_model.parameters())
    if method in VARIANTS:
        return _count_clipcap(lm, cfg, lm_model, lm_params, vision, clipcap, method)
    config = config or ITuningConfig()
    enc = vision_from_config(vision, device="meta", include_cls=config.include_cls)
    train_lm = method == "full"
    model = ITuningModel(lm_model, enc.width, config, train_lm=train_lm)
    trainable = sum(p.numel() for p in model.trainable_parameters())
    vis_params = sum(p.numel() for p in enc.parameters())
    r = model.bottleneck
    per_layer = ITuningModule.num_parameters(model.d_lm, enc.width, r)
    modules = per_layer * len(model.kept_layers)
    if trainable != modules + lm_params * train_lm:
        raise AssertionError("module shapes drifted from the formula")
    counts: dict[str, Any] = {
        **_backbones(method, lm, cfg, model.d_lm, lm_params, vision, enc, vis_params),
        "bottleneck": r,
        "drop_first": config.drop_first,
        "kept_layers": model.kept_layers,
        "per_layer": per_layer,
    }
    if train_lm:
        counts["modules"] = modules
    return {
        **counts,
        "trainable": trainable,
        "frozen": lm_params * (not train_lm) + vis_params,
        "trainable_millions": round(trainable / 1e6, 2),
    }


def _count_clipcap(
    lm: str,
    cfg: Any,
    lm_model: torch.nn.Module,
    lm_params: int,
    vision: str | os.PathLike,
    clipcap: ClipCapConfig | None,
    method: str,
) -> dict[str, Any]:
    clipcap = clipcap or ClipCapConfig.for_method(method)
    if clipcap.mapper != VARIANTS[method]:
        raise ConfigError(f"{method} takes a {VARIANTS[method]} mapper, got {clipcap.mapper!r}")
    enc = vision_from_config(vision, device="meta", include_cls=True)  # ClipCap pools CLS
    d_clip = clip_embedding_width(enc)
    d_lm = int(lm_model.get_input_embeddings().weight.shape[1])
    with torch.device("meta"):
        mapper = build_mapper(d_clip, d_lm, clipcap)
    count = mapper_parameter_count(d_clip, d_lm, clipcap)
    if count != sum(p.numel() for p in mapper.parameters()):
        raise AssertionError("mapper shapes drifted from the formula")
    vis_params = sum(p.numel() for p in enc.parameters())
    trainable = count + lm_params * clipcap.train_lm
    return {
        **_backbones(method, lm, cfg, d_lm, lm_params, vision, enc, vis_params),
        "d_clip": d_clip,
        "clipcap": clipcap.model_dump(),
        "mapper": count,
        "trainable": trainable,
        "frozen": lm_params * (not clipcap.train_lm) + vis_params,
        "trainable_millions": round(trainable / 1e6, 2),
    }


def _clipcap_config(method: str, args: Any) -> ClipCapConfig:
    """The variant's published settings with the command line's overrides."""
    overrides = {
        key: value
        for key in ("prefix_length", "clip_length", "num_layers")
        if (value := getattr(args, key)) is not None
    }
    if VARIANTS[method] == "mlp" and overrides.keys() - {"prefix_length"}:
        raise ConfigError("--clip-length/--num-layers shape the transformer mapper only")
    try:
        return ClipCapConfig(**{**ClipCapConfig.for_method(method).model_dump(), **overrides})
    except ValidationError as exc:
        raise ConfigError(validation_line(exc, prefix="clipcap")) from None


def _print_summary(counts: dict[str, Any]) -> None:
    lm, vis = counts["lm"], counts["vision"]
    head = f"{lm['name']} (d_lm={lm['d_lm']}, {lm['n_layers']} layers) + {vis['name']} "
    if counts["method"] in VARIANTS:
        c = counts["clipcap"]
        print(f"{head}(d_clip={counts['d_clip']})")
        shape = f"prefix {c['prefix_length']}"
        if c["mapper"] == "transformer":
            shape += (
                f", clip {c['clip_length']}, {c['num_layers']} layers x {c['num_heads']} heads, "
                f"mlp ratio {c['mlp_ratio']:g}"
            )
        print(f"ClipCap {c['mapper']} mapper ({shape}): {counts['mapper']:,}")
        print(f"LM {'fine-tuned' if c['train_lm'] else 'frozen'}: {lm['params']:,}")
    else:
        kept = counts["kept_layers"]
        print(f"{head}(d_vis={vis['width']}, N={vis['num_tokens']}), r={counts['bottleneck']}")
        print(
            f"modules in layers {kept[0]}..{kept[-1]} ({len(kept)}), {counts['per_layer']:,} each"
        )
        if counts["method"] == "full":
            print(f"LM fine-tuned: {lm['params']:,}")
    print(f"trainable {counts['trainable']:,} ({counts['trainable'] / 1e6:.2f}M)")
    print(f"frozen    {counts['frozen']:,} ({counts['frozen'] / 1e6:.2f}M)")


def _backbones(method, lm, cfg, d_lm: int, lm_params: int, vision, enc, vis_params: int) -> dict:
    """The part of a count every method shares: the method, the LM and the vision tower."""
    return {
        "method": method,
        "lm": {
            "name": str(lm),
            "d_lm": d_lm,
            "n_layers": cfg.num_hidden_layers,
            "params": lm_params,
        },
        "vision": {
            "name": str(vision),
            "width": enc.width,
            "num_tokens": enc.num_tokens,
            "params": vis_params,
        },
    }


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m ituning.params", description=__doc__)
    parser.add_argument(
        "--lm",
        default="gpt2",
        help="gpt2 | gpt2-medium | gpt2-large | HuggingFaceTB/SmolLM2-135M[-Instruct] | "
        "HuggingFaceTB/SmolLM2-360M | HuggingFaceTB/SmolLM2-1.7B | another Hub id | folder",
    )
    parser.add_argument("--vision", default="ViT-B-16", help="open_clip model name or folder")
    parser.add_argument("--method", choices=METHODS, default="itune", help="what trains")
    parser.add_argument("--drop-first", type=int, default=0, help="I-Tuning Dropping: first N")
    parser.add_argument("--bottleneck", type=int, default=None, help="r (default d_lm // 2)")
    parser.add_argument("--include-cls", action="store_true", help="V includes CLIP's CLS token")
    parser.add_argument("--prefix-length", type=int, default=None, help="ClipCap: prefix vectors")
    parser.add_argument("--clip-length", type=int, default=None, help="ClipCap transformer: C")
    parser.add_argument("--num-layers", type=int, default=None, help="ClipCap transformer layers")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if args.method in VARIANTS:
        if args.drop_first or args.bottleneck is not None or args.include_cls:
            raise ConfigError("--drop-first/--bottleneck/--include-cls shape I-Tuning modules only")
        clipcap = _clipcap_config(args.method, args)
        counts = count_parameters(args.lm, vision=args.vision, method=args.method, clipcap=clipcap)
    else:
        if any(
            getattr(args, k) is not None for k in ("prefix_length", "clip_length", "num_layers")
        ):
            raise ConfigError("--prefix-length/--clip-length/--num-layers are ClipCap options")
        config = ITuningConfig(
            drop_first=args.drop_first, bottleneck=args.bottleneck, include_cls=args.include_cls
        )
        counts = count_parameters(args.lm, config=config, vision=args.vision, method=args.method)
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    _print_summary(counts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
