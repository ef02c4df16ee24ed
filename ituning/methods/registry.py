"""The methods by name (:data:`WHAT_TRAINS`), and the one place that builds a method's model from
a configuration. ClipCap's two variants are configured in :mod:`ituning.methods.clipcap_config`.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from ituning.config import ITuningConfig
from ituning.methods.base import Captioner
from ituning.methods.clipcap_config import VARIANTS, ClipCapConfig

Method = Literal["itune", "full", "clipcap-transformer", "clipcap-mlp"]
METHODS: tuple[str, ...] = ("itune", "full", *VARIANTS)
#: What each method trains; everything else (vision encoder, and the LM unless named) is frozen.
WHAT_TRAINS: dict[str, str] = {
    "itune": "the I-Tuning modules (the paper's method; LM frozen)",
    "full": "the I-Tuning modules and every LM weight",
    "clipcap-transformer": "ClipCap's transformer mapper (LM frozen)",
    "clipcap-mlp": "ClipCap's MLP mapper and every LM weight",
}


def is_clipcap(method: object) -> bool:
    """Whether ``method`` names a ClipCap variant (anything else, a typo too, does not)."""
    return isinstance(method, str) and method in VARIANTS


def clip_projection(visual_tower: nn.Module) -> Tensor:
    """CLIP's (width, d_clip) image projection of an open_clip visual tower (frozen)."""
    proj = getattr(visual_tower, "proj", None)
    if proj is None:
        raise ValueError("this vision tower has no CLIP projection (proj); ClipCap needs one")
    return proj.detach()


def build_captioner(
    method: str,
    lm: nn.Module,
    vision_width: int,
    *,
    itune: ITuningConfig | None = None,
    clipcap: ClipCapConfig | None = None,
    projection: Tensor | None = None,
    max_tokens: int | None = None,
) -> Captioner:
    """The model of ``method`` over the frozen ``lm``: I-Tuning modules (``itune`` config) or a
    ClipCap mapper (``clipcap`` config, its variant's defaults if ``None``; ``projection`` from
    :func:`clip_projection`)."""
    from ituning.inject import ITuningModel
    from ituning.methods.prefix_model import PrefixCaptioner

    if method in ("itune", "full"):
        return ITuningModel(lm, vision_width, itune or ITuningConfig(), train_lm=method == "full")
    if is_clipcap(method):
        if projection is None:
            raise ValueError(f"{method} needs CLIP's image projection (clip_projection)")
        config = clipcap or ClipCapConfig.for_method(method)
        return PrefixCaptioner(lm, vision_width, projection, config, max_tokens=max_tokens)
    raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
