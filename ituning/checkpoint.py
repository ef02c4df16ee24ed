"""Trained I-Tuning checkpoints: the module weights only, plus what is needed to rebuild the rest.

A checkpoint folder holds ``modules.safetensors`` (the ``itune.*`` tensors; ~57 MB for GPT-2 base in
fp32) and ``ituning.json`` (the :class:`ITuningConfig`, the LM id and weights digest, the vision
encoder's spec and identity, d_vis). The frozen backbones are never copied: they are reloaded by
name and checked against the recorded identities. Both files are written to a temporary name and
``os.replace``-d, so a crash never leaves a half-written checkpoint under the final name. Only
safetensors is read: no pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ituning.backbones import lm_identity, load_lm
from ituning.config import ITuningConfig
from ituning.errors import CheckpointError, ConfigError
from ituning.faultpoints import fault_point
from ituning.files import atomic_path, atomic_write_json
from ituning.inject import ITuningModel
from ituning.vision import VisionEncoder, load_vision

WEIGHTS = "modules.safetensors"
META = "ituning.json"
FORMAT = "ituning-modules/1"


def save_checkpoint(
    model: ITuningModel,
    out_dir: str | os.PathLike,
    *,
    lm_id: str,
    vision_id: dict[str, Any],
) -> None:
    """Write the module weights and metadata to ``out_dir`` (created if needed).

    ``lm_id`` is the name or folder the LM was loaded from (``load_lm``); ``vision_id`` is
    ``VisionEncoder.spec()`` (or any dict with at least ``name``, ``pretrained``, ``include_cls``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.module_state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    fault_point("checkpoint.save")
    meta = {
        "format": FORMAT,
        "config": model.config.model_dump(mode="json"),
        "lm": lm_identity(lm_id),
        "vision": dict(vision_id),
        "d_lm": model.d_lm,
        "d_vis": model.vision_width,
        "bottleneck": model.bottleneck,
        "kept_layers": model.kept_layers,
        "trainable_parameters": sum(p.numel() for p in model.trainable_parameters()),
    }
    atomic_write_json(out / META, meta, indent=2)


def load_checkpoint(ckpt_dir: str | os.PathLike) -> tuple[ITuningConfig, dict, dict[str, Tensor]]:
    """``(config, metadata, module weights)`` of a checkpoint; CheckpointError if unusable."""
    folder = Path(ckpt_dir)
    meta_path, weights_path = folder / META, folder / WEIGHTS
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"checkpoint '{folder}' has no {path.name}; was it saved?")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON ({exc}); re-save it") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    try:
        config = ITuningConfig(**meta["config"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"{meta_path}: bad I-Tuning config ({exc})") from None
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{weights_path} is truncated or not a safetensors file ({exc}); re-save it"
        ) from None
    return config, meta, state


def build_from_checkpoint(
    ckpt_dir: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    verify_backbones: bool = True,
):
    """Reload the frozen backbones named in the checkpoint, inject modules, load their weights.

    Returns ``(ITuningModel, tokenizer, VisionEncoder)`` on ``device``, in eval mode. With
    ``verify_backbones`` a backbone whose recorded digest differs from what loads now is an error:
    modules trained on other backbone weights produce nonsense silently.
    """
    config, meta, state = load_checkpoint(ckpt_dir)
    lm_name = meta["lm"]["name_or_path"]
    lm, tokenizer = load_lm(lm_name)
    if verify_backbones and meta["lm"].get("weights_sha256"):
        now = lm_identity(lm_name)["weights_sha256"]
        if now != meta["lm"]["weights_sha256"]:
            raise CheckpointError(
                f"checkpoint '{ckpt_dir}' was trained on other weights of LM '{lm_name}' "
                "(weights digest differs); retrain or restore that backbone"
            )
    vis = meta["vision"]
    vision: VisionEncoder = load_vision(
        vis["name"], vis.get("pretrained"), include_cls=bool(vis.get("include_cls", False))
    )
    if verify_backbones and vis.get("identity") and vision.identity != vis["identity"]:
        raise CheckpointError(
            f"checkpoint '{ckpt_dir}' expects vision encoder {vis['identity']!r}, "
            f"but '{vis['name']}' now loads as {vision.identity!r}"
        )
    if vision.include_cls != config.include_cls:
        raise CheckpointError(
            f"checkpoint '{ckpt_dir}': config.include_cls={config.include_cls} but the vision spec "
            f"says include_cls={vision.include_cls}"
        )
    model = ITuningModel(lm, int(meta["d_vis"]), config)
    model.load_module_state_dict(state)
    model.to(device)
    vision.to(device)
    model.eval()
    return model, tokenizer, vision
