"""A frozen causal LM with I-Tuning modules in parallel with the FFNs of its kept layers.

Injection is a forward hook on each kept layer's FFN: the hook reads the FFN's input X, runs the
layer's module and returns ``FFN(X) + dh``. Hooks leave the LM untouched (same classes, same
state-dict keys, same ``generate``), so any HF causal LM whose layers own an FFN submodule works.

The visual tokens reach the hooks through :meth:`ITuningModel.visual_context`, which computes every
module's K/V once and holds them on the instance (no globals) until the context exits; the LM's
own forward, KV cache and beam search run unchanged inside it. Because the modules attend to the
image only, a step that feeds one new token per row needs nothing from earlier steps but the
image's K/V: KV-cached generation is exact.

K/V are computed under whatever grad mode is active when the context opens, and only live while it
is open: with the LM's gradient checkpointing on, call ``backward()`` inside the context, because
the recomputed layers need the K/V again.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from ituning.config import ITuningConfig
from ituning.errors import CheckpointError
from ituning.loss import caption_nll
from ituning.methods.base import load_trained_state, trained_state
from ituning.module import ITuningModule
from ituning.targets import ffn_modules, hidden_size


class ITuningModel(nn.Module):
    needs_cls = False  # the patch tokens, with CLS only when ``config.include_cls``

    """Frozen ``lm`` + trainable I-Tuning modules (``itune``, keyed by layer index as a string).

    Every LM parameter gets ``requires_grad=False``; the LM stays in eval mode even under
    ``model.train()`` (dropout off in the frozen backbone: it is a fixed feature extractor, and the
    paper trains only the modules; the modules themselves have no dropout). Under Dropping no module
    and no trainable tensor exists below the first kept layer, so autograd records nothing there.

    ``train_lm`` is the method ``full``: the same modules with every LM weight trained too (and
    the LM's own dropout on under ``model.train()``), the upper bound a frozen LM gives up.

    Modules are created in ``module_dtype`` (fp32 default) on the LM's device.
    """

    def __init__(
        self,
        lm: PreTrainedModel,
        vision_width: int,
        config: ITuningConfig,
        *,
        module_dtype: torch.dtype = torch.float32,
        train_lm: bool = False,
    ) -> None:
        super().__init__()
        self.lm = lm
        self.config = config
        self.vision_width = vision_width
        self.train_lm = train_lm
        self.method = "full" if train_lm else "itune"
        lm.requires_grad_(train_lm)
        lm.eval()
        ffns = ffn_modules(lm)
        self.d_lm = hidden_size(lm)
        self.bottleneck = config.resolved_bottleneck(self.d_lm)
        self.kept_layers: list[int] = config.kept_layers(len(ffns))
        device = next(lm.parameters()).device
        self.itune = nn.ModuleDict(
            {
                str(i): ITuningModule(
                    self.d_lm,
                    vision_width,
                    self.bottleneck,
                    config.scale,
                    config.attn_scaling,
                    device=device,
                    dtype=module_dtype,
                )
                for i in self.kept_layers
            }
        )
        self._kv: dict[str, tuple[Tensor, Tensor]] | None = None
        self._captured: dict[str, list[Tensor]] | None = None
        self._hooks = [
            ffns[i].register_forward_hook(
                functools.partial(self._ffn_hook, str(i)), with_kwargs=True
            )
            for i in self.kept_layers
        ]

    # -- the hook -------------------------------------------------------------------------------
    def _ffn_hook(self, key: str, _ffn: nn.Module, args: tuple, kwargs: dict, output):
        if self._kv is None:
            raise RuntimeError(
                "ITuningModel ran without visual tokens: pass visual=... or run inside "
                "model.visual_context(visual); use model.lm for the text-only LM"
            )
        x = args[0] if args else next(iter(kwargs.values()))
        module = self.itune[key]
        kv = self._kv[key]
        if self._captured is not None and key in self._captured:
            self._captured[key].append(module.attention_probs(x, kv).detach())
        if isinstance(output, tuple):  # FFNs that also return auxiliary outputs (e.g. MoE)
            return (output[0] + module(x, kv).to(output[0].dtype), *output[1:])
        return output + module(x, kv).to(output.dtype)

    # -- visual tokens ------------------------------------------------------------------------
    @contextmanager
    def visual_context(self, visual: Tensor) -> Iterator[None]:
        """Make ``visual`` (B_img, N, d_vis) the image of every LM call inside the block.

        Each module's K/V (eqs. 2-3) is computed here, once; text rows are matched to images by
        grouping (B_rows = B_img * k, row j -> image j // k). Contexts nest; the previous one is
        restored on exit.
        """
        if visual.dim() != 3 or visual.shape[-1] != self.vision_width:
            raise ValueError(
                f"visual must be (B_img, N, {self.vision_width}), got {tuple(visual.shape)}"
            )
        device = next(iter(self.itune.values())).o_up.weight.device
        visual = visual.to(device)
        previous = self._kv
        self._kv = {key: module.visual_kv(visual) for key, module in self.itune.items()}
        try:
            yield
        finally:
            self._kv = previous

    @contextmanager
    def capture_attention(
        self, layers: list[int] | None = None
    ) -> Iterator[dict[int, list[Tensor]]]:
        """Record S of eq. (4) for ``layers`` (default: the last kept layer) on every LM call.

        Yields ``{layer: [tensor (B_rows, T, N) per call]}``; one entry per decoding step under
        KV-cached generation. Used for the paper's Figure 3 attention maps.
        """
        layers = [self.kept_layers[-1]] if layers is None else layers
        missing = [i for i in layers if str(i) not in self.itune]
        if missing:
            raise ValueError(
                f"layers {missing} carry no I-Tuning module (kept: {self.kept_layers})"
            )
        previous = self._captured
        self._captured = {str(i): [] for i in layers}
        store = {i: self._captured[str(i)] for i in layers}
        try:
            yield store
        finally:
            self._captured = previous

    # -- nn.Module API --------------------------------------------------------------------------
    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        visual: Tensor | None = None,
        labels: Tensor | None = None,
        *,
        return_nll: bool = False,
        **kwargs,
    ):
        """The LM's forward (its output object; ``.loss`` when ``labels`` are given), or with
        ``return_nll`` the training loss: the NLL summed over every real target token
        (``attention_mask[:, 1:]``), computed chunk-wise from the last hidden states without the
        full logits (:func:`ituning.loss.caption_nll`).

        With ``visual`` the call runs inside :meth:`visual_context`; without it an enclosing
        context must be active.
        """
        context = self.visual_context(visual) if visual is not None else nullcontext()
        with context:
            if return_nll:
                return caption_nll(self.lm, input_ids, attention_mask, **kwargs)
            return self.lm(
                input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs
            )

    @torch.no_grad()
    def generate(
        self,
        visual: Tensor,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        **generate_kwargs,
    ) -> Tensor:
        """``self.lm.generate`` conditioned on ``visual``; one prompt row (or k) per image.

        Without ``input_ids`` every image starts from the BOS token. HF expands each prompt row
        into ``num_beams`` (or ``num_return_sequences``) contiguous rows and reorders beams within
        an image only, so row j always belongs to image ``j // (rows per image)``.
        """
        b_img = visual.shape[0]
        device = next(self.lm.parameters()).device
        gen_cfg = self.lm.generation_config
        if input_ids is None:
            bos = gen_cfg.bos_token_id
            if bos is None:
                bos = self.lm.config.bos_token_id
            if bos is None:
                raise ValueError("the LM defines no bos_token_id: pass input_ids (a prompt)")
            input_ids = torch.full((b_img, 1), int(bos), dtype=torch.long, device=device)
            attention_mask = torch.ones_like(input_ids)
        if gen_cfg.pad_token_id is None and "pad_token_id" not in generate_kwargs:
            generate_kwargs["pad_token_id"] = gen_cfg.eos_token_id
        with self.visual_context(visual):
            return self.lm.generate(
                input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs
            )

    def train(self, mode: bool = True) -> ITuningModel:
        super().train(mode)
        if not self.train_lm:
            self.lm.eval()
        return self

    # -- parameters and weights -----------------------------------------------------------------
    @property
    def visual_dtype(self) -> torch.dtype:
        """The dtype the visual tokens are given in (the modules')."""
        return next(self.itune.parameters()).dtype

    def trainable_parameters(self) -> list[nn.Parameter]:
        lm = list(self.lm.parameters()) if self.train_lm else []
        return [p for p in self.itune.parameters() if p.requires_grad] + lm

    def parameter_counts(self) -> dict[str, int]:
        """``trainable`` (the modules, and the LM when trained) and ``frozen`` (the LM otherwise;
        tied weights once; not the vision encoder, which lives outside this model:
        ``ituning.params`` counts both)."""
        lm = sum(p.numel() for p in self.lm.parameters())
        modules = sum(p.numel() for p in self.itune.parameters())
        return {
            "trainable": modules + lm * self.train_lm,
            "frozen": lm * (not self.train_lm),
        }

    def module_state_dict(self) -> dict[str, Tensor]:
        """The trained weights: the I-Tuning modules, keyed as in ``self.state_dict()``
        (``itune.<layer>.<name>``), and with ``train_lm`` every LM weight (``lm.<name>``)."""
        state = {f"itune.{k}": v.detach() for k, v in self.itune.state_dict().items()}
        return {**state, **(trained_state({"lm": self.lm}) if self.train_lm else {})}

    def load_module_state_dict(self, state: dict[str, Tensor]) -> None:
        """Load weights saved by :meth:`module_state_dict`; CheckpointError on any key mismatch."""
        if self.train_lm:
            lm_state = {k: v for k, v in state.items() if k.startswith("lm.")}
            load_trained_state({"lm": self.lm}, lm_state, "fine-tuned LM")
            state = {k: v for k, v in state.items() if not k.startswith("lm.")}
        expected = {f"itune.{k}" for k in self.itune.state_dict()}
        got = set(state)
        if expected != got:
            missing = sorted(expected - got)[:3]
            extra = sorted(got - expected)[:3]
            raise CheckpointError(
                f"I-Tuning weights do not fit this model (kept layers {self.kept_layers[0]}.."
                f"{self.kept_layers[-1]}): missing {missing}, unexpected {extra}"
            )
        prefix = len("itune.")
        try:
            self.itune.load_state_dict({k[prefix:]: v for k, v in state.items()}, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"I-Tuning weights have the wrong shapes for this model: {str(exc).splitlines()[-1].strip()}"
            ) from None

    def unwrap(self) -> PreTrainedModel:
        """Remove the hooks and return the plain LM (still frozen)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        return self.lm
