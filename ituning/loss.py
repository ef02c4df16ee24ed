"""The captioning loss: next-token NLL, computed from the LM's last hidden states in chunks.

``L = -sum_t log P(x_t | x_<t, V)`` (PAPER.md) over the real (unpadded) target tokens. Computing it
from ``logits = lm_head(hidden)`` the usual way materialises the (tokens x vocab) logits, a copy of
the kept rows, and the log-softmax autograd saves, each as large as the logits: for GPT-2 (vocab
50,257) they are the biggest activations of a training step. :func:`linear_cross_entropy` instead
walks the tokens in chunks and, still in the forward pass, turns each chunk's logits into the
loss and into the gradients w.r.t. the hidden states (and the head's weight when it trains), then
drops them. Peak memory holds one chunk of logits; the FLOPs are those of the plain path (the
gradient matmuls move from backward to forward, none is recomputed).

The trade: the gradients are computed whether or not ``backward()`` follows, so use it for
training and the plain logits for evaluation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Logit elements per chunk (~32 MiB in fp32): 166 GPT-2 tokens, every token of a small vocab.
CHUNK_ELEMENTS = 1 << 23


def caption_nll(
    lm, input_ids: Tensor, attention_mask: Tensor, target_mask: Tensor | None = None, **kwargs
) -> Tensor:
    """Summed next-token NLL of a HF causal LM over the target tokens: ``target_mask`` (B, T-1)
    marks which next tokens count, by default the real ones (``attention_mask[:, 1:]``; a
    prefix the model attends to but need not predict is masked out). Its body's last hidden
    states, then the head chunk-wise."""
    hidden = lm.base_model(
        input_ids=input_ids, attention_mask=attention_mask, **kwargs
    ).last_hidden_state
    keep = (attention_mask[:, 1:] if target_mask is None else target_mask).bool()
    head = lm.get_output_embeddings()
    return linear_cross_entropy(
        hidden[:, :-1][keep], head.weight, input_ids[:, 1:][keep], head.bias
    )


def linear_cross_entropy(
    hidden: Tensor, weight: Tensor, targets: Tensor, bias: Tensor | None = None
) -> Tensor:
    """``F.cross_entropy(F.linear(hidden, weight, bias), targets, reduction="sum")`` without the
    full logits; ``hidden`` is (tokens, d), ``weight`` (vocab, d), ``targets`` (tokens,)."""
    chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
    return _LinearCrossEntropy.apply(hidden, weight, bias, targets, chunk)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):  # type: ignore[override]
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if need_b else None
        # Under autocast, cast the head (and the hidden states) once, then run the chunks with
        # autocast off: autocast does not cache casts of frozen weights, so each chunk's two
        # matmuls would otherwise copy the (vocab x d) head anew.
        device = hidden.device.type
        autocast = torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if autocast else hidden.dtype
        acc = torch.promote_types(dtype, torch.float32)  # bf16 logits: fp32 softmax
        loss = torch.zeros((), dtype=acc, device=hidden.device)
        with torch.autocast(device, enabled=False):
            w = weight.to(dtype)
            b = None if bias is None else bias.to(dtype)
            hidden_c = hidden.to(dtype)
            for start in range(0, hidden.shape[0], chunk):
                h = hidden_c[start : start + chunk]
                t = targets[start : start + chunk]
                logits = F.linear(h, w, b).to(acc)
                lse = torch.logsumexp(logits, dim=-1)
                loss += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
                if not (need_h or need_w or need_b):
                    continue
                # d(loss)/d(logits) = softmax - one_hot(target), formed in place of the logits
                g = logits.sub_(lse[:, None]).exp_()
                g[torch.arange(t.shape[0], device=t.device), t] -= 1.0
                if need_b:
                    grad_b += g.sum(0).to(grad_b.dtype)
                g = g.to(dtype)
                if need_h:
                    grad_h[start : start + chunk] = g @ w
                if need_w:
                    grad_w += (g.t() @ h).to(grad_w.dtype)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        return loss

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scale = grad_out
        return (
            None if grad_h is None else grad_h * scale.to(grad_h.dtype),
            None if grad_w is None else grad_w * scale.to(grad_w.dtype),
            None if grad_b is None else grad_b * scale.to(grad_b.dtype),
            None,
            None,
        )
