"""The frozen vision encoder: an open_clip ViT's visual tower returning its token sequence V.

V is the ViT's output tokens after ``ln_post`` and *before* CLIP's projection (width 768 for
ViT-B/16), one vector per patch (196 at 224 px), optionally with the CLS token in front (197): the
paper attends over patch representations, not the pooled 512-d embedding.

A name is either an open_clip model name with a pretrained tag (``ViT-B-16`` + ``openai``, fetched
through the Hugging Face cache) or a local folder in open_clip's hub layout
(``open_clip_config.json`` with ``model_cfg``/``preprocess_cfg`` + ``open_clip_model.safetensors``),
loaded through open_clip's ``local-dir:`` schema: the same code path either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

from ituning.errors import BackboneError, first_line
from ituning.files import atomic_path, atomic_write_json
from ituning.hub_cache import local_first

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip logs through the root logger (random-init warnings, download errors) - errors
    here are raised as one-line BackboneErrors instead."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


class VisionEncoder(nn.Module):
    """Frozen open_clip ViT visual tower: ``(B, 3, H, W)`` pixels -> ``(B, N, width)`` tokens.

    Always in eval mode with ``requires_grad=False``; ``forward`` runs without autograd.
    """

    def __init__(
        self,
        visual: nn.Module,
        *,
        name: str,
        pretrained: str | None,
        include_cls: bool,
        preprocess: Callable[[Any], Tensor],
        preprocess_cfg: dict[str, Any],
    ) -> None:
        super().__init__()
        if not isinstance(visual, VisionTransformer):
            raise BackboneError(
                f"vision model '{name}' is a {type(visual).__name__}; only open_clip "
                "VisionTransformer towers (ViT-*) provide patch tokens"
            )
        if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
            raise BackboneError(
                f"vision model '{name}' pools with attn_pool/pool_type={visual.pool_type!r}/"
                "final_ln_after_pool; only CLS-token ViTs with ln_post on all tokens are supported"
            )
        self.visual = visual
        self.name = name
        self.pretrained = pretrained
        self.include_cls = include_cls
        self.preprocess = preprocess
        self.preprocess_cfg = dict(preprocess_cfg)
        self.width: int = int(visual.transformer.width)
        grid = visual.grid_size
        self.num_tokens: int = int(grid[0] * grid[1]) + int(include_cls)
        size = visual.image_size
        self.image_size: int = int(size[0] if isinstance(size, (tuple, list)) else size)
        visual.requires_grad_(False)
        visual.eval()

    def train(self, mode: bool = True) -> VisionEncoder:
        super().train(mode)
        self.visual.eval()
        return self

    @torch.no_grad()
    def forward(self, pixels: Tensor) -> Tensor:
        """Tokens after ``ln_post``: patches only, or CLS first when ``include_cls``."""
        captured: list[Tensor] = []
        handle = self.visual.ln_post.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            self.visual(pixels.to(self.visual.conv1.weight.dtype))
        finally:
            handle.remove()
        tokens = captured[-1]
        return tokens if self.include_cls else tokens[:, 1:]

    @cached_property
    def weights_sha256(self) -> str:
        """sha256 over the visual tower's state dict (names, dtypes, shapes, bytes)."""
        digest = hashlib.sha256()
        for key, tensor in sorted(self.visual.state_dict().items()):
            if tensor.device.type == "meta":
                return "meta"
            flat = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
            digest.update(flat.numpy().tobytes())
        return digest.hexdigest()

    @property
    def preprocess_summary(self) -> str:
        cfg = self.preprocess_cfg
        mean = ",".join(f"{m:.4f}" for m in cfg.get("mean", ()))
        std = ",".join(f"{s:.4f}" for s in cfg.get("std", ()))
        return (
            f"size={cfg.get('size')};mean={mean};std={std};interp={cfg.get('interpolation')};"
            f"resize={cfg.get('resize_mode')}"
        )

    def seen_region(self, width: int, height: int) -> tuple[float, float, float, float]:
        """``(left, top, right, bottom)`` of a ``width`` × ``height`` image, in its own pixels, that
        the patch grid covers after preprocessing: the centre square that "shortest" resizing
        crops, the square that "longest" pads around the image (beyond its edges), or the whole
        image when it is squashed. Attention maps belong over this region, not the whole image."""
        cfg = self.preprocess_cfg
        size = cfg.get("size", self.image_size)
        side = int(size[0] if isinstance(size, (tuple, list)) else size)
        mode = cfg.get("resize_mode", "shortest")
        if mode == "squash":
            return 0.0, 0.0, float(width), float(height)
        if mode == "longest":
            long = max(width, height)
            return (width - long) / 2, (height - long) / 2, (width + long) / 2, (height + long) / 2
        # torchvision: short side to ``side``, the long one truncated; then a rounded centre crop
        scale = side / min(width, height)
        if width <= height:
            resized_w, resized_h = side, int(side * height / width)
        else:
            resized_w, resized_h = int(side * width / height), side
        left = int(round((resized_w - side) / 2.0))
        top = int(round((resized_h - side) / 2.0))
        return left / scale, top / scale, (left + side) / scale, (top + side) / scale

    @cached_property
    def identity(self) -> str:
        """Stable string naming exactly this V: model, weights digest, preprocessing, CLS choice."""
        return (
            f"{self.name}|pretrained={self.pretrained}|sha256={self.weights_sha256[:16]}|"
            f"{self.preprocess_summary}|cls={int(self.include_cls)}"
        )

    def spec(self) -> dict[str, Any]:
        """What a checkpoint records to rebuild and verify this encoder (see ituning.checkpoint)."""
        return {
            "name": self.name,
            "pretrained": self.pretrained,
            "include_cls": self.include_cls,
            "width": self.width,
            "num_tokens": self.num_tokens,
            "identity": self.identity,
        }


