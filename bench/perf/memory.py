"""Peak memory of one training step (P1m): measured on the CPU from the profiler's timeline,
on CUDA from the allocator's peak."""

from __future__ import annotations

import gc
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bench.perf.results import format_mib
from bench.perf.settings import Mode
from bench.perf.train_step import TrainArm


@dataclass(frozen=True)
class Memory:
    """Peak bytes of one training step, with what they were at the peak."""

    peak: int
    parts: dict[str, int]
    method: str

    def __str__(self) -> str:
        shown = ", ".join(f"{k} {format_mib(v)}" for k, v in self.parts.items() if v > 0)
        return f"{format_mib(self.peak)} ({shown})"


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(
        v.untyped_storage().nbytes()
        for state in optimizer.state.values()
        for v in state.values()
        if torch.is_tensor(v)
    )


def weight_bytes(model: nn.Module) -> int:
    return sum(p.untyped_storage().nbytes() for p in model.parameters())  # tied weights once


#: Column order of torch's memory timeline export (``[times, sizes]``; column 0 is unused).
TIMELINE_COLUMNS = (
    "weights",
    "optimizer state",
    "inputs",
    "temporaries",
    "activations",
    "gradients",
    "autograd detail",
    "unknown",
)


def profiled_step_memory(arm: TrainArm) -> Memory:
    """Peak of every CPU tensor a step touches, from torch's profiler memory timeline.

    The profiler sees each allocation and free during the step and tensors that existed before
    it (weights, optimizer state, inputs); CPU tensors have no allocator peak statistics and
    tracemalloc does not see torch's allocator, so this is the measured peak.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(
        activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
    ) as prof:
        arm.step()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated for CUDA snapshots only
        path = Path(tmp) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    totals = [sum(row) for row in sizes]
    at = max(range(len(totals)), key=totals.__getitem__)
    parts = dict(zip(TIMELINE_COLUMNS, sizes[at][1:], strict=False))
    return Memory(int(totals[at]), parts, "profiled-peak")


def cuda_step_memory(arm: TrainArm) -> Memory:
    """Weights + optimizer state + the step's ``max_memory_allocated`` above what was there.

    Other arms' models share the device, so the step's own resident state is added explicitly
    instead of being read from the allocator's absolute peak.
    """
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    arm.step()
    torch.cuda.synchronize()
    step = torch.cuda.max_memory_allocated() - before
    weights, optim = weight_bytes(arm.model), optimizer_bytes(arm.optimizer)
    parts = {"weights": weights, "optimizer state": optim, "step peak": step}
    return Memory(weights + optim + step, parts, "cuda-peak")


def step_memory(arm: TrainArm, mode: Mode) -> Memory:
    """Memory of one more step of ``arm`` (after warm-up, so that the optimizer state exists)."""
    gc.collect()
    return cuda_step_memory(arm) if mode.memory == "cuda-peak" else profiled_step_memory(arm)
