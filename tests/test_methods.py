"""Every method through the same training loop, resume, decoding, evaluation and checkpoint:
I-Tuning, its fully fine-tuned variant, and ClipCap's two variants (at a tiny prefix)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ituning.backbones import load_lm
from ituning.checkpoint import build_from_checkpoint
from ituning.data.images import load_image
from ituning.decode import DecodeSettings, generate_captions
from ituning.methods.registry import METHODS, build_captioner, clip_projection, is_clipcap
from ituning.text import CaptionCodec
from ituning.train import RESULT_FILE, run_experiment
from ituning.vision import load_vision

#: ClipCap's shapes at test size (the published ones: prefix 40 or 10, 8 layers).
TINY_CLIPCAP = {"prefix_length": 3, "clip_length": 3, "num_layers": 1, "num_heads": 2}
#: Which methods train the LM's own weights.
TRAINS_LM = {"itune": False, "full": True, "clipcap-transformer": False, "clipcap-mlp": True}


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


def _config(make_train_config, method: str, **extra):
    overrides = {"method": method, "epochs": 2, "optim.lr": 3e-3, **extra}
    if is_clipcap(method):
        mapper = "transformer" if method.endswith("transformer") else "mlp"
        overrides["clipcap"] = {**TINY_CLIPCAP, "mapper": mapper, "train_lm": TRAINS_LM[method]}
    return make_train_config(**overrides)


class Crash(Exception):
    pass


def _crash_at(step: int):
    def on_metric(name: str, value: float, at: int) -> None:
        if name == "train/loss" and at == step:
            raise Crash(name)

    return on_metric


@pytest.fixture(scope="module", params=METHODS)
def trained(request, make_train_config, tmp_path_factory):
    method = request.param
    cfg = _config(
        make_train_config, method, eval={"splits": ["test"], "nocaps": False, "beam": 2,
                                         "max_new_tokens": 6},
    )  # fmt: skip
    out = tmp_path_factory.mktemp(method) / "run"
    losses: dict[int, float] = {}
    result = run_experiment(
        cfg,
        out,
        progress=False,
        on_metric=lambda n, v, s: losses.update({s: v}) if n == "train/loss" else None,
    )
    return method, cfg, out, result, losses


def test_each_method_trains_what_it_should_and_the_loss_falls(trained):
    method, cfg, out, result, losses = trained
    steps = sorted(losses)
    assert len(steps) == 8
    first, last = sum(losses[s] for s in steps[:3]), sum(losses[s] for s in steps[-3:])
    assert last < first, losses
    state = load_file(str(out / "checkpoint" / "modules.safetensors"))
    assert any(k.startswith("lm.") for k in state) == TRAINS_LM[method]
    lm, _ = load_lm(cfg.backbones.lm)
    frozen = sum(p.numel() for p in lm.parameters())
    counts = result.metrics
    if TRAINS_LM[method]:
        assert counts["frozen_params"] == 0 or is_clipcap(method)
        assert counts["trainable_params"] > frozen
    else:
        assert counts["trainable_params"] < frozen
    assert "test/cider" in result.metrics


def test_each_method_resumes_exactly(trained, tmp_path):
    method, cfg, out, result, _ = trained
    crashed = tmp_path / "run"
    with pytest.raises(Crash):
        run_experiment(cfg, crashed, progress=False, on_metric=_crash_at(5))
    assert not (crashed / RESULT_FILE).exists()
    resumed = run_experiment(cfg, crashed, progress=False)
    weights = "checkpoint/modules.safetensors"
    assert (crashed / weights).read_bytes() == (out / weights).read_bytes()
    assert resumed.metrics["test/cider"] == result.metrics["test/cider"]


def test_each_method_rebuilds_from_its_checkpoint_and_captions_alike(trained):
    method, cfg, out, _, _ = trained
    model, tokenizer, encoder = build_from_checkpoint(out / "checkpoint")
    assert model.method == method
    image = next((Path(cfg.data.image_root) / "test").glob("*.png"))
    visual = encoder(encoder.preprocess(load_image(image))[None])
    settings = DecodeSettings(beam=2, max_new_tokens=6)
    again, _, _ = build_from_checkpoint(out / "checkpoint")
    codec = CaptionCodec(tokenizer)
    assert generate_captions(model, codec, visual, settings) == generate_captions(
        again, codec, visual, settings
    )


def test_the_prefix_is_computed_once_per_image_whatever_the_beam(make_train_config):
    cfg = _config(make_train_config, "clipcap-transformer")
    lm, tokenizer = load_lm(cfg.backbones.lm)
    encoder = load_vision(cfg.backbones.vision, None, include_cls=True)
    model = build_captioner(
        cfg.method,
        lm,
        encoder.width,
        clipcap=cfg.clipcap,
        projection=clip_projection(encoder.visual),
    )
    calls: list[int] = []
    model.mapper.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    visual = torch.randn(3, encoder.num_tokens, encoder.width)
    captions = generate_captions(model, CaptionCodec(tokenizer), visual, DecodeSettings(beam=4))
    assert len(captions) == 3 and calls == [3]  # one mapper call, one row per image
