"""The fully resolved description of one training-and-evaluation run.

Every default lives here, once. A sweep point (``bench``) resolves to exactly one
:class:`TrainConfig`; its canonical JSON is what the run id hashes, so two runs with equal configs
are the same run. Paths are kept as given (relative to the working directory) so that the hash does
not depend on where a checkout lives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ituning.config import ITuningConfig
from ituning.errors import ConfigError, first_line, validation_line
from ituning.files import canonical_json, read_text, sha256_text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackboneSpec(_Strict):
    """Which frozen backbones to load: HF names or local folders (see ``ituning.backbones``)."""

    lm: str = "gpt2"
    vision: str = "ViT-B-16"
    vision_pretrained: str | None = "openai"


class DataSpec(_Strict):
    """Where the captioning, NoCaps-style and VLP data live (all optional but ``captions``)."""

    captions: Path = Field(description="Karpathy-format dataset_*.json")
    image_root: Path
    nocaps: Path | None = None
    nocaps_image_root: Path | None = None
    vlp_regions: Path | None = None
    vlp_image_data: Path | None = None
    vlp_image_root: Path | None = None
    limit_train_images: int | None = Field(default=None, ge=1)
    limit_eval_images: int | None = Field(default=None, ge=1)


class OptimSpec(_Strict):
    """AdamW with linear warm-up then cosine decay (the paper names AdamW only)."""

    lr: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    grad_clip: float | None = Field(default=1.0, gt=0)


class EvalSpec(_Strict):
    """Decoding and scoring. Beam 5 is the paper's setting."""

    splits: tuple[str, ...] = ("test",)
    nocaps: bool = True
    beam: int = Field(default=5, ge=1)
    max_new_tokens: int = Field(default=20, ge=1)
    length_penalty: float = 1.0
    batch_images: int = Field(default=32, ge=1)
    blank_control: bool = False
    grounding: bool = False


class TrainConfig(_Strict):
    backbones: BackboneSpec = BackboneSpec()
    itune: ITuningConfig = ITuningConfig()
    data: DataSpec
    optim: OptimSpec = OptimSpec()
    eval: EvalSpec = EvalSpec()
    epochs: int = Field(default=30, ge=1)
    vlp: bool = False
    vlp_epochs: int = Field(default=10, ge=1)
    batch_captions: int = Field(default=4096, ge=1, description="effective batch, by accumulation")
    micro_batch_images: int = Field(default=32, ge=1)
    captions_per_image: int = Field(default=5, ge=1)
    max_caption_tokens: int = Field(default=32, ge=4)
    seed: int = 0
    features: Literal["cache", "live"] = "cache"
    feature_cache: Path = Path("runs/features")
    feature_dtype: Literal["float16", "float32"] = "float16"
    checkpoint_every: int = Field(
        default=50, ge=1, description="optimiser steps between checkpoints"
    )
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    fail_on_nonfinite: bool = True

    @model_validator(mode="after")
    def _batch_holds_whole_images(self) -> TrainConfig:
        if self.batch_captions < self.captions_per_image:
            raise ValueError(
                f"batch_captions ({self.batch_captions}) must hold at least one image's "
                f"{self.captions_per_image} captions"
            )
        if self.vlp and (self.data.vlp_regions is None or self.data.vlp_image_data is None):
            raise ValueError("vlp: true needs data.vlp_regions and data.vlp_image_data")
        return self

    @property
    def images_per_step(self) -> int:
        """Images per optimiser step: the effective caption batch in whole images."""
        return max(1, self.batch_captions // self.captions_per_image)

    def canonical_json(self) -> str:
        return canonical_json(self.model_dump(mode="json"))

    def digest(self, length: int = 12) -> str:
        """Stable id of this exact configuration (same config -> same run)."""
        return sha256_text(self.canonical_json(), length)


def load_train_config(path: Path, overrides: dict | None = None) -> TrainConfig:
    """Read a YAML/JSON config file, apply dotted ``overrides``, validate; one-line errors."""
    text = read_text(path, "config file")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({first_line(exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    return validate_train_config(raw, source=str(path))


def validate_train_config(raw: dict, *, source: str = "config") -> TrainConfig:
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_line(exc, source)) from None


def set_dotted(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = tree
    for depth, key in enumerate(keys[:-1]):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            where = ".".join(keys[: depth + 1])
            raise ConfigError(f"override {dotted!r}: {where} is a value, not a section")
    node[keys[-1]] = value
