"""Tiny real backbones, built from configurations with fixed seeds, for any test to reuse.

* ``tiny_gpt2`` / ``tiny_llama``: random causal LMs (hidden 32) in eval mode.
* ``tiny_tokenizer``: a word-level fast tokenizer ("w0".."w59" + specials) matching their vocab.
* ``tiny_lm_dir`` / ``tiny_clip_dir``: the same kind of backbones saved in the on-disk layouts the
  loaders read (``save_pretrained``; open_clip's hub layout), built once per session.
* ``tiny_vision``: the frozen :class:`~ituning.vision.VisionEncoder` loaded from ``tiny_clip_dir``.
* ``make_visual(b_img, n=..., seed=...)``: random visual tokens of the tiny encoder's width.
* ``tiny``: the builders and sizes themselves (``tiny.gpt2(n_layer=4)``, ``tiny.llama()``,
  ``tiny.tokenizer()``, ``tiny.VIS_WIDTH``, ``tiny.VOCAB``), for tests that need several fresh models.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import open_clip
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from ituning.vision import VisionEncoder, load_vision, save_clip_folder

TINY_VOCAB = 64
TINY_VIS_WIDTH = 32
TINY_PATCHES = 16  # 32 px images, 8 px patches
BOS, EOS, PAD = 0, 1, 2

TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {
        "image_size": 32,
        "layers": 2,
        "width": TINY_VIS_WIDTH,
        "patch_size": 8,
        "head_width": 16,
    },
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
}


def build_tiny_gpt2(n_layer: int = 4, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=TINY_VOCAB,
        n_positions=64,
        n_embd=32,
        n_layer=n_layer,
        n_head=2,
        bos_token_id=BOS,
        eos_token_id=EOS,
        resid_pdrop=0.5,  # high dropout: tests can tell whether the frozen LM stays in eval mode
        embd_pdrop=0.5,
        attn_pdrop=0.5,
    )
    return GPT2LMHeadModel(cfg).eval()


def build_tiny_llama(n_layer: int = 3, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=n_layer,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    return LlamaForCausalLM(cfg).eval()


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    words = ["<bos>", "<eos>", "<pad>", "<unk>"] + [f"w{i}" for i in range(TINY_VOCAB - 4)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


@pytest.fixture
def tiny() -> SimpleNamespace:
    return SimpleNamespace(
        gpt2=build_tiny_gpt2,
        llama=build_tiny_llama,
        tokenizer=build_tiny_tokenizer,
        VIS_WIDTH=TINY_VIS_WIDTH,
        PATCHES=TINY_PATCHES,
        VOCAB=TINY_VOCAB,
        CLIP_CFG=TINY_CLIP_CFG,
    )


@pytest.fixture
def tiny_gpt2() -> GPT2LMHeadModel:
    return build_tiny_gpt2()


@pytest.fixture
def tiny_llama() -> LlamaForCausalLM:
    return build_tiny_llama()


@pytest.fixture
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny_lm")
    build_tiny_gpt2().save_pretrained(out)
    build_tiny_tokenizer().save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP_CFG)
    return save_clip_folder(model, TINY_CLIP_CFG, tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture
def tiny_vision(tiny_clip_dir: Path) -> VisionEncoder:
    return load_vision(tiny_clip_dir)


@pytest.fixture
def make_visual() -> Callable[..., torch.Tensor]:
    def make(b_img: int, n: int = TINY_PATCHES, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(b_img, n, TINY_VIS_WIDTH, generator=gen)

    return make
