"""Counted FLOPs of a training step, and the matmul ceiling that model FLOP utilisation divides by.

The counted-FLOP ratio of two steps is the noise-free reference their time ratio is read against.
"""

from __future__ import annotations

import time

import torch

from bench.perf.settings import Mode
from bench.perf.train_step import TrainArm


def step_flops(arm: TrainArm) -> int:
    """Matmul/attention FLOPs of one forward + backward (torch's FlopCounterMode; no optimizer)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        arm.loss().backward()
    arm.optimizer.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def matmul_ceiling(mode: Mode, n: int, reps: int = 5) -> float:
    """Best FLOP/s of an ``n``×``n`` matmul in the step's dtype: the denominator of the MFU.

    On CUDA each timing covers 10 back-to-back matmuls, so that launch latency does not count.
    """
    dtype = torch.bfloat16 if mode.precision == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(mode.torch_device, dtype)
    b = torch.randn(n, n, generator=gen).to(mode.torch_device, dtype)
    iters = 10 if mode.device == "cuda" else 1
    a @ b
    best = float("inf")
    for _ in range(reps):
        mode.sync()
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(iters):
            a @ b
        mode.sync()
        elapsed = time.process_time() - c0 if mode.clock == "process" else time.perf_counter() - w0
        best = min(best, elapsed)
    return 2 * n**3 * iters / best
