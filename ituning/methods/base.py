"""What every captioning method is to the rest of the library, and the weights it trains.

A method is a ``torch.nn.Module`` wrapping a causal LM and conditioning it on an image's visual
tokens ``(B_img, N, d_vis)``. The trainer, the decoder, resume and the checkpoint use only this
surface (:class:`Captioner`), so I-Tuning, its fully fine-tuned variant and ClipCap share the data,
batching, training loop, decoding, evaluation and tracking, and a method is chosen by
configuration (``TrainConfig.method``), not by branches in the trainer.

The weights a method trains are saved and resumed by name (:func:`trained_state`): the modules it
adds, plus every LM weight when the LM is fine-tuned (tied weights once, by parameter).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Protocol

import torch
from torch import Tensor, nn

from ituning.errors import CheckpointError


class Captioner(Protocol):
    """The surface of a captioning method (see the module docstring)."""

    lm: nn.Module
    vision_width: int
    #: Whether the visual tokens must start with the CLS token (ClipCap reads its pooled output).
    needs_cls: bool

    def visual_context(self, visual: Tensor) -> AbstractContextManager[None]: ...
    def forward(self, input_ids: Tensor, attention_mask: Tensor, visual: Tensor | None = None,
                *, return_nll: bool = False, **kwargs): ...  # fmt: skip
    def generate(self, visual: Tensor, input_ids: Tensor | None = None,
                 attention_mask: Tensor | None = None, **generate_kwargs) -> Tensor: ...  # fmt: skip
    def trainable_parameters(self) -> list[nn.Parameter]: ...
    def parameter_counts(self) -> dict[str, int]: ...
    def module_state_dict(self) -> dict[str, Tensor]: ...
    def load_module_state_dict(self, state: dict[str, Tensor]) -> None: ...
    @property
    def visual_dtype(self) -> torch.dtype: ...


def _named(parts: Mapping[str, nn.Module]) -> Iterator[tuple[str, nn.Parameter]]:
    for prefix, part in parts.items():
        for name, param in part.named_parameters():  # a tied weight once, under its first name
            yield f"{prefix}.{name}", param


def trained_state(parts: Mapping[str, nn.Module]) -> dict[str, Tensor]:
    """The trained weights of ``parts`` (name prefix -> module), keyed ``<prefix>.<name>``."""
    return {name: param.detach() for name, param in _named(parts)}


def load_trained_state(
    parts: Mapping[str, nn.Module], state: Mapping[str, Tensor], what: str
) -> None:
    """Copy ``state`` (as :func:`trained_state` wrote it) into ``parts``; CheckpointError naming
    ``what`` when the keys or shapes do not fit."""
    params = dict(_named(parts))
    if set(params) != set(state):
        missing = sorted(set(params) - set(state))[:3]
        extra = sorted(set(state) - set(params))[:3]
        raise CheckpointError(
            f"{what} weights do not fit this model: missing {missing}, unexpected {extra}"
        )
    with torch.no_grad():
        for name, value in state.items():
            if params[name].shape != value.shape:
                raise CheckpointError(
                    f"{what} weights have the wrong shapes for this model: {name} is "
                    f"{tuple(value.shape)}, expected {tuple(params[name].shape)}"
                )
            params[name].copy_(value)
