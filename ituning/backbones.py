"""The frozen language model: load it (weights + tokenizer) or only its architecture.

A name is resolved the way Hugging Face resolves it: a local folder (``save_pretrained`` layout) or a
Hub id looked up in the HF cache (``HF_HOME``). Nothing here downloads on its own when the machine is
offline (``HF_HUB_OFFLINE=1``); a missing backbone is a one-line :class:`BackboneError` that says how
to fetch it. The GPT-2 and SmolLM2 architectures ship as JSON in ``ituning/configs/`` so that
shapes and parameter counts need no download at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ituning.errors import BackboneError, first_line
from ituning.hub_cache import local_first

#: Hub ids whose architecture ships with the package, with their aliases.
SHIPPED_CONFIGS = {
    "gpt2": "gpt2",
    "gpt2-medium": "gpt2-medium",
    "gpt2-large": "gpt2-large",
    "openai-community/gpt2": "gpt2",
    "openai-community/gpt2-medium": "gpt2-medium",
    "openai-community/gpt2-large": "gpt2-large",
    # Llama-family LMs: I-Tuning is agnostic to the LM (SmolLM2-135M-Instruct: see ituning.gguf_lm)
    "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m-instruct",
    "HuggingFaceTB/SmolLM2-135M": "smollm2-135m",
    "HuggingFaceTB/SmolLM2-360M": "smollm2-360m",
    "HuggingFaceTB/SmolLM2-1.7B": "smollm2-1.7b",
}


#: The same activation function as one fused op. GPT-2's ``gelu_new`` writes the tanh
#: approximation of GELU as five elementwise ops, and autograd keeps each one's output for the
#: backward pass through the frozen LM; ``gelu_pytorch_tanh`` (torch's ``gelu(approximate="tanh")``)
#: is the same formula in one op that keeps only its input: ~0.37 GB less per GPT-2 base training
#: step of 40 captions x 24 tokens (fp32), outputs equal to float rounding.
FUSED_ACTIVATIONS = {"gelu_new": "gelu_pytorch_tanh"}


def with_fused_activation(config: PretrainedConfig) -> PretrainedConfig:
    """``config`` with its activation swapped for the fused equivalent, if it has one."""
    for attr in ("activation_function", "hidden_act"):
        if getattr(config, attr, None) in FUSED_ACTIVATIONS:
            setattr(config, attr, FUSED_ACTIVATIONS[getattr(config, attr)])
    return config


def is_local_name(name_or_path: str) -> bool:
    """A folder, or something spelled like a path (so a typo is not mistaken for a Hub id)."""
    return (
        Path(name_or_path).expanduser().is_dir()
        or name_or_path.startswith((".", "/", "~"))
        or name_or_path.count("/") > 1  # Hub ids are "name" or "org/name"
    )


def _hf_home() -> str:
    return os.environ.get("HF_HOME", "~/.cache/huggingface")


def _offline_error(kind: str, name: str, exc: BaseException) -> BackboneError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    how = "offline" if offline else "from the Hugging Face cache or the Hub"
    return BackboneError(
        f"cannot load {kind} '{name}' {how} ({type(exc).__name__}): not in the Hugging Face "
        f"cache (HF_HOME={_hf_home()}). Fetch it once with `hf download {name}` "
        "(formerly `huggingface-cli download`) on a machine with network, or pass a local folder."
    )


def _check_folder(path: Path, what: str) -> None:
    if not path.is_dir():
        raise BackboneError(f"{what} folder '{path}' does not exist")
    if not (path / "config.json").is_file():
        raise BackboneError(
            f"{what} folder '{path}' has no config.json; save it with model.save_pretrained(folder)"
        )


#: Weight files that are pickles: unpickling one can run any code, so none is ever read.
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def _check_safetensors_only(folder: Path) -> None:
    """Refuse a folder whose weights are pickles before transformers sees it (transformers would
    unpickle them, if only with ``weights_only``)."""
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
    if pickles:
        raise BackboneError(
            f"language model folder '{folder}' holds pickle weights ({pickles[0]}); only "
            "safetensors weights are accepted: convert them once, on a machine you trust, with "
            "AutoModelForCausalLM.from_pretrained(folder).save_pretrained(folder) (writes "
            f"model.safetensors), then delete {pickles[0]}"
        )


def lm_config(name_or_path: str) -> PretrainedConfig:
    """The LM's architecture without weights: shipped JSON (GPT-2, SmolLM2), else config.json."""
    if name_or_path in SHIPPED_CONFIGS:
        ref = resources.files("ituning") / "configs" / f"{SHIPPED_CONFIGS[name_or_path]}.json"
        data = json.loads(ref.read_text())
        data.pop("_comment", None)
        model_type = data.pop("model_type")
        return AutoConfig.for_model(model_type, **data)
    if is_local_name(name_or_path):
        _check_folder(Path(name_or_path).expanduser(), "language model")
        return AutoConfig.from_pretrained(Path(name_or_path).expanduser())
    try:
        return local_first(lambda: AutoConfig.from_pretrained(name_or_path))
    except OSError as exc:
        raise _offline_error("language model config", name_or_path, exc) from None


