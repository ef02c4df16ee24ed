"""The ``mini`` profile's Llama-family LMs: the GPT-2 minis' twins in another architecture.

Same depth, width, heads, word-level tokenizer, corpus, steps, batch, learning rate, schedule,
seed and context as the GPT-2 minis, in ``transformers.LlamaForCausalLM`` (RMSNorm, rotary
positions, SwiGLU FFN, no biases, no dropout, tied embeddings as GPT-2), so that an LM-family
comparison changes the architecture only. SwiGLU's three matrices are ~8d/3 wide (GPT-2's 4d FFN
costs the same 8d^2), nudged to the multiple of 8 that best matches each GPT-2 twin's parameter
count: at these widths GPT-2's biases, LayerNorms and position table are 1-2 % of it.
I-Tuning injects into them through the same code path (``ituning.targets`` knows Llama's
``model.layers[i].mlp``).

``python -m bench.mini.llama --out DIR [--seed 0] [--quick]`` writes, once::

    DIR/<name>-<hash>/llama-base/     LlamaForCausalLM + the minis' tokenizer (save_pretrained)
    DIR/<name>-<hash>/llama-medium/
    DIR/<name>-<hash>/llama-large/
    DIR/<name>-<hash>/manifest.json   config, seed, file hashes, perplexities, gate, timings

The set is built once, as the GPT-2 set is (``bench.mini.backbones.build_once``); the GPT-2 set's
folder and hash are not affected.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import LlamaConfig, LlamaForCausalLM

from bench.mini.backbones import (
    BuiltLMs,
    MiniBackbonesConfig,
    build_once,
    folder_hashes,
    lm_size_gate,
    pretrain_lms,
)
from bench.mini.gates import cell_probe_lines, named_row_gates
from bench.mini.lm import LMSpec, LMTrainConfig, vocabulary_settings
from ituning.data.shapes_scene import WorldConfig
from ituning.errors import cli_main
from ituning.files import canonical_json, sha256_text

#: Bump when the training code changes what a configuration produces (it enters the hash).
FORMAT_VERSION = 1
#: SwiGLU widths are multiples of this (as Llama rounds to 256, in miniature). ceil(8d/3) to a
#: multiple of 16 left mini-base's twin 2.3 % smaller than it (256 wide; 264 here).
FFN_MULTIPLE = 8


def param_count(spec: LMSpec, train: LMTrainConfig) -> int:
    """Parameters of ``spec``'s model (tied weights once), built on the meta device: no memory,
    no weights (``train_lm`` reseeds before it builds the real one)."""
    with torch.device("meta"):
        model = spec.new_model(train)
    return sum(p.numel() for p in model.parameters())


class LlamaSpec(LMSpec):
    """One Llama LM size; its own fields enter only the Llama set's hash (``LMSpec`` is
    unchanged, so the GPT-2 set's folder is still found)."""

    family: Literal["llama"] = "llama"
    intermediate_size: int = Field(ge=8)

    def new_model(self, train: LMTrainConfig) -> LlamaForCausalLM:
        return LlamaForCausalLM(llama_config(self, train))


def llama_config(spec: LlamaSpec, train: LMTrainConfig) -> LlamaConfig:
    """Multi-head attention (as GPT-2: no grouped K/V), no dropout, tied embeddings, the minis'
    special tokens; RMSNorm's epsilon is GPT-2's LayerNorm epsilon."""
    return LlamaConfig(
        **vocabulary_settings(),
        hidden_size=spec.n_embd,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.n_layer,
        num_attention_heads=spec.n_head,
        num_key_value_heads=spec.n_head,
        max_position_embeddings=train.n_positions,
        rms_norm_eps=1e-5,
        attention_dropout=0.0,
        tie_word_embeddings=True,
    )


def llama_twin(spec: LMSpec, train: LMTrainConfig) -> LlamaSpec:
    """The Llama LM of a GPT-2 mini's size (``mini-base`` -> ``llama-base``) whose SwiGLU width
    is the multiple of :data:`FFN_MULTIPLE` nearest to an equal parameter count."""
    shape = {"n_layer": spec.n_layer, "n_embd": spec.n_embd, "n_head": spec.n_head}
    name = f"llama-{spec.name.removeprefix('mini-')}"
    probe = LlamaSpec(name=name, **shape, intermediate_size=FFN_MULTIPLE)
    per_unit = 3 * spec.n_embd * spec.n_layer  # gate, up and down projections of every layer
    exact = FFN_MULTIPLE + (param_count(spec, train) - param_count(probe, train)) / per_unit
    width = max(1, round(exact / FFN_MULTIPLE)) * FFN_MULTIPLE
    return LlamaSpec(name=name, **shape, intermediate_size=width)


