"""ClipCap's two mapping networks: CLIP's pooled image embedding -> ``prefix_length`` LM inputs.

Both take ``(B, d_clip)`` and return ``(B, prefix_length, d_lm)``, the vectors put in front of the
caption's token embeddings. The architecture is that of ClipCap's public code
(rmokady/CLIP_prefix_caption, ``train.py``), re-written here:

* :class:`MLPMapper`: ``d_clip -> d_lm*P//2 -> d_lm*P``, tanh between, used with a fine-tuned LM.
* :class:`TransformerMapper`: one linear map to ``clip_length`` vectors, ``prefix_length`` learned
  constants appended, a pre-norm transformer over all of them; the outputs at the constants'
  positions are the prefix. Used with a frozen LM.

Two things are kept exactly as there, on purpose:

* parameter names (``linear``, ``prefix_const``, ``transformer.layers.<i>.attn.to_queries`` ...,
  ``model.0``/``model.2``), so the mapper part of a published ClipCap checkpoint (its
  ``clip_project.*`` entries) loads into these modules with ``load_state_dict``;
* construction order and initialisation (PyTorch's defaults for Linear and LayerNorm, standard
  normal constants), so one seed gives the reference's initial weights.

:func:`mapper_parameter_count` is the hand-derived size of each, checked against the built modules
by the tests, so accounting (``ituning.params``) needs no module at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ituning.errors import ConfigError
from ituning.methods.clipcap_config import ClipCapConfig


def _ffn_width(d_lm: int, mlp_ratio: float) -> int:
    """The transformer MLP's hidden width, truncated as the reference does (``int(d * ratio)``)."""
    return int(d_lm * mlp_ratio)


class SelfAttention(nn.Module):
    """ClipCap's multi-head self-attention.

    Queries come from one bias-free ``d -> d`` map and keys and values from one bias-free
    ``d -> 2d`` map (keys the first ``d`` outputs, values the second; each split into heads of
    ``d // heads`` contiguous features); the output projection has a bias. Scores are scaled by
    ``1/sqrt(d // heads)`` and nothing is masked: every position sees every other (the mapper's
    input is one image, not a sequence to be predicted). No dropout (the reference's is 0).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"d_lm = {dim} is not divisible by clipcap.num_heads = {num_heads}")
        self.num_heads = num_heads
        self.to_queries = nn.Linear(dim, dim, bias=False)
        self.to_keys_values = nn.Linear(dim, 2 * dim, bias=False)
        self.project = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        h = self.num_heads
        q = self.to_queries(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.to_keys_values(x).view(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # default scale: 1/sqrt(d // h)
        return self.project(out.transpose(1, 2).reshape(b, n, d))


class FeedForward(nn.Module):
    """``d -> hidden -> d`` with ReLU between and biases on both maps (the reference's choice,
    not GPT-2's GELU)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class TransformerLayer(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))``, then ``+ mlp(norm2(x))``. LayerNorms are affine."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, _ffn_width(dim, mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """``num_layers`` :class:`TransformerLayer` in sequence, with no final norm (as the reference:
    the prefix goes straight into the LM's input embedding space)."""

    def __init__(self, dim: int, num_heads: int, num_layers: int, mlp_ratio: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(dim, num_heads, mlp_ratio) for _ in range(num_layers)
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class TransformerMapper(nn.Module):
    """ClipCap's transformer mapper: ``(B, d_clip)`` -> ``(B, prefix_length, d_lm)``.

    The embedding is mapped linearly to ``clip_length`` vectors of width ``d_lm``; the
    ``prefix_length`` learned constants ``prefix_const`` follow them, and the transformer lets the
    constants read the image. Only the constants' outputs are kept: they are free to move anywhere
    in the LM's embedding space, while the image-derived vectors serve only as keys and values.
    """

    def __init__(self, d_clip: int, d_lm: int, config: ClipCapConfig) -> None:
        super().__init__()
        if config.mapper != "transformer":
            raise ConfigError(
                f"TransformerMapper needs mapper='transformer', got {config.mapper!r}"
            )
        self.clip_length = config.clip_length
        self.prefix_length = config.prefix_length
        # built first, then the linear map, then the constants: the reference's order, so that
        # one seed draws the same initial weights
        self.transformer = Transformer(d_lm, config.num_heads, config.num_layers, config.mlp_ratio)
        self.linear = nn.Linear(d_clip, config.clip_length * d_lm)
        self.prefix_const = nn.Parameter(torch.randn(config.prefix_length, d_lm))

    def forward(self, clip: Tensor) -> Tensor:
        b = clip.shape[0]
        image = self.linear(clip).view(b, self.clip_length, -1)
        consts = self.prefix_const.unsqueeze(0).expand(b, -1, -1)
        out = self.transformer(torch.cat([image, consts], dim=1))
        return out[:, self.clip_length :]


class MLPMapper(nn.Module):
    """ClipCap's MLP mapper: ``d_clip -> d_lm*P//2 -> d_lm*P`` (tanh between), viewed as
    ``(B, P, d_lm)``. Almost all of it is the second map, quadratic in ``d_lm * P``: this is why
    ClipCap pairs it with a short prefix (10) and a fine-tuned LM."""

    def __init__(self, d_clip: int, d_lm: int, config: ClipCapConfig) -> None:
        super().__init__()
        if config.mapper != "mlp":
            raise ConfigError(f"MLPMapper needs mapper='mlp', got {config.mapper!r}")
        self.prefix_length = config.prefix_length
        self.d_lm = d_lm
        out = d_lm * config.prefix_length
        self.model = nn.Sequential(nn.Linear(d_clip, out // 2), nn.Tanh(), nn.Linear(out // 2, out))

    def forward(self, clip: Tensor) -> Tensor:
        return self.model(clip).view(clip.shape[0], self.prefix_length, self.d_lm)


def build_mapper(d_clip: int, d_lm: int, config: ClipCapConfig) -> nn.Module:
    """The mapper ``config`` names, from CLIP embeddings of width ``d_clip`` to an LM of ``d_lm``."""
    cls = TransformerMapper if config.mapper == "transformer" else MLPMapper
    return cls(d_clip, d_lm, config)


def mapper_parameter_count(d_clip: int, d_lm: int, config: ClipCapConfig) -> int:
    """Trainable parameters of :func:`build_mapper`'s module, in closed form.

    * MLP, ``o = d_lm P`` and ``h = o // 2``: ``d_clip h + h`` + ``h o + o``.
    * Transformer, ``C`` = clip_length, ``P`` = prefix_length, ``L`` layers, ``f`` = FFN width:
      ``(d_clip + 1) C d_lm`` (linear map) + ``P d_lm`` (constants) + ``L`` times a layer of
      ``4 d_lm`` (two affine LayerNorms) + ``4 d_lm^2 + d_lm`` (queries, keys+values, output with
      bias) + ``2 d_lm f + f + d_lm`` (the MLP); at ``f = 2 d_lm``: ``8 d_lm^2 + 8 d_lm`` a layer.
    """
    d = d_lm
    if config.mapper == "mlp":
        out = d * config.prefix_length
        hidden = out // 2
        return d_clip * hidden + hidden + hidden * out + out
    f = _ffn_width(d, config.mlp_ratio)
    layer = 4 * d + (4 * d * d + d) + (2 * d * f + f + d)
    return (
        (d_clip + 1) * config.clip_length * d + config.prefix_length * d + config.num_layers * layer
    )
