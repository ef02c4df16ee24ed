"""Backbone loaders on tiny models saved locally (the same code path as Hub weights) and offline errors."""

from __future__ import annotations

import json

import huggingface_hub
import open_clip
import pytest
import torch
from PIL import Image

from ituning.backbones import lm_config, lm_identity, load_lm
from ituning.errors import BackboneError
from ituning.vision import load_vision, save_clip_folder, vision_from_config


def test_load_lm_from_a_save_pretrained_folder(tiny, tiny_lm_dir):
    lm, tokenizer = load_lm(str(tiny_lm_dir))
    assert not lm.training and not any(p.requires_grad for p in lm.parameters())
    assert next(lm.parameters()).dtype == torch.float32
    assert tokenizer.pad_token is not None
    ids = torch.tensor([tokenizer("w1 w2 w3")["input_ids"]])
    saved = tiny.gpt2()
    for key, value in saved.state_dict().items():
        assert torch.equal(lm.state_dict()[key], value), key
    # the same GELU formula as one fused op (ituning.backbones.FUSED_ACTIVATIONS): equal logits
    # up to float rounding
    assert (saved.config.activation_function, lm.config.activation_function) == (
        "gelu_new",
        "gelu_pytorch_tanh",
    )
    with torch.no_grad():
        torch.testing.assert_close(lm(ids).logits, saved(ids).logits, rtol=0, atol=1e-6)
    lm16, _ = load_lm(str(tiny_lm_dir), dtype=torch.bfloat16)
    assert next(lm16.parameters()).dtype == torch.bfloat16


def test_a_quiet_load_shows_no_weight_bar_and_leaves_the_setting_as_it_was(tiny_lm_dir, capfd):
    from transformers.utils import logging as hf_logging

    load_lm(str(tiny_lm_dir))
    assert "Loading weights" in capfd.readouterr().err
    load_lm(str(tiny_lm_dir), progress=False)
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()


def test_lm_config_ships_gpt2_sizes_and_reads_folders(tiny_lm_dir):
    sizes = {name: lm_config(name) for name in ("gpt2", "gpt2-medium", "gpt2-large")}
    assert [(c.n_embd, c.n_layer, c.n_head) for c in sizes.values()] == [
        (768, 12, 12),
        (1024, 24, 16),
        (1280, 36, 20),
    ]
    assert lm_config("openai-community/gpt2-large").n_embd == 1280
    assert lm_config(str(tiny_lm_dir)).n_embd == 32


def test_lm_folder_errors_are_one_line(tiny, tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        load_lm(str(tmp_path / "missing"))
    with pytest.raises(BackboneError, match="no config.json") as err:
        load_lm(str(tmp_path))
    assert "\n" not in str(err.value)
    tiny.gpt2().save_pretrained(tmp_path)  # weights but no tokenizer files
    with pytest.raises(BackboneError, match="no usable tokenizer"):
        load_lm(str(tmp_path))


def test_lm_identity_digests_local_weights(tiny_lm_dir, tmp_path, tiny):
    ident = lm_identity(str(tiny_lm_dir))
    assert ident["name_or_path"] == str(tiny_lm_dir) and len(ident["weights_sha256"]) == 64
    assert lm_identity(str(tiny_lm_dir)) == ident
    tiny.gpt2(seed=1).save_pretrained(tmp_path)
    assert lm_identity(str(tmp_path))["weights_sha256"] != ident["weights_sha256"]
    assert lm_identity("gpt2") == {"name_or_path": "gpt2", "weights_sha256": None}


def test_vision_from_an_open_clip_folder(tiny, tiny_clip_dir):
    enc = load_vision(tiny_clip_dir)
    assert (enc.width, enc.num_tokens, enc.image_size) == (32, tiny.PATCHES, 32)
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.visual.training
    # same tokens as open_clip's own model built from the same folder
    ref, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tiny_clip_dir}")
    ref.eval().visual.output_tokens = True
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, ref_tokens = ref.visual(pixels)
    tokens = enc(pixels)
    assert tokens.shape == (2, tiny.PATCHES, 32) and tokens.grad_fn is None
    torch.testing.assert_close(tokens, ref_tokens)
    with_cls = load_vision(tiny_clip_dir, include_cls=True)
    assert with_cls.num_tokens == tiny.PATCHES + 1
    both = with_cls(pixels)
    torch.testing.assert_close(both[:, 1:], tokens)
    # the CLS token after ln_post is what CLIP projects into its embedding
    with torch.no_grad():
        torch.testing.assert_close(both[:, 0] @ ref.visual.proj, ref.visual(pixels)[0])
    pixel = enc.preprocess(Image.new("RGB", (50, 40), (200, 30, 30)))
    assert pixel.shape == (3, 32, 32)


def test_vision_identity_names_weights_preprocessing_and_cls(tiny, tiny_clip_dir, tmp_path):
    ident = load_vision(tiny_clip_dir).identity
    assert ident == load_vision(tiny_clip_dir).identity  # stable across loads
    assert "cls=0" in ident and "size=" in ident and "mean=" in ident
    assert load_vision(tiny_clip_dir, include_cls=True).identity != ident
    torch.manual_seed(1)
    save_clip_folder(open_clip.CLIP(**tiny.CLIP_CFG), tiny.CLIP_CFG, tmp_path)
    other = load_vision(tmp_path).identity
    assert other.split("|sha256=")[1][:16] != ident.split("|sha256=")[1][:16]


def test_vision_errors_are_one_line(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        load_vision(tmp_path / "missing")
    with pytest.raises(BackboneError, match="no open_clip_config.json"):
        load_vision(tmp_path)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}}))
    with pytest.raises(BackboneError, match="no weights"):
        load_vision(tmp_path)
    with pytest.raises(BackboneError, match="unknown open_clip model"):
        load_vision("ViT-Q-99")
    with pytest.raises(BackboneError, match="no pretrained tag"):
        load_vision("ViT-B-16", "not-a-tag")


def test_vision_from_config_is_the_bundled_vit_b16_on_meta():
    enc = vision_from_config("ViT-B-16")
    assert (enc.width, enc.num_tokens, enc.image_size) == (768, 196, 224)
    assert next(enc.parameters()).device.type == "meta"
    assert vision_from_config("ViT-B-16", include_cls=True).num_tokens == 197


def test_hub_names_fail_offline_with_one_actionable_line(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and an empty cache, as on a machine that never fetched the weights.

    huggingface_hub reads the variables once at import, so its module constants are set too.
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(BackboneError) as lm_err:
        load_lm("gpt2-medium")
    with pytest.raises(BackboneError) as vis_err:
        load_vision("ViT-B-16", "openai")
    lm_msg, vis_msg = str(lm_err.value), str(vis_err.value)
    assert "\n" not in lm_msg and "\n" not in vis_msg
    assert "'gpt2-medium'" in lm_msg and "offline" in lm_msg
    assert "hf download gpt2-medium" in lm_msg and f"HF_HOME={tmp_path / 'hf'}" in lm_msg
    assert "'ViT-B-16'" in vis_msg and "'openai'" in vis_msg and "offline" in vis_msg
    assert "hf download timm/vit_base_patch16_clip_224.openai" in vis_msg
