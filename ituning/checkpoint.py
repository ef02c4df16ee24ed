"""Trained I-Tuning checkpoints: the module weights only, plus what is needed to rebuild the rest.

A checkpoint folder holds ``modules.safetensors`` (the ``itune.*`` tensors; ~57 MB for GPT-2 base in
fp32) and ``ituning.json`` (:class:`CheckpointMeta`: the :class:`ITuningConfig`, the LM id and
weights digest, the vision encoder's spec and identity, d_vis, and the sha256 of
``modules.safetensors`` itself). The frozen backbones are never copied: they are reloaded by name
and checked against the recorded identities. Both files are written to a temporary name and
``os.replace``-d, the metadata last, so ``ituning.json`` existing means the checkpoint is complete.
Only safetensors is read: no pickle. A checkpoint is untrusted input: every way it can be damaged
(flipped bytes, truncation, malformed or hostile metadata, a FIFO in place of a file) is one
:class:`CheckpointError` line, never a traceback or a hang.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from ituning.backbones import lm_identity, load_lm
from ituning.config import ITuningConfig
from ituning.errors import CheckpointError, validation_line
from ituning.faultpoints import fault_point
from ituning.files import atomic_path, atomic_write_json, sha256_file
from ituning.methods.base import Captioner
from ituning.methods.clipcap_config import ClipCapConfig
from ituning.methods.registry import Method, build_captioner, clip_projection, is_clipcap
from ituning.targets import hidden_size
from ituning.vision import VisionEncoder, load_vision

WEIGHTS = "modules.safetensors"
META = "ituning.json"
FORMAT = "ituning-modules/1"
#: ``ituning.json`` is a few KB; anything far bigger is not one, and is not read into memory.
META_MAX_BYTES = 1 << 20
#: What to do about a damaged checkpoint: it cannot be repaired in place.
FIX = "restore the checkpoint folder from a copy or retrain the run"


def _printable(text: str) -> str:
    """Names end up in one-line error messages and file-system calls: no control characters."""
    if not text.isprintable():
        raise ValueError("must be printable text (no control characters or line breaks)")
    return text


Name = Annotated[str, Field(min_length=1, max_length=4096), AfterValidator(_printable)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Meta(BaseModel):
    """Strict JSON types (``"32"`` is not a width); unknown keys are kept (forward-compatible)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class LMIdentity(_Meta):
    """:func:`ituning.backbones.lm_identity`: the id the LM loads by, a digest for folders."""

    name_or_path: Name
    weights_sha256: Sha256 | None = None


class VisionIdentity(_Meta):
    """:meth:`ituning.vision.VisionEncoder.spec`: how to reload the encoder and what it must be."""

    name: Name
    pretrained: Name | None = None
    include_cls: bool = False
    identity: str | None = None


class CheckpointMeta(_Meta):
    """``ituning.json``. ``modules_sha256`` is absent from checkpoints of older code (they load
    without the check), and so are ``method`` and ``clipcap`` (they are I-Tuning's); the counts
    after them are for readers, loading does not need them."""

    format: Literal[FORMAT]
    method: Method = "itune"
    config: ITuningConfig
    clipcap: ClipCapConfig | None = None
    lm: LMIdentity
    vision: VisionIdentity
    d_vis: int = Field(ge=1)
    modules_sha256: Sha256 | None = None
    d_lm: int | None = None
    bottleneck: int | None = None
    kept_layers: list[int] | None = None
    trainable_parameters: int | None = None