@contextlib.contextmanager
def _loading_bar(shown: bool) -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if not shown:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not shown:
            hf_logging.enable_progress_bar()


def load_lm(
    name_or_path: str, *, dtype: torch.dtype | None = None, progress: bool = True
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Frozen causal LM (eval mode, ``requires_grad=False``, fused activation) and its tokenizer.
    ``progress=False`` hides transformers' weight-loading bar (quiet sweeps and searches).

    ``dtype`` defaults to fp32 whatever the checkpoint was saved in, so results do not depend on
    how a checkpoint happens to be stored. A tokenizer without a pad token (GPT-2) gets
    ``pad_token = eos_token`` so that batches can be padded; padded positions are masked anyway.
    """
    local = is_local_name(name_or_path)
    src: str | Path = Path(name_or_path).expanduser() if local else name_or_path
    if local:
        _check_folder(Path(src), "language model")
        _check_safetensors_only(Path(src))

    def load() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        config = with_fused_activation(AutoConfig.from_pretrained(src))
        with _loading_bar(progress):
            lm = AutoModelForCausalLM.from_pretrained(
                src, config=config, dtype=dtype or torch.float32, use_safetensors=True
            )
        return lm, AutoTokenizer.from_pretrained(src)

    try:
        lm, tokenizer = load() if local else local_first(load)
    except Exception as exc:  # a folder is user input: malformed JSON, truncated weights, ...
        if local:
            raise BackboneError(
                f"cannot load language model from '{src}' ({type(exc).__name__}: "
                f"{first_line(exc)}); re-save it with save_pretrained(folder)"
            ) from None
        if isinstance(exc, OSError):
            raise _offline_error("language model", name_or_path, exc) from None
        raise
    n_embeddings = lm.get_input_embeddings().num_embeddings
    if len(tokenizer) <= 1:  # transformers builds an empty tokenizer when the files are missing
        raise BackboneError(
            f"language model '{name_or_path}' has no usable tokenizer (vocabulary of "
            f"{len(tokenizer)}); save one next to the weights with tokenizer.save_pretrained(folder)"
        )
    if len(tokenizer) > n_embeddings:
        raise BackboneError(
            f"tokenizer of '{name_or_path}' has {len(tokenizer)} tokens but the LM only "
            f"{n_embeddings} embeddings; save the tokenizer that belongs to this LM"
        )
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    lm.requires_grad_(False)
    lm.eval()
    return lm, tokenizer


def lm_identity(name_or_path: str) -> dict[str, str | None]:
    """How a checkpoint names its LM: the id it was loaded by and, for a folder, a weights digest.

    Hub ids are pinned by name only (the cache holds one snapshot per revision); a local folder's
    ``*.safetensors`` files are hashed so that a retrained mini backbone is not silently reused.
    """
    if not is_local_name(name_or_path):
        return {"name_or_path": name_or_path, "weights_sha256": None}
    folder = Path(name_or_path).expanduser()
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return {"name_or_path": name_or_path, "weights_sha256": None}
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                digest.update(chunk)
    return {"name_or_path": name_or_path, "weights_sha256": digest.hexdigest()}
