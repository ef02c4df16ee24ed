"""Hyper-parameters of the I-Tuning modules (what the paper varies: r, lambda, Dropping, V).

One frozen pydantic model; every default lives here. Constructing it directly with a bad value raises
:class:`~ituning.errors.ConfigError` with one line; nested inside another pydantic model (e.g. the
run's ``TrainConfig``) the usual ``ValidationError`` carries the same message.
"""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ituning.errors import ConfigError, validation_line

#: r may be at most this many times d_lm: the bound of the fraction form of the sweep axis, and
#: of an absolute width once the LM is known (a typo such as 10^9 would allocate gigabytes).
MAX_BOTTLENECK_RATIO = 4
#: An absolute sanity bound on r before the LM is known: 4 x d_lm of an 8192-wide LM, twice over.
MAX_BOTTLENECK = 1 << 16


class Settings(BaseModel):
    """Base of the configuration models: frozen, no unknown keys, finite floats, and no booleans
    where a number goes. Pydantic's lax mode reads ``epochs: true`` as 1, a typo that would run;
    ints stay valid for float fields (``lr: 1``), and values serialise as before (run ids)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            types = typing.get_args(annotation) or (annotation,)
            if bool not in types and (int in types or float in types):
                kind = "a number" if float in types else "an integer"
                raise ValueError(f"expected {kind}, got {str(value).lower()}")
        return value


def bottleneck_limit(d_lm: int) -> int:
    """The widest bottleneck r allowed on an LM of hidden width ``d_lm``."""
    return MAX_BOTTLENECK_RATIO * d_lm


class ITuningConfig(Settings):
    """Shape and placement of the I-Tuning modules.

    * ``bottleneck`` (r): width of the cross-attention bottleneck. ``None`` means ``d_lm // 2``,
      the choice that reproduces every trainable-parameter count the paper prints (14M/44M/95M/47M).
    * ``scale`` (lambda): multiplies the module output, eq. (5). The paper requires ``lambda >= 1``
      and gives no value; ``allow_scale_below_one`` unlocks smaller values for ablations only.
    * ``drop_first`` (I-Tuning Dropping): no module in layers ``[0, drop_first)``, so back-propagation
      stops at the first kept layer.
    * ``include_cls``: whether the visual sequence V holds CLIP's CLS token in front of the patch
      tokens. Default off: V is the 196 patch tokens of ViT-B/16, which is what "a sequence of
      patch representations" reads as and what the cross-attention maps of Figure 3 are drawn on.
    * ``attn_scaling``: logits ``Q K^T`` scaled by ``1/sqrt(r)`` (``"sqrt"``) or not (``"none"``).
      Eq. (4) prints no scaling. The default is ``"sqrt"``: standard attention practice, it keeps
      the softmax out of saturation at the paper's r = 384..640 at initialisation (unscaled logits
      grow like sqrt(r)). A throwaway prototype at the mini scale scored better without scaling,
      so "none" is a first-class option and an ablation axis, not a hidden switch.
    """

    bottleneck: int | None = Field(
        default=None, ge=1, le=MAX_BOTTLENECK, description="r; None -> d_lm // 2"
    )
    scale: float = Field(default=1.0, gt=0, description="lambda in eq. (5)")
    allow_scale_below_one: bool = False
    drop_first: int = Field(default=0, ge=0, description="I-Tuning Dropping: first N layers")
    include_cls: bool = False
    attn_scaling: Literal["sqrt", "none"] = "sqrt"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            field = "ITuningConfig" if exc.errors()[0]["loc"] else ""  # a field, or the rules
            raise ConfigError(validation_line(exc, prefix=field)) from None

    @model_validator(mode="after")
    def _scale_at_least_one(self) -> ITuningConfig:
        if self.scale < 1 and not self.allow_scale_below_one:
            raise ValueError(
                f"scale (lambda) = {self.scale} < 1; the paper requires lambda >= 1 "
                "(set allow_scale_below_one=true to run it anyway)"
            )
        return self

    def resolved_bottleneck(self, d_lm: int) -> int:
        """r for an LM of hidden width ``d_lm``; ConfigError if wider than
        :func:`bottleneck_limit`."""
        if self.bottleneck is None:
            return max(1, d_lm // 2)
        if self.bottleneck > bottleneck_limit(d_lm):
            raise ConfigError(
                f"bottleneck r = {self.bottleneck} is wider than {MAX_BOTTLENECK_RATIO} x d_lm = "
                f"{bottleneck_limit(d_lm)} of this LM (d_lm = {d_lm}); use at most that"
            )
        return self.bottleneck

    def kept_layers(self, n_layers: int) -> list[int]:
        """Indices of the layers that carry a module; ConfigError if Dropping removes them all."""
        if self.drop_first >= n_layers:
            raise ConfigError(
                f"drop_first={self.drop_first} removes every module of a {n_layers}-layer LM; "
                f"use a value below {n_layers}"
            )
        return list(range(self.drop_first, n_layers))
