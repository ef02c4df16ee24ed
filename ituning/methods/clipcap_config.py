"""ClipCap's settings (Mokady et al., 2021, "ClipCap: CLIP Prefix for Image Captioning").

ClipCap maps the image's pooled CLIP embedding to ``prefix_length`` vectors in the LM's input
embedding space and lets the LM continue from them. Its two published variants are the defaults
of the two methods named after them, as its public code runs them:

* ``clipcap-transformer``: the LM frozen, a transformer mapper (8 layers, 8 heads, MLP ratio 2)
  over ``clip_length`` = 40 tokens projected from the embedding plus 40 learned constants, whose
  outputs at the constants' positions are the prefix (``prefix_length`` = 40);
* ``clipcap-mlp``: the LM fine-tuned, an MLP mapper (embedding -> ``d_lm * prefix_length / 2`` ->
  ``d_lm * prefix_length``, tanh between) with ``prefix_length`` = 10.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ituning.config import Settings

Mapper = Literal["transformer", "mlp"]
#: The method names that are ClipCap variants, and their mapper.
VARIANTS: dict[str, Mapper] = {"clipcap-transformer": "transformer", "clipcap-mlp": "mlp"}
MAX_PREFIX = 256  # prefix positions; the paper's largest is 40


class ClipCapConfig(Settings):
    """One ClipCap variant's shape. ``for_method`` gives each variant's published defaults."""

    mapper: Mapper
    prefix_length: int = Field(ge=1, le=MAX_PREFIX)
    clip_length: int = Field(default=40, ge=1, le=MAX_PREFIX, description="transformer only")
    num_layers: int = Field(default=8, ge=1, le=64, description="transformer only")
    num_heads: int = Field(default=8, ge=1, le=64, description="transformer only")
    mlp_ratio: float = Field(default=2.0, gt=0, le=16, description="transformer only")
    train_lm: bool

    @classmethod
    def for_method(cls, method: str) -> ClipCapConfig:
        """The published defaults of ``method`` (``clipcap-transformer`` or ``clipcap-mlp``)."""
        mapper = VARIANTS[method]
        if mapper == "transformer":
            return cls(mapper="transformer", prefix_length=40, clip_length=40, train_lm=False)
        return cls(mapper="mlp", prefix_length=10, train_lm=True)