class MiniLlamaConfig(BaseModel):
    """Everything that determines the Llama minis (besides the seed); build it with
    :meth:`twin_of` so sizes and budget follow the GPT-2 set's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    lms: tuple[LlamaSpec, ...]
    lm_train: LMTrainConfig
    world: WorldConfig

    @classmethod
    def twin_of(cls, gpt2: MiniBackbonesConfig) -> MiniLlamaConfig:
        return cls(
            name=f"{gpt2.name}-llama",
            lms=tuple(llama_twin(s, gpt2.lm_train) for s in gpt2.lms),
            lm_train=gpt2.lm_train,
            world=gpt2.world,
        )

    @classmethod
    def default(cls) -> MiniLlamaConfig:
        return cls.twin_of(MiniBackbonesConfig())

    @classmethod
    def quick(cls) -> MiniLlamaConfig:
        """Seconds, for tests and smoke runs (the quick GPT-2 set's sizes and steps)."""
        return cls.twin_of(MiniBackbonesConfig.quick())

    def digest(self, seed: int) -> str:
        payload = {
            "family": "llama",
            "format": FORMAT_VERSION,
            "seed": seed,
            "config": self.model_dump(mode="json"),
        }
        return sha256_text(canonical_json(payload))


def llama_dir(out: Path | str, config: MiniLlamaConfig, seed: int) -> Path:
    """The folder a configuration builds into: ``<out>/<name>-<first 10 hex of its hash>``."""
    return Path(out) / f"{config.name}-{config.digest(seed)[:10]}"


def build_llama_lms(
    out: Path | str,
    seed: int = 0,
    *,
    quick: bool = False,
    config: MiniLlamaConfig | None = None,
    progress: bool = True,
) -> BuiltLMs:
    """Build (or reuse) the Llama minis; ``config`` overrides ``quick``.

    Built once, as the GPT-2 set is (``build_once``: under the folder's lock, the manifest
    written last). Training is single-threaded (as the GPT-2 set), so weights do not depend on the
    core count.
    """
    config = config or (MiniLlamaConfig.quick() if quick else MiniLlamaConfig.default())
    root = llama_dir(out, config, seed)
    manifest, cached = build_once(root, lambda r: _build(r, config, seed, progress))
    return BuiltLMs(root, manifest, cached=cached)


def _build(root: Path, config: MiniLlamaConfig, seed: int, progress: bool) -> dict:
    t_start = time.perf_counter()
    report = pretrain_lms(root, config.lms, config.lm_train, config.world, seed, progress)
    corpus_seconds = report.pop("_corpus_seconds")
    names = [s.name for s in config.lms]
    gate = lm_size_gate(report, names)
    cells = named_row_gates({n: report[n]["named_cell_probe"] for n in names})
    return {
        "name": config.name,
        "family": "llama",
        "format": FORMAT_VERSION,
        "seed": seed,
        "config_sha256": config.digest(seed),
        "config": config.model_dump(mode="json"),
        "lms": names,
        "lm_report": report,
        "gates": {
            "lm_perplexity": {n: report[n]["heldout_perplexity"] for n in names},
            "lm_perplexity_flickr": {n: report[n]["heldout_perplexity_flickr"] for n in names},
            "lm_larger_is_better": gate,
            "lm_named_colour_probe": {n: report[n]["named_colour_probe"] for n in names},
            **cells,
            "passed": bool(gate and all(cells["lm_named_row_pass"].values())),
        },
        "timings_seconds": {
            "lm_corpus": corpus_seconds,
            **{n: report[n]["train_seconds"] for n in names},
            "total": round(time.perf_counter() - t_start, 1),
        },
        "environment": {
            "torch": torch.__version__,
            "threads_per_job": 1,
            "python": platform.python_version(),
        },
        "files": folder_hashes(root),
    }


def format_report(manifest: dict) -> str:
    g = manifest["gates"]
    lines = [f"mini Llama LMs {manifest['name']} (seed {manifest['seed']}):"]
    for name, ppl in g["lm_perplexity"].items():
        params = manifest["lm_report"][name]["params"]
        lines.append(
            f"  {name:13s} {params:>10,d} params; held-out perplexity: Shapes {ppl:.3f}, "
            f"Shapes-Flickr {g['lm_perplexity_flickr'][name]:.3f}"
        )
    verdict = "ok" if g["lm_larger_is_better"] else "FAIL"
    lines.append(f"  larger LM -> lower perplexity on both: {verdict}")
    lines += cell_probe_lines(g)
    lines.append(f"  total {manifest['timings_seconds']['total']} s")
    return "\n".join(lines)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.mini.llama",
        description="Pre-train (once) the mini profile's Llama-family LMs.",
    )
    p.add_argument("--out", required=True, type=Path, help="cache folder for backbone sets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny models, seconds (tests, smoke runs)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a gate fails")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    built = build_llama_lms(args.out, args.seed, quick=args.quick, progress=not args.quiet)
    print(f"{'cached' if built.cached else 'built'}: {built.root}")
    print(format_report(built.manifest))
    return 1 if args.strict and not built.manifest["gates"]["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
