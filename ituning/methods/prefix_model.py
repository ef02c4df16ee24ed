"""ClipCap as a :class:`~ituning.methods.base.Captioner`: the LM continues from a prefix of
``prefix_length`` input embeddings mapped from the image's pooled CLIP embedding.

The pooled embedding is CLIP's own: the CLS token after ``ln_post`` (the first visual token, so the
features are extracted with CLS) times the vision tower's frozen projection, 512-d for ViT-B/16;
ClipCap was trained on exactly that vector. The prefix enters the LM the way the I-Tuning modules
do, by a hook that leaves the LM untouched: every text row starts with ``prefix_length``
placeholder tokens, and a forward hook on the LM's input embeddings replaces their embeddings by
the prefix. Positions, attention masks, the KV cache and beam search are then the LM's own;
``generate`` feeds the placeholders with the prompt, so the prefix is computed once per image
(in :meth:`visual_context`) and enters the cache at the first step, and every later step (one token
long) passes the hook unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from ituning.errors import ConfigError
from ituning.loss import caption_nll
from ituning.methods.base import load_trained_state, trained_state
from ituning.methods.clipcap_config import ClipCapConfig
from ituning.methods.mappers import build_mapper
from ituning.targets import hidden_size


class PrefixCaptioner(nn.Module):
    """``lm`` conditioned by a ClipCap mapper (``mapper``); the LM trains when
    ``config.train_lm``. ``projection`` is CLIP's (d_vis, d_clip) image projection, kept frozen."""

    needs_cls = True

    def __init__(
        self,
        lm: PreTrainedModel,
        vision_width: int,
        projection: Tensor,
        config: ClipCapConfig,
        *,
        max_tokens: int | None = None,
    ) -> None:
        super().__init__()
        if projection.shape[0] != vision_width:
            raise ConfigError(
                f"CLIP projection is {tuple(projection.shape)}, expected ({vision_width}, d_clip)"
            )
        positions = getattr(lm.config, "n_positions", None) or getattr(
            lm.config, "max_position_embeddings", None
        )
        if positions and max_tokens and config.prefix_length + max_tokens > positions:
            raise ConfigError(
                f"a prefix of {config.prefix_length} plus captions of {max_tokens} tokens exceeds "
                f"the LM's {positions} positions; shorten clipcap.prefix_length"
            )
        self.lm = lm
        self.config = config
        self.method = f"clipcap-{config.mapper}"
        self.vision_width = vision_width
        self.d_lm = hidden_size(lm)
        device = next(lm.parameters()).device
        self.register_buffer("projection", projection.detach().to(device).clone(), persistent=False)
        self.mapper = build_mapper(projection.shape[1], self.d_lm, config).to(device)
        lm.requires_grad_(config.train_lm)
        lm.eval()
        self._prefix: Tensor | None = None
        self._hook = lm.get_input_embeddings().register_forward_hook(self._embed_hook)

    @property
    def prefix_length(self) -> int:
        return self.config.prefix_length

    # -- the prefix ----------------------------------------------------------------------------
    def _embed_hook(self, _module: nn.Module, _args: tuple, output: Tensor) -> Tensor:
        if self._prefix is None:
            raise RuntimeError(
                "PrefixCaptioner ran without visual tokens: pass visual=... or run inside "
                "model.visual_context(visual); use model.lm for the text-only LM"
            )
        p = self.prefix_length
        if output.shape[1] <= p:  # a decoding step after the prompt: the prefix is in the cache
            return output
        rows_per_image = output.shape[0] // self._prefix.shape[0]
        prefix = self._prefix.repeat_interleave(rows_per_image, dim=0).to(output.dtype)
        return torch.cat([prefix, output[:, p:]], dim=1)

    @contextmanager
    def visual_context(self, visual: Tensor) -> Iterator[None]:
        """Make ``visual`` (B_img, N, d_vis), CLS first, the image of every LM call inside the
        block: its prefix is computed here, once; text rows are matched to images by grouping
        (row j -> image j // rows per image). Contexts nest."""
        if visual.dim() != 3 or visual.shape[-1] != self.vision_width:
            raise ValueError(
                f"visual must be (B_img, N, {self.vision_width}), got {tuple(visual.shape)}"
            )
        pooled = visual[:, 0].to(self.projection) @ self.projection
        previous = self._prefix
        self._prefix = self.mapper(pooled.to(self.visual_dtype))
        try:
            yield
        finally:
            self._prefix = previous

    def _with_placeholders(
        self, input_ids: Tensor, attention_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Rows with ``prefix_length`` placeholder tokens in front (their embeddings replaced)."""
        p = self.prefix_length
        ids = torch.cat([input_ids[:, :1].expand(-1, p), input_ids], dim=1)
        mask = torch.cat([attention_mask.new_ones(attention_mask.shape[0], p), attention_mask], 1)
        return ids, mask

    # -- nn.Module API --------------------------------------------------------------------------
    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        visual: Tensor | None = None,
        *,
        return_nll: bool = False,
        **kwargs,
    ):
        """With ``return_nll`` the summed NLL of the caption tokens (the prefix is attended to,
        never predicted); otherwise the LM's output over prefix + caption (``prefix_length``
        positions longer than ``input_ids``)."""
        ids, mask = self._with_placeholders(input_ids, attention_mask)
        context = self.visual_context(visual) if visual is not None else nullcontext()
        with context:
            if return_nll:
                target = torch.cat(
                    [attention_mask.new_zeros(ids.shape[0], self.prefix_length),
                     attention_mask[:, 1:]], dim=1,
                )  # fmt: skip
                return caption_nll(self.lm, ids, mask, target_mask=target, **kwargs)
            return self.lm(input_ids=ids, attention_mask=mask, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        visual: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        **generate_kwargs,
    ) -> Tensor:
        """``self.lm.generate`` from the prompt ``input_ids`` (one row per image) after the image's
        prefix; returns the prompt and the new tokens, as :class:`~ituning.inject.ITuningModel`."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ids, mask = self._with_placeholders(input_ids, attention_mask)
        with self.visual_context(visual):
            out = self.lm.generate(input_ids=ids, attention_mask=mask, **generate_kwargs)
        return out[:, self.prefix_length :]

    def train(self, mode: bool = True) -> PrefixCaptioner:
        super().train(mode)
        if not self.config.train_lm:
            self.lm.eval()
        return self

    # -- parameters and weights -----------------------------------------------------------------
    @property
    def visual_dtype(self) -> torch.dtype:
        return next(self.mapper.parameters()).dtype

    def _trained(self) -> dict[str, nn.Module]:
        return {"mapper": self.mapper, **({"lm": self.lm} if self.config.train_lm else {})}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for part in self._trained().values() for p in part.parameters()]

    def parameter_counts(self) -> dict[str, int]:
        """``trainable`` (the mapper, and the LM when fine-tuned) and ``frozen`` (the LM
        otherwise, and CLIP's projection; not the vision tower, which lives outside)."""
        lm = sum(p.numel() for p in self.lm.parameters())
        mapper = sum(p.numel() for p in self.mapper.parameters())
        train_lm = self.config.train_lm
        return {
            "trainable": mapper + lm * train_lm,
            "frozen": lm * (not train_lm) + self.projection.numel(),
        }

    def module_state_dict(self) -> dict[str, Tensor]:
        """The trained weights: ``mapper.<name>``, and ``lm.<name>`` when the LM is fine-tuned."""
        return trained_state(self._trained())

    def load_module_state_dict(self, state: dict[str, Tensor]) -> None:
        load_trained_state(self._trained(), state, "ClipCap")
