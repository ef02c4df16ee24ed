"""The fully resolved description of one training-and-evaluation run.

Every default, and every bound beyond which a value is a typo, lives here once. A sweep point
(``bench``) resolves to exactly one :class:`TrainConfig`; its canonical JSON is what the run id
hashes, so two runs with equal configs are the same run. Paths are kept as given (relative to the
working directory) so that the hash does not depend on where a checkout lives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from ituning.config import ITuningConfig, Settings
from ituning.errors import ConfigError, printable, validation_line
from ituning.files import canonical_json, read_text, sha256_text
from ituning.methods.clipcap_config import ClipCapConfig
from ituning.methods.registry import Method, is_clipcap
from ituning.yaml_input import load_yaml

#: ``torch.manual_seed`` takes a signed 64-bit integer; a larger seed validates and then fails.
SEED_MAX = 2**63 - 1
# Upper bounds of counts: far above any real setting (the paper's budget: 30 epochs, batches of
# 4096 captions, beam 5, 20 new tokens; see bench/sweep/budgets.py), so that a value beyond one
# is a typo, refused before it hangs a run or allocates gigabytes.
MAX_EPOCHS = 10_000
MAX_BATCH_CAPTIONS = 1 << 20
MAX_BATCH_IMAGES = 4096
MAX_CAPTIONS_PER_IMAGE = 100
MAX_TOKENS = 512
MAX_BEAM = 64
#: Settings added after runs were recorded -> their default, left out of the run id when at it.
ADDED_AT_DEFAULT: dict[str, Any] = {
    "method": "itune",
    "clipcap": None,
    "data.instances": None,
    "data.chair_synonyms": None,
    "data.limit_vlp_images": None,
    "data.skip_bad_images": False,
}


class BackboneSpec(Settings):
    """Which frozen backbones to load: HF names or local folders (see ``ituning.backbones``)."""

    lm: str = "gpt2"
    vision: str = "ViT-B-16"
    vision_pretrained: str | None = "openai"


class DataSpec(Settings):
    """Where the captioning, NoCaps-style and VLP data live (all optional but ``captions``)."""

    captions: Path = Field(description="Karpathy-format dataset_*.json")
    image_root: Path
    nocaps: Path | None = None
    nocaps_image_root: Path | None = None
    vlp_regions: Path | None = None
    vlp_image_data: Path | None = None
    vlp_image_root: Path | None = None
    #: COCO instance annotations and the CHAIR synonym list: object hallucination of COCO splits.
    instances: Path | None = None
    chair_synonyms: Path | None = None
    limit_train_images: int | None = Field(default=None, ge=1)
    limit_eval_images: int | None = Field(default=None, ge=1)
    limit_vlp_images: int | None = Field(default=None, ge=1)
    #: Train and evaluate without the images that cannot be decoded (listed in the run folder).
    skip_bad_images: bool = False


class OptimSpec(Settings):
    """AdamW with linear warm-up then cosine decay (the paper names AdamW only)."""

    lr: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    grad_clip: float | None = Field(default=1.0, gt=0)


class EvalSpec(Settings):
    """Decoding and scoring. Beam 5 is the paper's setting."""

    splits: tuple[str, ...] = ("test",)
    nocaps: bool = True
    beam: int = Field(default=5, ge=1, le=MAX_BEAM)
    max_new_tokens: int = Field(default=20, ge=1, le=MAX_TOKENS)
    length_penalty: float = 1.0
    batch_images: int = Field(default=32, ge=1, le=MAX_BATCH_IMAGES)
    blank_control: bool = False
    grounding: bool = False