def save_checkpoint(
    model: Captioner,
    out_dir: str | os.PathLike,
    *,
    lm_id: str,
    vision_id: dict,
) -> None:
    """Write the module weights and metadata to ``out_dir`` (created if needed).

    ``lm_id`` is the name or folder the LM was loaded from (``load_lm``); ``vision_id`` is
    ``VisionEncoder.spec()`` (or any dict with at least ``name``, ``pretrained``, ``include_cls``).
    An old ``ituning.json`` is removed first: a kill between the two writes then leaves a folder
    that says "not saved", not new weights beside the old weights' digest.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / META).unlink(missing_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.module_state_dict().items()}
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
        digest = sha256_file(tmp)  # the bytes on disk, which the rename keeps
    fault_point("checkpoint.save")
    itune = model.config if isinstance(model.config, ITuningConfig) else ITuningConfig()
    meta = CheckpointMeta.model_validate(
        {
            "format": FORMAT,
            "method": model.method,
            "config": itune,
            "clipcap": model.config if isinstance(model.config, ClipCapConfig) else None,
            "lm": lm_identity(lm_id),
            "vision": dict(vision_id),
            "d_vis": model.vision_width,
            "modules_sha256": digest,
            "d_lm": model.d_lm,
            "bottleneck": getattr(model, "bottleneck", None),
            "kept_layers": getattr(model, "kept_layers", None),
            "trainable_parameters": sum(p.numel() for p in model.trainable_parameters()),
        }
    )
    atomic_write_json(out / META, meta.model_dump(mode="json"), indent=2)


def _one_line(text: str, limit: int = 300) -> str:
    """Metadata errors quote keys and values from the file: fold their line breaks, cut them short."""
    line = " ".join(text.split())
    return line if len(line) <= limit else f"{line[: limit - 3]}..."


def _regular_file(folder: Path, name: str) -> Path:
    """``folder/name`` if it is a regular file; reading a FIFO or device would block or never end."""
    path = folder / name
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise CheckpointError(f"checkpoint '{folder}' has no {name}; was it saved?") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc}); {FIX}") from None
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path} is not a regular file (a folder, FIFO or device); {FIX}")
    return path


def _read_meta(path: Path) -> CheckpointMeta:
    try:
        with path.open("rb") as fh:
            raw = fh.read(META_MAX_BYTES + 1)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc}); {FIX}") from None
    if len(raw) > META_MAX_BYTES:
        raise CheckpointError(
            f"{path} is over {META_MAX_BYTES >> 20} MiB, not checkpoint metadata (a few KB); {FIX}"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: byte {exc.start}: not UTF-8 JSON; {FIX}") from None
    try:
        return CheckpointMeta.model_validate_json(text)
    except ValidationError as exc:
        line = _one_line(validation_line(exc, str(path)))
        raise CheckpointError(f"{line} (not I-Tuning checkpoint metadata); {FIX}") from None


def _check_safetensors(path: Path) -> None:
    """Parse the header only: safetensors checks that it covers the file exactly (truncation)."""
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as exc:
        reason = _one_line(str(exc))
        raise CheckpointError(
            f"{path} is truncated or not a safetensors file ({reason}); {FIX}"
        ) from None


def _verified_meta(folder: Path) -> CheckpointMeta:
    if not folder.is_dir():
        raise CheckpointError(
            f"checkpoint folder '{folder}' does not exist; pass a run's checkpoint/"
        )
    meta_path = _regular_file(folder, META)  # first: without it the checkpoint was never finished
    weights = _regular_file(folder, WEIGHTS)
    _check_safetensors(weights)  # first: a pickle in its place is named as such, whatever the meta
    meta = _read_meta(meta_path)
    if meta.modules_sha256 is not None and sha256_file(weights) != meta.modules_sha256:
        raise CheckpointError(
            f"{weights}: the module weights do not match the sha256 recorded in {META} at save "
            f"(corrupt or replaced); {FIX}"
        )
    return meta


def verify_checkpoint(ckpt_dir: str | os.PathLike) -> None:
    """CheckpointError (one line) unless ``ckpt_dir`` holds a complete, intact checkpoint.

    Cheap: regular files, the weights' safetensors header, the metadata's schema and the weights'
    sha256 (when recorded); no tensor is loaded and no backbone touched. For a harness deciding
    whether a finished run's checkpoint can be kept.
    """
    _verified_meta(Path(ckpt_dir))


def load_checkpoint(
    ckpt_dir: str | os.PathLike,
) -> tuple[ITuningConfig, CheckpointMeta, dict[str, Tensor]]:
    """``(config, metadata, module weights)`` of a verified checkpoint; CheckpointError if unusable."""
    folder = Path(ckpt_dir)
    meta = _verified_meta(folder)
    weights = folder / WEIGHTS
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        reason = _one_line(str(exc))
        raise CheckpointError(
            f"{weights} is truncated or not a safetensors file ({reason}); {FIX}"
        ) from None
    return meta.config, meta, state


def _check_shapes(ckpt_dir, config: ITuningConfig, d_lm: int, d_vis: int, state: dict) -> None:
    """Metadata and weights must agree before modules are built: a damaged ``bottleneck`` would
    otherwise allocate whatever it says."""
    want = (config.resolved_bottleneck(d_lm), d_vis)
    shapes = {tuple(t.shape) for k, t in state.items() if k.endswith(".k_down.weight")}
    if shapes != {want}:
        raise CheckpointError(
            f"checkpoint '{ckpt_dir}': its weights have k_down shapes {sorted(shapes)}, its "
            f"metadata says (r, d_vis) = {want}; {FIX}"
        )


def build_from_checkpoint(
    ckpt_dir: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    verify_backbones: bool = True,
):
    """Reload the frozen backbones named in the checkpoint, inject modules, load their weights.

    Returns ``(model, tokenizer, VisionEncoder)`` on ``device``, in eval mode; the model is the
    checkpoint's method (:mod:`ituning.methods.registry`). With
    ``verify_backbones`` a backbone whose recorded digest differs from what loads now is an error:
    modules trained on other backbone weights produce nonsense silently.
    """
    config, meta, state = load_checkpoint(ckpt_dir)
    lm_name = meta.lm.name_or_path
    lm, tokenizer = load_lm(lm_name)
    recorded = meta.lm.weights_sha256
    if verify_backbones and recorded and lm_identity(lm_name)["weights_sha256"] != recorded:
        raise CheckpointError(
            f"checkpoint '{ckpt_dir}' was trained on other weights of LM '{lm_name}' "
            "(weights digest differs); retrain or restore that backbone"
        )
    vis = meta.vision
    vision: VisionEncoder = load_vision(vis.name, vis.pretrained, include_cls=vis.include_cls)
    if verify_backbones and vis.identity and vision.identity != vis.identity:
        raise CheckpointError(
            f"checkpoint '{ckpt_dir}' expects vision encoder {vis.identity!r}, "
            f"but '{vis.name}' now loads as {vision.identity!r}"
        )
    needs_cls = config.include_cls or is_clipcap(meta.method)
    if vision.include_cls != needs_cls:
        raise CheckpointError(
            f"checkpoint '{ckpt_dir}': method {meta.method} reads include_cls={needs_cls} tokens "
            f"but the vision spec says include_cls={vision.include_cls}"
        )
    if meta.d_vis != vision.width:
        raise CheckpointError(
            f"checkpoint '{ckpt_dir}' records d_vis={meta.d_vis}, but its vision encoder "
            f"'{vis.name}' is {vision.width} wide; {FIX}"
        )
    if not is_clipcap(meta.method):
        _check_shapes(ckpt_dir, config, hidden_size(lm), meta.d_vis, state)
    model = build_captioner(
        meta.method,
        lm,
        meta.d_vis,
        itune=config,
        clipcap=meta.clipcap,
        projection=clip_projection(vision.visual) if is_clipcap(meta.method) else None,
    )
    model.load_module_state_dict(state)
    model.to(device)
    vision.to(device)
    model.eval()
    return model, tokenizer, vision
