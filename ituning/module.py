"""The I-Tuning module: an adapter-shaped bottleneck whose non-linearity is cross-attention to V.

With ``X`` the input of a layer's FFN and ``V`` the visual tokens (paper, eqs. 1-5)::

    Q = W_down^Q X + b^Q                  (1)   d_lm  -> r
    K = W_down^K V + b^K                  (2)   d_vis -> r
    V' = W_down^V V + b^V                 (3)   d_vis -> r
    S = softmax(c * Q K^T)                (4)   over the visual positions, one head
    dh = lambda * W_up^O (S V') + b^O     (5)   r -> d_lm, added to the FFN output

``c`` is ``1/sqrt(r)`` or ``1`` (``ITuningConfig.attn_scaling``; eq. 4 prints no scaling).
Note that lambda multiplies ``W_up^O (S V')`` only, not the bias, exactly as eq. (5) is written.
The key bias ``b^K`` cannot change the output (softmax ignores a constant added to every visual
position of a query), so its true gradient is zero; it is kept because the paper's parameter count
includes it, and AdamW may still move it by float noise without effect on any prediction.

Rows of ``X`` are grouped by image: with ``B_img`` images and ``B_rows = B_img * k`` rows, rows
``[i*k, (i+1)*k)`` belong to image ``i`` (k captions per image in training, k beams per image in beam
search). K and V' are computed once per image and never repeated per row: the ``k`` rows' queries are
laid side by side, ``(B_img, k*T, r)``, and attend against ``(B_img, N, r)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTN_SCALINGS = ("sqrt", "none")


class ITuningModule(nn.Module):
    """One I-Tuning module (one per kept LM layer).

    Parameters live in the dtype given at construction (fp32 by default, also under a bf16 LM):
    inputs are cast to it and the output back to the input's dtype, so fp32 master weights work
    with a bf16 backbone, and an all-bf16 model works too.
    """

    def __init__(
        self,
        d_lm: int,
        d_vis: int,
        r: int,
        scale: float,
        attn_scaling: str,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if attn_scaling not in ATTN_SCALINGS:
            raise ValueError(f"attn_scaling must be one of {ATTN_SCALINGS}, got {attn_scaling!r}")
        factory = {"device": device, "dtype": dtype}
        self.d_lm, self.d_vis, self.r = d_lm, d_vis, r
        self.scale = float(scale)
        self.attn_scaling = attn_scaling
        self.q_down = nn.Linear(d_lm, r, **factory)  # eq. (1)
        self.k_down = nn.Linear(d_vis, r, **factory)  # eq. (2)
        self.v_down = nn.Linear(d_vis, r, **factory)  # eq. (3)
        self.o_up = nn.Linear(r, d_lm, **factory)  # eq. (5)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Down-projections: PyTorch's Linear init. Up-projection and its bias: zero.

        Zero ``W_up^O``/``b^O`` make ``dh = 0`` exactly, so a fresh model *is* the frozen LM: training
        starts from the pre-trained decoder's behaviour instead of a random perturbation of every
        layer. Learning still starts at once: the gradient of ``W_up^O`` is ``lambda * dL/ddh (S V')^T``,
        non-zero, and the other projections receive gradient after the first update (as in LoRA).
        """
        for lin in (self.q_down, self.k_down, self.v_down):
            lin.reset_parameters()
        nn.init.zeros_(self.o_up.weight)
        nn.init.zeros_(self.o_up.bias)

    @property
    def softmax_scale(self) -> float:
        return 1.0 / math.sqrt(self.r) if self.attn_scaling == "sqrt" else 1.0

    def visual_kv(self, visual: Tensor) -> tuple[Tensor, Tensor]:
        """Eqs. (2)-(3): ``(B_img, N, d_vis)`` -> K, V', each ``(B_img, N, r)``."""
        visual = visual.to(self.k_down.weight.dtype)
        return self.k_down(visual), self.v_down(visual)

    def _queries(self, x: Tensor, kv: tuple[Tensor, Tensor]) -> tuple[Tensor, int, int, int]:
        k, _ = kv
        b_rows, t, _ = x.shape
        b_img = k.shape[0]
        if b_img == 0 or b_rows % b_img:
            raise ValueError(
                f"{b_rows} text rows cannot be grouped over {b_img} images: rows must be "
                "B_img * k, with rows [i*k, (i+1)*k) belonging to image i"
            )
        q = self.q_down(x.to(self.q_down.weight.dtype))  # eq. (1)
        return q.reshape(b_img, 1, (b_rows // b_img) * t, self.r), b_rows, t, b_img

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor]) -> Tensor:
        """``x (B_rows, T, d_lm)`` and K/V' of ``B_img`` images -> ``dh (B_rows, T, d_lm)``."""
        k, v = kv
        q, b_rows, t, _ = self._queries(x, kv)
        ctx = F.scaled_dot_product_attention(  # eq. (4) and the weighted sum of eq. (5)
            q, k.unsqueeze(1), v.unsqueeze(1), scale=self.softmax_scale
        )
        ctx = ctx.reshape(b_rows, t, self.r)
        dh = self.scale * F.linear(ctx, self.o_up.weight) + self.o_up.bias  # eq. (5)
        return dh.to(x.dtype)

    def attention_probs(self, x: Tensor, kv: tuple[Tensor, Tensor]) -> Tensor:
        """S of eq. (4) as ``(B_rows, T, N)``: each text position's weights over the visual tokens."""
        k, _ = kv
        q, b_rows, t, _ = self._queries(x, kv)
        logits = (q.squeeze(1) @ k.transpose(1, 2)) * self.softmax_scale
        return logits.float().softmax(dim=-1).reshape(b_rows, t, k.shape[1])

    def extra_repr(self) -> str:
        return (
            f"d_lm={self.d_lm}, d_vis={self.d_vis}, r={self.r}, scale={self.scale}, "
            f"attn_scaling={self.attn_scaling!r}"
        )

    @staticmethod
    def num_parameters(d_lm: int, d_vis: int, r: int) -> int:
        """The paper's per-layer count: ``2 d_lm r + 2 d_vis r + 3 r + d_lm`` (weights + biases)."""
        return 2 * d_lm * r + 2 * d_vis * r + 3 * r + d_lm