def _resolve(name: str | os.PathLike) -> tuple[str, str, bool]:
    """(display name, open_clip model name, is_local_dir)."""
    text = str(name)
    if text.startswith(open_clip.factory.LOCAL_DIR_PREFIX):
        text = text[len(open_clip.factory.LOCAL_DIR_PREFIX) :]
    elif not Path(text).expanduser().is_dir():
        if text.startswith((".", "/", "~")) or text.count("/") > 0:
            raise BackboneError(f"vision encoder folder '{text}' does not exist")
        if open_clip.get_model_config(text) is None:
            raise BackboneError(
                f"unknown open_clip model '{text}' (see open_clip.list_models()) and no such folder"
            )
        return text, text, False
    folder = Path(text).expanduser()
    if not (folder / CONFIG_FILE).is_file():
        raise BackboneError(
            f"vision encoder folder '{text}' has no {CONFIG_FILE}; save it with "
            "ituning.vision.save_clip_folder"
        )
    return text, f"{open_clip.factory.LOCAL_DIR_PREFIX}{folder}", True


def load_vision(
    name: str | os.PathLike = "ViT-B-16",
    pretrained: str | None = "openai",
    *,
    include_cls: bool = False,
    device: torch.device | str = "cpu",
) -> VisionEncoder:
    """Frozen visual tower + its eval preprocessing.

    For a folder ``pretrained`` is ignored (the folder holds the weights). ``pretrained=None`` with a
    model name gives random weights (tests only). Tags trained with QuickGELU (``openai``) get
    ``force_quick_gelu``: open_clip's plain ``ViT-B-16`` config uses GELU, which would silently
    change every feature.
    """
    display, model_name, local = _resolve(name)
    kwargs: dict[str, Any] = {}
    tag_cfg: dict[str, Any] = {}
    if local:
        pretrained = None
        folder = Path(display).expanduser()
        if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
            raise BackboneError(
                f"vision encoder folder '{display}' has no weights ({WEIGHTS_FILE}); save it with "
                "ituning.vision.save_clip_folder"
            )
        kwargs["require_pretrained"] = True
    elif pretrained is not None:
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(model_name)
            raise BackboneError(
                f"open_clip has no pretrained tag '{pretrained}' for '{model_name}'; known: {tags}"
            )
        kwargs["force_quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
        kwargs["require_pretrained"] = True
    try:
        with _quiet_open_clip():
            model, _, preprocess = local_first(
                lambda: open_clip.create_model_and_transforms(
                    model_name, pretrained=pretrained, device=device, **kwargs
                )
            )
    except Exception as exc:  # open_clip raises RuntimeError/OSError/ValueError for all of these
        first = first_line(exc)
        if local:
            raise BackboneError(f"cannot load vision encoder from '{display}': {first}") from None
        hub = (tag_cfg.get("hf_hub") or "").strip("/")
        fetch = f"`hf download {hub}`" if hub else f"open_clip (url {tag_cfg.get('url')})"
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        how = "offline" if offline else f"from the Hugging Face cache or the Hub ({first})"
        raise BackboneError(
            f"cannot load vision encoder '{model_name}' ('{pretrained}' weights) {how}: not in "
            f"the Hugging Face cache (HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}). "
            f"Fetch it once with {fetch} on a machine with network, or pass a local folder."
        ) from None
    return VisionEncoder(
        model.visual,
        name=display,
        pretrained=pretrained,
        include_cls=include_cls,
        preprocess=preprocess,
        preprocess_cfg=open_clip.get_model_preprocess_cfg(model),
    )


def vision_from_config(
    name: str | os.PathLike = "ViT-B-16",
    device: torch.device | str = "meta",
    *,
    include_cls: bool = False,
) -> VisionEncoder:
    """The architecture alone (no weights; on the meta device by default) for shapes and counts:
    open_clip's bundled config for a model name, ``open_clip_config.json`` for a folder."""
    display, model_name, _ = _resolve(name)
    with _quiet_open_clip(), torch.device(device):
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=None, load_weights=False, device=device
        )
    return VisionEncoder(
        model.visual,
        name=display,
        pretrained=None,
        include_cls=include_cls,
        preprocess=preprocess,
        preprocess_cfg=open_clip.get_model_preprocess_cfg(model),
    )


def save_clip_folder(
    model: nn.Module,
    model_cfg: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    preprocess_cfg: dict[str, Any] | None = None,
) -> Path:
    """Write a whole open_clip model in the layout :func:`load_vision` reads as a folder.

    ``model_cfg`` is the dict open_clip builds the model from; ``preprocess_cfg`` defaults to the
    model's own (set by open_clip at creation).
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pre = dict(preprocess_cfg or open_clip.get_model_preprocess_cfg(model))
    pre = {k: list(v) if isinstance(v, tuple) else v for k, v in pre.items()}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    atomic_write_json(out / CONFIG_FILE, {"model_cfg": model_cfg, "preprocess_cfg": pre}, indent=2)
    return out
