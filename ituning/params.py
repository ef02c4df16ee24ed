"""Trainable/frozen parameter counts without weights (the paper's "#Params" column).

Builds the LM from its configuration alone and the vision tower from open_clip's bundled config, both
on the meta device (no memory, no download), injects the modules exactly as training does, and
counts. ``python -m ituning.params --lm gpt2-large --drop-first 18 --json``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from ituning.backbones import lm_config
from ituning.config import ITuningConfig
from ituning.errors import ArgumentParser, cli_main
from ituning.inject import ITuningModel
from ituning.module import ITuningModule
from ituning.vision import vision_from_config


def count_parameters(
    lm: str,
    *,
    config: ITuningConfig | None = None,
    vision: str | os.PathLike = "ViT-B-16",
) -> dict[str, Any]:
    """Counts for LM ``lm`` (shipped GPT-2 name, Hub id in the cache, or local folder) + ``vision``.

    ``frozen`` is the LM (tied embeddings counted once) plus the whole visual tower.
    """
    config = config or ITuningConfig()
    cfg = lm_config(lm)
    with torch.device("meta"):
        lm_model = AutoModelForCausalLM.from_config(cfg)
    enc = vision_from_config(vision, device="meta", include_cls=config.include_cls)
    model = ITuningModel(lm_model, enc.width, config)
    trainable = sum(p.numel() for p in model.trainable_parameters())
    lm_params = sum(p.numel() for p in lm_model.parameters())
    vis_params = sum(p.numel() for p in enc.parameters())
    r = model.bottleneck
    per_layer = ITuningModule.num_parameters(model.d_lm, enc.width, r)
    assert trainable == per_layer * len(model.kept_layers), "module shapes drifted from the formula"
    return {
        "lm": {
            "name": str(lm),
            "d_lm": model.d_lm,
            "n_layers": cfg.num_hidden_layers,
            "params": lm_params,
        },
        "vision": {
            "name": str(vision),
            "width": enc.width,
            "num_tokens": enc.num_tokens,
            "params": vis_params,
        },
        "bottleneck": r,
        "drop_first": config.drop_first,
        "kept_layers": model.kept_layers,
        "per_layer": per_layer,
        "trainable": trainable,
        "frozen": lm_params + vis_params,
        "trainable_millions": round(trainable / 1e6, 2),
    }


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m ituning.params", description=__doc__)
    parser.add_argument("--lm", default="gpt2", help="gpt2 | gpt2-medium | gpt2-large | folder")
    parser.add_argument("--vision", default="ViT-B-16", help="open_clip model name or folder")
    parser.add_argument("--drop-first", type=int, default=0, help="I-Tuning Dropping: first N")
    parser.add_argument("--bottleneck", type=int, default=None, help="r (default d_lm // 2)")
    parser.add_argument("--include-cls", action="store_true", help="V includes CLIP's CLS token")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    config = ITuningConfig(
        drop_first=args.drop_first, bottleneck=args.bottleneck, include_cls=args.include_cls
    )
    counts = count_parameters(args.lm, config=config, vision=args.vision)
    if args.json:
        print(json.dumps(counts, indent=2))
        return 0
    kept = counts["kept_layers"]
    print(
        f"{counts['lm']['name']} (d_lm={counts['lm']['d_lm']}, {counts['lm']['n_layers']} layers) + "
        f"{counts['vision']['name']} (d_vis={counts['vision']['width']}, "
        f"N={counts['vision']['num_tokens']}), r={counts['bottleneck']}"
    )
    print(f"modules in layers {kept[0]}..{kept[-1]} ({len(kept)}), {counts['per_layer']:,} each")
    print(f"trainable {counts['trainable']:,} ({counts['trainable'] / 1e6:.2f}M)")
    print(f"frozen    {counts['frozen']:,} ({counts['frozen'] / 1e6:.2f}M)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
