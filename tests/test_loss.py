"""The chunked training loss equals the plain logits path, in value and in every gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ituning import loss as loss_mod
from ituning.config import ITuningConfig
from ituning.inject import ITuningModel
from ituning.loss import linear_cross_entropy


def _plain_nll(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    keep = mask[:, 1:].bool()
    return F.cross_entropy(logits[:, :-1][keep], ids[:, 1:][keep], reduction="sum")


@pytest.mark.parametrize("chunk_elements", [1, 50, 1 << 23])  # one row, 5 rows, all rows a chunk
@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_cross_entropy_matches_logits_path(monkeypatch, chunk_elements, with_bias) -> None:
    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", chunk_elements)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(23, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(10, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    b = (
        torch.randn(10, generator=gen, dtype=torch.float64, requires_grad=True)
        if with_bias
        else None
    )
    t = torch.randint(0, 10, (23,), generator=gen)

    ours = linear_cross_entropy(h, w, t, b) * 0.37  # a non-unit upstream gradient
    ours.backward()
    got = [h.grad.clone(), w.grad.clone(), *([b.grad.clone()] if b is not None else [])]
    for p in (h, w, b):
        if p is not None:
            p.grad = None
    ref = F.cross_entropy(F.linear(h, w, b), t, reduction="sum") * 0.37
    ref.backward()
    want = [h.grad, w.grad, *([b.grad] if b is not None else [])]
    torch.testing.assert_close(ours, ref)
    for g, r in zip(got, want, strict=True):
        torch.testing.assert_close(g, r)


def test_under_bf16_autocast_the_head_is_cast_once_and_matches_the_logits_path(
    monkeypatch,
) -> None:
    """Autocast does not cache casts of a frozen weight: the loss casts the head itself, once
    for all chunks, and still equals autocast's own logits path to bf16 rounding."""
    from torch.profiler import ProfilerActivity, profile

    monkeypatch.setattr(loss_mod, "CHUNK_ELEMENTS", 4 * 64)  # 4 tokens a chunk: 6 chunks
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(23, 16, generator=gen, requires_grad=True)
    w = torch.randn(64, 16, generator=gen) * 0.3  # frozen head, as in I-Tuning
    t = torch.randint(0, 64, (23,), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            ours = linear_cross_entropy(h, w, t)
        ref = F.cross_entropy(F.linear(h, w).float(), t, reduction="sum")
    head_casts = [
        e for e in prof.events() if e.name == "aten::_to_copy" and e.input_shapes[:1] == [[64, 16]]
    ]
    assert len(head_casts) == 1
    assert ours.dtype == torch.float32
    ours.backward()
    got = h.grad.clone()
    h.grad = None
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(got, h.grad, rtol=2e-2, atol=2e-2)


def test_frozen_head_gets_no_gradient_and_costs_none() -> None:
    h = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(10, 8)  # frozen (requires_grad False): nothing is accumulated for it
    linear_cross_entropy(h, w, torch.tensor([1, 2, 3, 4])).backward()
    assert h.grad is not None and w.grad is None


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_model_loss_equals_logits_loss_with_padding(tiny, make_visual, family) -> None:
    """``return_nll`` (hidden states, chunked head) against the LM's full logits, on a padded
    batch of 2 images x 3 captions, for the loss and every module gradient."""
    lm = tiny.gpt2() if family == "gpt2" else tiny.llama()
    model = ITuningModel(lm, tiny.VIS_WIDTH, ITuningConfig(bottleneck=8, drop_first=1))
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.normal_(0, 0.1)  # a fresh module's zero W_up would hide the image
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(4, tiny.VOCAB, (6, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[4, 3:] = 0
    visual = make_visual(2)

    ours = model(input_ids=ids, attention_mask=mask, visual=visual, return_nll=True)
    ours.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids, attention_mask=mask, visual=visual).logits
    ref = _plain_nll(logits, ids, mask)
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert got
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(got[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)
