"""The benchmarked models: random-weight LMs and ViTs built from configurations (no download)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig

from ituning.backbones import with_fused_activation
from ituning.inject import ITuningModel
from ituning.vision import VisionEncoder, vision_from_config


def build_lm(cfg: PretrainedConfig, seed: int, device: torch.device) -> nn.Module:
    """A random-weight causal LM (eval mode: no dropout in any arm), with the fused activation
    :func:`ituning.backbones.load_lm` gives every loaded LM."""
    torch.manual_seed(seed)
    lm = AutoModelForCausalLM.from_config(with_fused_activation(cfg))
    return lm.to(device).eval()


def build_vision(
    spec: str | dict[str, Any], device: torch.device, *, include_cls: bool = False
) -> VisionEncoder:
    """Random-weight open_clip ViT: a bundled model name, or a CLIP config dict (quick mode)."""
    torch.manual_seed(0)
    if isinstance(spec, str):
        return vision_from_config(spec, device="cpu", include_cls=include_cls).to(device)
    import open_clip

    clip = open_clip.CLIP(**spec)
    return VisionEncoder(
        clip.visual,
        name="tiny-vit",
        pretrained=None,
        include_cls=include_cls,
        preprocess=lambda image: image,
        preprocess_cfg={},
    ).to(device)


def perturb_modules(model: ITuningModel, std: float = 0.02, seed: int = 1) -> None:
    """Non-zero module weights (a fresh module's zero W_up^O would hide the image entirely)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
