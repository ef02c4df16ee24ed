"""The I-Tuning module against a direct float64 statement of the paper's eqs. (1)-(5), and its config."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from ituning.config import ITuningConfig
from ituning.errors import ConfigError
from ituning.module import ITuningModule

D_LM, D_VIS, R, N, T = 24, 20, 8, 7, 5


def _randomised(scale: float, attn_scaling: str, seed: int = 0) -> ITuningModule:
    torch.manual_seed(seed)
    module = ITuningModule(D_LM, D_VIS, R, scale, attn_scaling)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)  # non-zero W_up/b_up so every term of eq. (5) shows
    return module


def _reference(module: ITuningModule, x: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """Eqs. (1)-(5) for each text row and its own image, in float64, one position at a time."""
    w = {k: v.detach().double() for k, v in module.state_dict().items()}
    b_rows, b_img = x.shape[0], visual.shape[0]
    k_per = b_rows // b_img
    c = 1 / math.sqrt(module.r) if module.attn_scaling == "sqrt" else 1.0
    out = torch.empty(x.shape, dtype=torch.float64)
    for row in range(b_rows):
        v_img = visual[row // k_per].double()
        keys = v_img @ w["k_down.weight"].T + w["k_down.bias"]  # (2)
        vals = v_img @ w["v_down.weight"].T + w["v_down.bias"]  # (3)
        for t in range(x.shape[1]):
            q = w["q_down.weight"] @ x[row, t].double() + w["q_down.bias"]  # (1)
            s = torch.softmax(c * (keys @ q), dim=0)  # (4)
            ctx = (s[:, None] * vals).sum(0)
            out[row, t] = module.scale * (w["o_up.weight"] @ ctx) + w["o_up.bias"]  # (5)
    return out


@pytest.mark.parametrize("attn_scaling", ["sqrt", "none"])
@pytest.mark.parametrize("b_img,k", [(1, 1), (2, 3), (3, 1)])
def test_matches_float64_statement_of_the_equations(attn_scaling, b_img, k):
    module = _randomised(scale=2.5, attn_scaling=attn_scaling).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(b_img * k, T, D_LM, generator=gen, dtype=torch.float64)
    visual = torch.randn(b_img, N, D_VIS, generator=gen, dtype=torch.float64)
    got = module(x, module.visual_kv(visual))
    torch.testing.assert_close(got, _reference(module, x, visual), rtol=1e-10, atol=1e-10)


def test_fp32_close_to_reference_and_attention_probs_are_eq4():
    module = _randomised(scale=1.0, attn_scaling="none")
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, T, D_LM, generator=gen)
    visual = torch.randn(2, N, D_VIS, generator=gen)
    kv = module.visual_kv(visual)
    torch.testing.assert_close(
        module(x, kv).double(), _reference(module, x, visual), rtol=1e-4, atol=1e-5
    )
    probs = module.attention_probs(x, kv)
    assert probs.shape == (4, T, N)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, T))
    # rows 2, 3 belong to image 1: their probabilities use image 1's keys
    keys = kv[0][1]
    q = module.q_down(x[3])
    torch.testing.assert_close(probs[3], torch.softmax(q @ keys.T, dim=-1))


def test_fresh_module_outputs_exact_zero_and_still_learns():
    module = ITuningModule(D_LM, D_VIS, R, 3.0, "sqrt")
    dh = module(torch.randn(2, T, D_LM), module.visual_kv(torch.randn(2, N, D_VIS)))
    assert torch.equal(dh, torch.zeros_like(dh))
    dh.sum().backward()
    assert module.o_up.weight.grad.abs().sum() > 0
    assert module.o_up.bias.grad.abs().sum() > 0


def test_bf16_and_mixed_precision():
    module = _randomised(scale=1.0, attn_scaling="sqrt")
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, T, D_LM, generator=gen)
    visual = torch.randn(1, N, D_VIS, generator=gen)
    ref = module(x, module.visual_kv(visual))
    # fp32 master weights under a bf16 LM: output comes back in the caller's dtype
    mixed = module(x.bfloat16(), module.visual_kv(visual.bfloat16()))
    assert mixed.dtype == torch.bfloat16
    torch.testing.assert_close(mixed.float(), ref, rtol=0.05, atol=0.05)
    # an all-bf16 module
    m16 = module.to(torch.bfloat16)
    out16 = m16(x.bfloat16(), m16.visual_kv(visual.bfloat16()))
    assert out16.dtype == torch.bfloat16
    torch.testing.assert_close(out16.float(), ref, rtol=0.1, atol=0.1)


def test_rows_must_group_over_images():
    module = ITuningModule(D_LM, D_VIS, R, 1.0, "sqrt")
    kv = module.visual_kv(torch.randn(2, N, D_VIS))
    with pytest.raises(ValueError, match="cannot be grouped"):
        module(torch.randn(3, T, D_LM), kv)


def test_parameter_count_is_the_papers_formula():
    module = ITuningModule(D_LM, D_VIS, R, 1.0, "sqrt")
    count = sum(p.numel() for p in module.parameters())
    assert count == ITuningModule.num_parameters(D_LM, D_VIS, R)
    assert count == 2 * D_LM * R + 2 * D_VIS * R + 3 * R + D_LM


def test_config_defaults_and_validation():
    cfg = ITuningConfig()
    assert (cfg.bottleneck, cfg.scale, cfg.drop_first, cfg.include_cls, cfg.attn_scaling) == (
        None,
        1.0,
        0,
        False,
        "sqrt",
    )
    assert cfg.resolved_bottleneck(1280) == 640
    assert ITuningConfig(bottleneck=64).resolved_bottleneck(1280) == 64
    with pytest.raises(ConfigError, match="lambda >= 1") as err:
        ITuningConfig(scale=0.5)
    assert "\n" not in str(err.value)
    assert ITuningConfig(scale=0.5, allow_scale_below_one=True).scale == 0.5
    with pytest.raises(ConfigError, match="attn_scaling"):
        ITuningConfig(attn_scaling="cosine")
    with pytest.raises(ConfigError, match="lamda"):
        ITuningConfig(lamda=2)
    with pytest.raises(ConfigError, match="removes every module"):
        ITuningConfig(drop_first=12).kept_layers(12)
    assert ITuningConfig(drop_first=2).kept_layers(4) == [2, 3]
    with pytest.raises(ValidationError):  # frozen
        cfg.scale = 2.0  # type: ignore[misc]
