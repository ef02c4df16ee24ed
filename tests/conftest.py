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

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


# -- a tiny Shapes world and a run configuration for it (training, decoding, CLI tests) ----------
#
# * ``tiny_world``: a Shapes world of 32 px images (24 train / 4 val / 8 test images, 3 NoCaps images
#   per domain, 8 VLP images), written once per session.
# * ``tiny_shapes_lm_dir``: a random 2-layer GPT-2 (width 32) with the Shapes word-level tokenizer.
# * ``make_train_config(**overrides)``: a valid TrainConfig on those, evaluation off unless asked for
#   (no Java start-up); dotted keys override (``make_train_config(**{"optim.lr": 1e-2})``).
# * ``tiny_finished_run``: the folder of one complete run with the full evaluation (test split,
#   NoCaps domains, blank-image control, grounding), done once per session.
# * ``torch_threads(n)`` / ``one_thread``: run tiny models on one intra-op thread.


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block on ``n`` intra-op threads. Tiny models gain nothing from more, and on a busy
    2-core machine spinning OpenMP workers make them several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a whole test module (use it from an autouse module fixture)."""
    with torch_threads(1):
        yield


TINY_WORLD_SIZES = {
    "train": 24,
    "val": 4,
    "test": 8,
    "nocaps_per_domain": 3,
    "vlp_images": 8,
    "lm_sentences": 10,
    "flickr_train": 6,
    "flickr_val": 2,
    "flickr_test": 2,
}


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ituning.data.shapes import SplitSizes, write_world
    from ituning.data.shapes_scene import WorldConfig

    out = tmp_path_factory.mktemp("tiny_world")
    write_world(out, 0, WorldConfig(image_size=32), SplitSizes(**TINY_WORLD_SIZES), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_shapes_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.mini.lm import hf_tokenizer

    tok = hf_tokenizer()
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=0.3,  # spread-out logits: captions differ by image, modules have a lever
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    out = tmp_path_factory.mktemp("tiny_shapes_lm")
    GPT2LMHeadModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def tiny_train_config_dict(world: Path, lm_dir: Path, clip_dir: Path, features: Path) -> dict:
    """The raw (unvalidated) configuration of a tiny run; evaluation is off."""
    return {
        "backbones": {"lm": str(lm_dir), "vision": str(clip_dir), "vision_pretrained": None},
        "data": {
            "captions": str(world / "dataset_shapes.json"),
            "image_root": str(world),
            "nocaps": str(world / "nocaps_shapes_val.json"),
            "vlp_regions": str(world / "visual_genome" / "region_descriptions.json"),
            "vlp_image_data": str(world / "visual_genome" / "image_data.json"),
            "vlp_image_root": str(world / "visual_genome"),
        },
        "itune": {"attn_scaling": "none"},
        "epochs": 2,
        "batch_captions": 30,  # 6 images a step: 4 steps an epoch on 24 training images
        "micro_batch_images": 4,
        "captions_per_image": 5,
        "max_caption_tokens": 24,
        "feature_cache": str(features),
        "checkpoint_every": 3,
        "optim": {"lr": 1e-3},
        "device": "cpu",
        "eval": {"splits": [], "nocaps": False, "beam": 2, "max_new_tokens": 8},
    }


@pytest.fixture(scope="session")
def make_train_config(
    tiny_world: Path,
    tiny_shapes_lm_dir: Path,
    tiny_clip_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., object]:
    from ituning.run_config import validate_train_config

    features = tmp_path_factory.mktemp("tiny_features")

    def make(**overrides):
        raw = tiny_train_config_dict(tiny_world, tiny_shapes_lm_dir, tiny_clip_dir, features)
        for dotted, value in overrides.items():
            node = raw
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        return validate_train_config(raw)

    return make


@pytest.fixture(scope="session")
def tiny_finished_run(make_train_config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ituning.train import run_experiment

    cfg = make_train_config(
        **{
            "epochs": 3,
            "optim.lr": 3e-3,
            "eval": {
                "splits": ["test"],
                "nocaps": True,
                "beam": 2,
                "max_new_tokens": 8,
                "blank_control": True,
                "grounding": True,
            },
        }
    )
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    with torch_threads(1):
        run_experiment(cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny mini backbones and Shapes world, built once for the end-to-end sweep tests."""
    from bench.sweep.profiles import get_profile

    path = tmp_path_factory.mktemp("sweep") / "runs"
    get_profile("mini", runs_dir=path, scale="tiny").prepare(progress=False)
    return path


def link_tiny_assets(runs: Path, assets: Path) -> Path:
    """``runs`` (created) sharing the tiny assets' backbones and world by symlinks."""
    runs.mkdir(parents=True, exist_ok=True)
    for shared in ("backbones", "data"):
        (runs / shared).symlink_to(assets / shared, target_is_directory=True)
    return runs


@pytest.fixture
def runs_dir(tiny_assets: Path, tmp_path: Path) -> Path:
    """A runs folder of its own (stores, run folders) over the shared tiny assets: one MLflow
    experiment holds every run of a profile, so tests must not share stores."""
    return link_tiny_assets(tmp_path / "runs", tiny_assets)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each test process gets its share of the cores for torch's intra-op
    threads: N processes with a thread per core each would oversubscribe the machine N-fold."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True, scope="session")
def _private_user_cache(tmp_path_factory: pytest.TempPathFactory):
    """The preflight remembers decoded images in the user's cache folder: tests use their own."""
    patch = pytest.MonkeyPatch()
    patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    yield
    patch.undo()