class TrainConfig(Settings):
    """One run. ``method`` picks the captioner (:mod:`ituning.methods.registry`): ``itune`` reads
    ``itune``, a ClipCap variant ``clipcap`` (its published defaults when left out).

    Settings added after runs were recorded stay out of the run id at their default
    (:data:`ADDED_AT_DEFAULT`), so every earlier run keeps its id.
    """

    method: Method = "itune"
    backbones: BackboneSpec = BackboneSpec()
    itune: ITuningConfig = ITuningConfig()
    clipcap: ClipCapConfig | None = None
    data: DataSpec
    optim: OptimSpec = OptimSpec()
    eval: EvalSpec = EvalSpec()
    epochs: int = Field(default=30, ge=1, le=MAX_EPOCHS)
    vlp: bool = False
    vlp_epochs: int = Field(default=10, ge=1, le=MAX_EPOCHS)
    batch_captions: int = Field(
        default=4096, ge=1, le=MAX_BATCH_CAPTIONS, description="effective batch, by accumulation"
    )
    micro_batch_images: int = Field(default=32, ge=1, le=MAX_BATCH_IMAGES)
    captions_per_image: int = Field(default=5, ge=1, le=MAX_CAPTIONS_PER_IMAGE)
    max_caption_tokens: int = Field(default=32, ge=4, le=MAX_TOKENS)
    seed: int = Field(default=0, ge=0, le=SEED_MAX)
    features: Literal["cache", "live"] = "cache"
    feature_cache: Path = Path("runs/features")
    feature_dtype: Literal["float16", "float32"] = "float16"
    checkpoint_every: int = Field(
        default=50, ge=1, description="optimiser steps between checkpoints"
    )
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    fail_on_nonfinite: bool = True

    @model_validator(mode="before")
    @classmethod
    def _clipcap_defaults(cls, raw: Any) -> Any:
        """A ClipCap method without a ``clipcap`` section gets its variant's published defaults."""
        if (
            isinstance(raw, dict)
            and is_clipcap(raw.get("method", ""))
            and raw.get("clipcap") is None
        ):
            return {**raw, "clipcap": ClipCapConfig.for_method(raw["method"])}
        return raw

    @model_validator(mode="after")
    def _batch_holds_whole_images(self) -> TrainConfig:
        if self.batch_captions < self.captions_per_image:
            raise ValueError(
                f"batch_captions ({self.batch_captions}) must hold at least one image's "
                f"{self.captions_per_image} captions"
            )
        if self.vlp and (self.data.vlp_regions is None or self.data.vlp_image_data is None):
            raise ValueError("vlp: true needs data.vlp_regions and data.vlp_image_data")
        if self.clipcap is not None and not is_clipcap(self.method):
            raise ValueError(f"clipcap settings are for the ClipCap methods, not {self.method!r}")
        return self

    @property
    def include_cls(self) -> bool:
        """Whether the visual tokens start with CLS: I-Tuning's choice, or ClipCap's need (it
        reads CLIP's pooled embedding from it)."""
        return self.itune.include_cls or is_clipcap(self.method)

    @property
    def images_per_step(self) -> int:
        """Images per optimiser step: the effective caption batch in whole images."""
        return max(1, self.batch_captions // self.captions_per_image)

    def canonical_json(self) -> str:
        data = self.model_dump(mode="json")
        for dotted, default in ADDED_AT_DEFAULT.items():
            *parents, key = dotted.split(".")
            node = data
            for part in parents:
                node = node.get(part) or {}
            if key in node and node[key] == default:
                del node[key]
        return canonical_json(data)

    def digest(self, length: int = 12) -> str:
        """Stable id of this exact configuration (same config -> same run)."""
        return sha256_text(self.canonical_json(), length)


def load_train_config(path: Path, overrides: dict | None = None) -> TrainConfig:
    """Read a YAML/JSON config file, apply dotted ``overrides``, validate; one-line errors."""
    text = read_text(path, "config file")
    raw = load_yaml(text, printable(str(path)), "config file")
    if not isinstance(raw, dict):
        raise ConfigError(printable(f"{path}: expected a mapping at the top level"))
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    return validate_train_config(raw, source=printable(str(path)))


def validate_train_config(raw: dict, *, source: str = "config") -> TrainConfig:
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(printable(validation_line(exc, source))) from None


def set_dotted(tree: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = tree
    for depth, key in enumerate(keys[:-1]):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            where = ".".join(keys[: depth + 1])
            raise ConfigError(printable(f"override {dotted!r}: {where} is a value, not a section"))
    node[keys[-1]] = value
