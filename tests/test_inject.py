"""Injection into frozen HF causal LMs (GPT-2 and Llama): equivalence, freezing, Dropping, decoding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ituning.config import ITuningConfig
from ituning.inject import ITuningModel

VIS = 32  # width of the tiny visual tokens (conftest: tiny.VIS_WIDTH)
FAMILIES = ["gpt2", "llama"]


def _perturb(model: ITuningModel, std: float = 0.3, seed: int = 1) -> None:
    """Give every module non-zero weights, so the image visibly changes the LM's output."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.normal_(0, std)


def _ids(rows: int, t: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 64, (rows, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_modules_reproduce_the_frozen_lm_exactly(family, tiny, make_visual):
    lm = getattr(tiny, family)()
    ids = _ids(4)
    with torch.no_grad():
        frozen = lm(input_ids=ids).logits
    model = ITuningModel(lm, VIS, ITuningConfig(scale=3.0))
    _perturb(model)
    with torch.no_grad():
        for module in model.itune.values():  # output forced to zero, attention itself still runs
            module.o_up.weight.zero_()
            module.o_up.bias.zero_()
        wrapped = model(input_ids=ids, visual=make_visual(2)).logits
    assert torch.equal(wrapped, frozen)


@pytest.mark.parametrize("family", FAMILIES)
def test_modules_sit_on_every_kept_ffn_and_change_the_output(family, tiny, make_visual):
    lm = getattr(tiny, family)()
    ids = _ids(2)
    with torch.no_grad():
        frozen = lm(input_ids=ids).logits
    model = ITuningModel(lm, VIS, ITuningConfig())
    assert model.kept_layers == list(range(lm.config.num_hidden_layers))
    assert list(model.itune) == [str(i) for i in model.kept_layers]
    assert model.bottleneck == 16  # d_lm // 2
    _perturb(model)
    with torch.no_grad():
        a = model(input_ids=ids, visual=make_visual(2, seed=0)).logits
        b = model(input_ids=ids, visual=make_visual(2, seed=1)).logits
    assert not torch.allclose(a, frozen) and not torch.allclose(a, b)
    # the LM's own state-dict keys are untouched by injection (hooks, no wrapper modules)
    assert set(model.lm.state_dict()) == set(getattr(tiny, family)().state_dict())


def test_dh_is_added_to_the_ffn_output_of_that_layer(tiny, make_visual):
    """Block 3 computes h + attn + FFN(ln_2(.)) + dh(ln_2(.)): X of eq. (1) is the FFN's input."""
    lm = tiny.gpt2()
    model = ITuningModel(lm, VIS, ITuningConfig(drop_first=3, scale=2.0))
    _perturb(model)
    visual = make_visual(1)
    block = lm.transformer.h[3]
    seen = {}
    handles = [
        block.register_forward_hook(lambda m, i, o: seen.update(inp=i[0], out=o)),
        block.mlp.register_forward_hook(lambda m, i, o: seen.update(x=i[0])),
    ]
    with torch.no_grad():
        model(input_ids=_ids(1), visual=visual)
        for handle in handles:
            handle.remove()
        x, mlp, module = seen["x"], block.mlp, model.itune["3"]
        h = seen["inp"] + block.attn(block.ln_1(seen["inp"]))[0]
        torch.testing.assert_close(x, block.ln_2(h))
        ffn_plain = mlp.c_proj(mlp.act(mlp.c_fc(x)))
        dh = module(x, module.visual_kv(visual))
    assert dh.abs().max() > 1e-3
    torch.testing.assert_close(seen["out"], h + ffn_plain + dh)


def test_dh_is_added_to_the_swiglu_ffn_output_of_a_llama_layer(tiny, make_visual):
    """Llama layer 3 computes h + SwiGLU(x) + dh(x) with h = input + attention and
    x = post_attention_layernorm(h): X of eq. (1) is the FFN's input in this family too."""
    lm = tiny.llama(n_layer=4)
    assert lm.config.hidden_act == "silu"
    model = ITuningModel(lm, VIS, ITuningConfig(drop_first=3, scale=2.0))
    _perturb(model)
    visual = make_visual(1)
    layer = lm.model.layers[3]
    seen = {}

    def on_layer(_m, args, kwargs, out):
        seen.update(inp=args[0] if args else kwargs["hidden_states"], out=out)

    handles = [
        layer.register_forward_hook(on_layer, with_kwargs=True),
        layer.self_attn.register_forward_hook(lambda m, i, o: seen.update(attn=o[0])),
        layer.mlp.register_forward_hook(lambda m, i, o: seen.update(x=i[0])),
    ]
    with torch.no_grad():
        model(input_ids=_ids(1), visual=visual)
        for handle in handles:
            handle.remove()
        x, mlp, module = seen["x"], layer.mlp, model.itune["3"]
        h = seen["inp"] + seen["attn"]
        torch.testing.assert_close(x, layer.post_attention_layernorm(h))
        swiglu = mlp.down_proj(F.silu(mlp.gate_proj(x)) * mlp.up_proj(x))
        dh = module(x, module.visual_kv(visual))
    assert dh.abs().max() > 1e-3
    torch.testing.assert_close(seen["out"], h + swiglu + dh)


@pytest.mark.parametrize("family", FAMILIES)
def test_one_optimiser_step_changes_only_module_weights(family, tiny, make_visual):
    lm = getattr(tiny, family)()
    model = ITuningModel(lm, VIS, ITuningConfig())
    assert all(not p.requires_grad for p in model.lm.parameters())
    trainable = model.trainable_parameters()
    assert {id(p) for p in trainable} == {id(p) for p in model.itune.parameters()}
    assert all(p.requires_grad for p in trainable)
    before_lm = {k: v.clone() for k, v in model.lm.state_dict().items()}
    before_mod = {k: v.clone() for k, v in model.module_state_dict().items()}
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    ids = _ids(6)
    for _ in range(2):  # step 1 moves W_up only (zero init), step 2 everything
        opt.zero_grad()
        loss = model(input_ids=ids, visual=make_visual(2), labels=ids).loss
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in model.lm.parameters())
    for key, value in model.lm.state_dict().items():
        assert torch.equal(value, before_lm[key]), key
    after_mod = model.module_state_dict()
    assert all(not torch.equal(after_mod[k], before_mod[k]) for k in before_mod)


def test_train_mode_keeps_the_frozen_lm_in_eval(tiny, make_visual):
    model = ITuningModel(tiny.gpt2(), VIS, ITuningConfig())
    _perturb(model)
    model.train()
    assert model.training and model.itune.training and not model.lm.training
    assert not any(m.training for m in model.lm.modules())
    ids, visual = _ids(2), make_visual(2)
    with torch.no_grad():  # tiny GPT-2 has dropout 0.5: any active dropout would differ run to run
        assert torch.equal(model(ids, visual=visual).logits, model(ids, visual=visual).logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_dropping_builds_no_graph_below_the_first_kept_layer(family, tiny, make_visual):
    lm = getattr(tiny, family)(n_layer=4)
    model = ITuningModel(lm, VIS, ITuningConfig(drop_first=2))
    assert model.kept_layers == [2, 3] and list(model.itune) == ["2", "3"]
    _perturb(model)
    ids = _ids(2)
    out = model(input_ids=ids, visual=make_visual(1), labels=ids, output_hidden_states=True)
    hs = out.hidden_states  # hs[0] = embeddings, hs[i] = output of layer i-1
    for i in range(3):  # embeddings and the outputs of layers 0, 1: no autograd graph at all
        assert hs[i].grad_fn is None and not hs[i].requires_grad, i
    assert hs[3].grad_fn is not None  # output of layer 2, the first kept one
    out.loss.backward()
    assert all(p.grad is not None for p in model.trainable_parameters())


def test_rows_grouped_per_image_match_one_image_at_a_time(tiny, make_visual):
    model = ITuningModel(tiny.llama(), VIS, ITuningConfig())
    _perturb(model)
    visual, ids = make_visual(2), _ids(6)  # 3 captions per image
    with torch.no_grad():
        batched = model(input_ids=ids, visual=visual).logits
        for i in range(2):
            alone = model(input_ids=ids[3 * i : 3 * i + 3], visual=visual[i : i + 1]).logits
            torch.testing.assert_close(batched[3 * i : 3 * i + 3], alone, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="cannot be grouped"):
            model(input_ids=_ids(5), visual=visual)


def test_visual_context_holds_kv_once_and_clears(tiny, make_visual):
    model = ITuningModel(tiny.gpt2(), VIS, ITuningConfig())
    calls = []
    handle = model.itune["0"].k_down.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad(), model.visual_context(make_visual(2)):
        for _ in range(3):
            model(input_ids=_ids(4))
    handle.remove()
    assert len(calls) == 1  # K/V computed once per context, not per LM call or per row
    assert model._kv is None
    with pytest.raises(RuntimeError, match="without visual tokens"):
        model(input_ids=_ids(2))
    with pytest.raises(ValueError, match="visual must be"):
        model(input_ids=_ids(2), visual=torch.randn(2, 16, VIS + 1))


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_kv_cache_and_beams_keep_each_image(family, tiny, make_visual):
    model = ITuningModel(getattr(tiny, family)(), VIS, ITuningConfig(drop_first=1))
    _perturb(model, std=0.5)
    visual = make_visual(3)
    greedy = dict(max_new_tokens=6, do_sample=False)
    cached = model.generate(visual, **greedy)
    assert cached.shape == (3, 7)
    assert torch.equal(cached, model.generate(visual, use_cache=False, **greedy))
    beams = model.generate(visual, num_beams=3, **greedy)
    for i in range(3):  # row j of the expanded batch belongs to image j // num_beams
        assert torch.equal(
            beams[i : i + 1], model.generate(visual[i : i + 1], num_beams=3, **greedy)
        )
    assert len({tuple(r.tolist()) for r in beams}) > 1  # the image matters
    many = model.generate(visual, num_beams=2, num_return_sequences=2, **greedy)
    assert many.shape[0] == 6


def test_capture_attention_records_eq4_per_step(tiny, make_visual):
    model = ITuningModel(tiny.gpt2(), VIS, ITuningConfig())
    _perturb(model)
    with model.capture_attention() as maps:
        model.generate(make_visual(2), max_new_tokens=3, do_sample=False)
    steps = maps[3]
    assert len(steps) == 3 and steps[0].shape == (2, 1, 16)
    torch.testing.assert_close(steps[1].sum(-1), torch.ones(2, 1))
    with pytest.raises(ValueError, match="carry no"):
        ITuningModel(tiny.gpt2(), VIS, ITuningConfig(drop_first=2)).capture_attention(
            [0]
        ).__enter__()


def test_bf16_backbone_with_fp32_modules(tiny, make_visual):
    lm = tiny.gpt2().to(torch.bfloat16)
    ids = _ids(2)
    with torch.no_grad():
        frozen = lm(input_ids=ids).logits
    model = ITuningModel(lm, VIS, ITuningConfig())
    assert next(model.itune.parameters()).dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, visual=make_visual(2).bfloat16()).logits, frozen)
    _perturb(model)
    loss = model(input_ids=ids, visual=make_visual(2), labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and all(
        p.grad.dtype == torch.float32 for p in model.trainable_parameters()
    )


def test_module_state_dict_holds_only_module_weights(tiny):
    model = ITuningModel(tiny.gpt2(), VIS, ITuningConfig(drop_first=1))
    state = model.module_state_dict()
    assert all(k.startswith("itune.") for k in state)
    assert sum(v.numel() for v in state.values()) == sum(
        p.numel() for p in model.trainable_parameters()
    )
    assert set(state) <= set(model.state_dict())
    lm = model.unwrap()
    assert not any(ffn._forward_hooks for ffn in (b.mlp for b in lm.transformer.h))
