"""Checkpoints hold only module weights (safetensors) + config + backbone identities; exact round
trip; the weights' digest is checked on load. Malformed metadata is fuzzed in test_checkpoint_fuzz."""

from __future__ import annotations

import json
import shutil

import open_clip
import pytest
import torch
from safetensors import safe_open

import ituning.checkpoint
from ituning.backbones import load_lm
from ituning.checkpoint import (
    build_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from ituning.config import ITuningConfig
from ituning.errors import CheckpointError
from ituning.files import sha256_file
from ituning.inject import ITuningModel
from ituning.vision import load_vision, save_clip_folder

CONFIG = ITuningConfig(drop_first=1, scale=2.0, attn_scaling="none", bottleneck=8)


@pytest.fixture
def trained(tiny_lm_dir, tiny_clip_dir, tmp_path):
    """A model on the tiny local backbones with non-trivial module weights, saved to tmp_path."""
    lm, _ = load_lm(str(tiny_lm_dir))
    vision = load_vision(tiny_clip_dir)
    model = ITuningModel(lm, vision.width, CONFIG)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.normal_(0, 0.3)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(model, ckpt, lm_id=str(tiny_lm_dir), vision_id=vision.spec())
    return model, vision, ckpt


def _outputs(model, vision):
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(3, 64, (4, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        visual = vision(pixels)
        logits = model(input_ids=ids, visual=visual).logits
    return logits, model.generate(visual, max_new_tokens=4, num_beams=2, do_sample=False)


def test_checkpoint_holds_only_module_weights(trained):
    model, _, ckpt = trained
    assert sorted(p.name for p in ckpt.iterdir()) == ["ituning.json", "modules.safetensors"]
    with safe_open(str(ckpt / "modules.safetensors"), "pt") as fh:
        keys = set(fh.keys())
    assert keys == set(model.module_state_dict()) and all(k.startswith("itune.") for k in keys)
    n = sum(p.numel() for p in model.trainable_parameters())
    size = (ckpt / "modules.safetensors").stat().st_size
    assert 4 * n <= size < 4 * n + 4096  # fp32 weights + a small header, no backbone
    meta = json.loads((ckpt / "ituning.json").read_text())
    assert meta["config"] == CONFIG.model_dump(mode="json")
    assert meta["lm"]["weights_sha256"] and meta["vision"]["identity"]
    assert meta["kept_layers"] == [1, 2, 3] and meta["d_vis"] == 32
    assert meta["modules_sha256"] == sha256_file(ckpt / "modules.safetensors")


def test_save_load_round_trip_reproduces_outputs_exactly(trained):
    model, vision, ckpt = trained
    expected_logits, expected_ids = _outputs(model, vision)
    config, meta, state = load_checkpoint(ckpt)
    assert config == CONFIG
    for key, value in model.module_state_dict().items():
        assert torch.equal(state[key], value)
    rebuilt, tokenizer, vision2 = build_from_checkpoint(ckpt)
    assert tokenizer.pad_token is not None and vision2.identity == vision.identity
    logits, ids = _outputs(rebuilt, vision2)
    assert torch.equal(logits, expected_logits)
    assert torch.equal(ids, expected_ids)


def test_unusable_checkpoints_raise_one_line(trained, tmp_path):
    _, _, ckpt = trained
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no ituning.json; was it saved"):
        load_checkpoint(tmp_path / "empty")
    data = (ckpt / "modules.safetensors").read_bytes()
    (ckpt / "modules.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as err:
        load_checkpoint(ckpt)
    assert "\n" not in str(err.value)
    (ckpt / "modules.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no modules.safetensors"):
        load_checkpoint(ckpt)


def test_changed_backbones_are_refused(trained, tiny, tiny_lm_dir, tmp_path):
    model, vision, ckpt = trained
    other_clip = tmp_path / "clip"
    torch.manual_seed(7)
    save_clip_folder(open_clip.CLIP(**tiny.CLIP_CFG), tiny.CLIP_CFG, other_clip)
    spec = {**vision.spec(), "name": str(other_clip)}  # recorded identity: the original weights
    save_checkpoint(model, ckpt, lm_id=str(tiny_lm_dir), vision_id=spec)
    with pytest.raises(CheckpointError, match="expects vision encoder"):
        build_from_checkpoint(ckpt)
    lm_copy = tmp_path / "lm"
    shutil.copytree(tiny_lm_dir, lm_copy)
    save_checkpoint(model, ckpt, lm_id=str(lm_copy), vision_id=vision.spec())
    tiny.gpt2(seed=5).save_pretrained(lm_copy)  # the backbone is retrained after the fact
    with pytest.raises(CheckpointError, match="other weights of LM"):
        build_from_checkpoint(ckpt)


def test_weights_of_another_shape_are_refused(trained, tiny):
    _, _, ckpt = trained
    _, _, state = load_checkpoint(ckpt)
    other = ITuningModel(tiny.gpt2(), 32, ITuningConfig(drop_first=0, bottleneck=8))
    with pytest.raises(CheckpointError, match="do not fit"):
        other.load_module_state_dict(state)
    wider = ITuningModel(tiny.gpt2(), 32, ITuningConfig(drop_first=1, bottleneck=4))
    with pytest.raises(CheckpointError, match="wrong shapes"):
        wider.load_module_state_dict(state)


def _flip_middle_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_weight_byte_is_refused_not_captioned(trained):
    """One flipped bit in a tensor still parses as safetensors: only the recorded digest tells."""
    _, _, ckpt = trained
    _flip_middle_byte(ckpt / "modules.safetensors")
    for check in (verify_checkpoint, load_checkpoint, build_from_checkpoint):
        with pytest.raises(CheckpointError) as err:
            check(ckpt)
        assert str(err.value) == (
            f"{ckpt / 'modules.safetensors'}: the module weights do not match the sha256 recorded "
            "in ituning.json at save (corrupt or replaced); restore the checkpoint folder from a "
            "copy or retrain the run"
        )


def test_a_checkpoint_of_older_code_without_a_digest_still_loads(trained):
    model, _, ckpt = trained
    meta = json.loads((ckpt / "ituning.json").read_text())
    del meta["modules_sha256"]
    (ckpt / "ituning.json").write_text(json.dumps(meta))
    verify_checkpoint(ckpt)
    _, loaded, state = load_checkpoint(ckpt)
    assert loaded.modules_sha256 is None
    assert all(torch.equal(state[k], v) for k, v in model.module_state_dict().items())


def test_verify_checkpoint_loads_no_tensor_and_no_backbone(trained, monkeypatch):
    _, _, ckpt = trained

    def forbidden(*args, **kwargs):
        raise AssertionError("verify_checkpoint must stay cheap")

    for name in ("load_file", "load_lm", "load_vision"):
        monkeypatch.setattr(ituning.checkpoint, name, forbidden)
    verify_checkpoint(ckpt)


def test_a_save_killed_between_weights_and_metadata_reads_as_not_saved(trained, monkeypatch):
    """Re-saving removes the old metadata first: new weights never sit beside an old digest."""
    model, vision, ckpt = trained

    def killed(name):
        raise KeyboardInterrupt(name)

    monkeypatch.setattr(ituning.checkpoint, "fault_point", killed)
    with pytest.raises(KeyboardInterrupt, match="checkpoint.save"):
        save_checkpoint(model, ckpt, lm_id="elsewhere", vision_id=vision.spec())
    with pytest.raises(CheckpointError, match="no ituning.json; was it saved"):
        verify_checkpoint(ckpt)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("d_vis", 33, "records d_vis=33, but its vision encoder"),
        ("config", {**CONFIG.model_dump(), "bottleneck": 16}, "k_down shapes"),
    ],
)
def test_metadata_that_disagrees_with_the_weights_is_refused_before_building(
    trained, key, value, message
):
    """A damaged width is named as such, before modules of the size it says are allocated."""
    _, _, ckpt = trained
    meta = json.loads((ckpt / "ituning.json").read_text())
    meta[key] = value
    (ckpt / "ituning.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=message) as err:
        build_from_checkpoint(ckpt)
    assert "\n" not in str(err.value)
