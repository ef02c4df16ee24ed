"""ClipCap's mappers: shapes, the closed-form size, gradients, and fidelity to the reference's
attention layout, parameter names and initialisation order."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ituning.errors import ConfigError
from ituning.methods.clipcap_config import ClipCapConfig
from ituning.methods.mappers import (
    MLPMapper,
    SelfAttention,
    TransformerMapper,
    build_mapper,
    mapper_parameter_count,
)


def transformer(prefix=3, clip=2, layers=2, heads=2, ratio=2.0) -> ClipCapConfig:
    return ClipCapConfig(
        mapper="transformer",
        prefix_length=prefix,
        clip_length=clip,
        num_layers=layers,
        num_heads=heads,
        mlp_ratio=ratio,
        train_lm=False,
    )


def mlp(prefix=3) -> ClipCapConfig:
    return ClipCapConfig(mapper="mlp", prefix_length=prefix, train_lm=True)


@pytest.mark.parametrize("config", [transformer(), transformer(prefix=1, clip=5, layers=1), mlp()])
@pytest.mark.parametrize("batch", [1, 4])
def test_output_shape(config, batch):
    torch.manual_seed(0)
    mapper = build_mapper(16, 8, config)
    out = mapper(torch.randn(batch, 16))
    assert out.shape == (batch, config.prefix_length, 8)
    assert isinstance(mapper, TransformerMapper if config.mapper == "transformer" else MLPMapper)


@pytest.mark.parametrize(
    "d_clip,d_lm,config",
    [
        (512, 768, ClipCapConfig.for_method("clipcap-transformer")),
        (640, 1280, ClipCapConfig.for_method("clipcap-transformer")),
        (512, 1024, ClipCapConfig.for_method("clipcap-mlp")),
        (512, 1280, ClipCapConfig.for_method("clipcap-mlp")),
        (16, 12, transformer(prefix=5, clip=7, layers=3, heads=4, ratio=1.5)),  # int(12 * 1.5)
        (16, 10, transformer(prefix=2, clip=1, layers=1, heads=5, ratio=0.35)),  # int(3.5) = 3
        (9, 5, mlp(prefix=3)),  # odd d_lm * P: the hidden width rounds down
    ],
)
def test_closed_form_count_equals_the_built_module(d_clip, d_lm, config):
    with torch.device("meta"):
        mapper = build_mapper(d_clip, d_lm, config)
    built = sum(p.numel() for p in mapper.parameters())
    assert mapper_parameter_count(d_clip, d_lm, config) == built


def test_published_sizes_at_gpt2_base():
    # the transformer at 8 d^2 + 8 d a layer, the MLP dominated by its (d P / 2) x (d P) map
    d = 768
    expected = (512 + 1) * 40 * d + 40 * d + 8 * (8 * d * d + 8 * d)
    assert mapper_parameter_count(512, d, ClipCapConfig.for_method("clipcap-transformer")) == (
        expected
    )
    assert expected == 53_587_968
    h, o = 5 * d, 10 * d
    mlp_count = mapper_parameter_count(512, d, ClipCapConfig.for_method("clipcap-mlp"))
    assert mlp_count == 512 * h + h + h * o + o == 31_468_800


@pytest.mark.parametrize("config", [transformer(), mlp()])
def test_gradients_reach_every_parameter(config):
    torch.manual_seed(0)
    mapper = build_mapper(16, 8, config)
    target = torch.randn(3, config.prefix_length, 8)
    loss = (mapper(torch.randn(3, 16)) - target).pow(2).mean()
    loss.backward()
    for name, p in mapper.named_parameters():
        assert p.requires_grad, name
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("config", [transformer(), mlp()])
def test_images_do_not_mix_across_the_batch(config):
    torch.manual_seed(0)
    mapper = build_mapper(16, 8, config).double()
    x = torch.randn(4, 16, dtype=torch.float64)
    together = mapper(x)
    for i in range(4):
        torch.testing.assert_close(together[i : i + 1], mapper(x[i : i + 1]))
    assert not torch.allclose(together[0], together[1])  # the prefix depends on the image


def test_attention_layout_is_clipcaps():
    """Queries from ``to_queries``; keys the first d outputs of ``to_keys_values``, values the
    second d; head h owns features [h dh, (h+1) dh) of each; scale 1/sqrt(dh); then ``project``."""
    torch.manual_seed(0)
    d, heads, n = 12, 3, 5
    attn = SelfAttention(d, heads).double()
    x = torch.randn(2, n, d, dtype=torch.float64)
    q = x @ attn.to_queries.weight.T
    kv = x @ attn.to_keys_values.weight.T
    k, v = kv[..., :d], kv[..., d:]
    dh = d // heads
    outs = []
    for h in range(heads):
        part = slice(h * dh, (h + 1) * dh)
        scores = q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(dh)
        outs.append(scores.softmax(dim=-1) @ v[..., part])
    expected = attn.project(torch.cat(outs, dim=-1))
    torch.testing.assert_close(attn(x), expected)
    assert attn.to_queries.bias is None and attn.to_keys_values.bias is None
    assert attn.project.bias is not None


def test_transformer_output_is_the_constants_positions():
    torch.manual_seed(0)
    config = transformer(prefix=3, clip=2, layers=1)
    mapper = build_mapper(16, 8, config).double()
    x = torch.randn(2, 16, dtype=torch.float64)
    image = mapper.linear(x).view(2, 2, 8)
    consts = mapper.prefix_const.expand(2, -1, -1)
    full = mapper.transformer(torch.cat([image, consts], dim=1))
    torch.testing.assert_close(mapper(x), full[:, 2:])


def test_state_dict_names_match_clipcaps_checkpoints():
    layer = [
        "norm1.weight",
        "norm1.bias",
        "attn.to_queries.weight",
        "attn.to_keys_values.weight",
        "attn.project.weight",
        "attn.project.bias",
        "norm2.weight",
        "norm2.bias",
        "mlp.fc1.weight",
        "mlp.fc1.bias",
        "mlp.fc2.weight",
        "mlp.fc2.bias",
    ]
    with torch.device("meta"):
        t = build_mapper(16, 8, transformer(layers=2))
        m = build_mapper(16, 8, mlp())
    expected = {"prefix_const", "linear.weight", "linear.bias"}
    expected |= {f"transformer.layers.{i}.{name}" for i in range(2) for name in layer}
    assert set(t.state_dict()) == expected
    assert set(m.state_dict()) == {
        "model.0.weight",
        "model.0.bias",
        "model.2.weight",
        "model.2.bias",
    }
    assert isinstance(m.model[1], nn.Tanh)


def test_a_seed_draws_the_reference_initialisation():
    """The reference builds the transformer's layers (each: queries, keys+values, output, fc1,
    fc2), then the linear map, then ``randn`` constants; PyTorch's defaults for each."""
    d_clip, d, config = 16, 8, transformer(prefix=3, clip=2, layers=2, ratio=2.0)
    torch.manual_seed(7)
    expected: list[torch.Tensor] = []
    for _ in range(config.num_layers):
        for fan_in, fan_out, bias in [
            (d, d, 0),
            (d, 2 * d, 0),
            (d, d, 1),
            (d, 2 * d, 1),
            (2 * d, d, 1),
        ]:
            lin = nn.Linear(fan_in, fan_out, bias=bool(bias))
            expected += [lin.weight, *([lin.bias] if bias else [])]
    lin = nn.Linear(d_clip, config.clip_length * d)
    expected += [lin.weight, lin.bias, torch.randn(config.prefix_length, d)]

    torch.manual_seed(7)
    mapper = build_mapper(d_clip, d, config)
    got = [
        p for name, p in mapper.named_parameters() if "norm" not in name and name != "prefix_const"
    ] + [mapper.prefix_const]
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
    for name, p in mapper.named_parameters():  # LayerNorms start at identity
        if "norm" in name:
            assert torch.equal(
                p, torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p)
            )

    torch.manual_seed(7)
    first, second = nn.Linear(d_clip, d * 3 // 2), nn.Linear(d * 3 // 2, d * 3)
    torch.manual_seed(7)
    mapper = build_mapper(d_clip, d, mlp(prefix=3))
    torch.testing.assert_close(mapper.model[0].weight, first.weight)
    torch.testing.assert_close(mapper.model[2].bias, second.bias)


def test_bad_shapes_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="not divisible by clipcap.num_heads"):
        build_mapper(16, 10, transformer(heads=4))
    with pytest.raises(ConfigError, match="mapper='mlp'"):
        MLPMapper(16, 8, transformer())
    with pytest.raises(ConfigError, match="mapper='transformer'"):
        TransformerMapper(16, 8, mlp())
