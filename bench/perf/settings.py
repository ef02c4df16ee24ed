"""How a run measures: the device's code paths (:class:`Mode`) and the shapes (:class:`Sizes`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from transformers import GPT2Config, PretrainedConfig

from ituning.backbones import lm_config
from ituning.errors import ConfigError


@dataclass(frozen=True)
class Mode:
    """The device-dependent code paths, chosen in one place (:func:`select_mode`)."""

    device: str
    precision: Literal["fp32", "bf16"]  # autocast dtype of every step (trainer.autocast_for)
    clock: Literal["process", "wall"]  # what the ratios are computed from
    memory: Literal["profiled-peak", "cuda-peak"]  # how P1m measures memory
    mfu: bool  # add model FLOP utilisation rows
    threads: int | None  # torch intra-op threads set explicitly (None: left as is)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()


def select_mode(device: str, *, threads: int | None = None, mfu: bool = False) -> Mode:
    """CPU: fp32, process CPU time, profiled memory, 1 thread. CUDA: bf16, wall time, MFU.

    One intra-op thread is the CPU default because these machines share 2 cores with other jobs:
    an OpenMP pool of 2 then waits at every barrier for a descheduled thread (``tanh`` of 123k
    floats took 16 ms with 2 threads against 0.75 ms with 1 under load), which inflates
    elementwise-heavy work far more than matmuls and so biases ratios. For the same reason CPU
    ratios use the process's CPU time (time the scheduler gave other jobs is not the step's
    cost); wall-time ratios are reported next to them.
    """
    if device == "cuda":
        return Mode("cuda", "bf16", "wall", "cuda-peak", True, threads)
    if device == "cpu":
        threads = 1 if threads is None else threads
        return Mode("cpu", "fp32", "process", "profiled-peak", mfu, threads)
    raise ConfigError(f"--device {device!r}: choose cpu or cuda")


@dataclass(frozen=True)
class Sizes:
    """What is measured: architectures, batch shapes and repetitions (full or ``--quick``)."""

    lm: str | PretrainedConfig = "gpt2"
    vision: str | dict[str, Any] = "ViT-B-16"  # open_clip name, or a CLIP config dict (quick)
    images: int = 8
    captions: int = 5
    tokens: int = 24
    drop_first: int | None = None  # None: half of the layers (6 of GPT-2 base's 12)
    warmup: int = 1
    reps: int = 5
    decode_images: int = 8
    beam: int = 5
    new_tokens: int = 20
    decode_reps: int = 3
    score_captions: int = 5000
    matmul_n: int | None = None  # square matmul of the MFU ceiling; None: 8192 CUDA, 2048 CPU

    def ceiling_n(self, mode: Mode) -> int:
        if self.matmul_n is not None:
            return self.matmul_n
        return 8192 if mode.device == "cuda" else 2048

    def lm_architecture(self) -> PretrainedConfig:
        return lm_config(self.lm) if isinstance(self.lm, str) else self.lm

    def for_mode(self, mode: Mode) -> Sizes:
        """On CUDA a step takes milliseconds: 3 warm-ups (cuBLAS heuristics, allocator pools) and
        20 repetitions (10 for decoding) cost seconds and tighten medians of launch-bound steps."""
        if mode.device != "cuda":
            return self
        return replace(
            self,
            warmup=max(self.warmup, 3),
            reps=max(self.reps, 20),
            decode_reps=max(self.decode_reps, 10),
        )


#: open_clip ``CLIP(**config)`` arguments of a 2-layer ViT on 32-pixel images (``--quick``).
TINY_VISION = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


def quick_sizes() -> Sizes:
    """Tiny architectures, same code paths: a smoke run that emits every row in seconds."""
    lm = GPT2Config(
        vocab_size=512,
        n_positions=64,
        n_embd=64,
        n_layer=4,
        n_head=4,
        bos_token_id=0,
        eos_token_id=1,
    )
    return Sizes(
        lm=lm,
        vision=TINY_VISION,
        images=4,
        tokens=12,
        reps=2,
        decode_images=4,
        new_tokens=6,
        decode_reps=2,
        score_captions=200,
        matmul_n=256,
    )
