"""How busy the GPU is during a CUDA step: whether kernels or the host set the pace."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from bench.perf.results import Report, Row


@dataclass(frozen=True)
class Busy:
    """How much of a CUDA step the GPU spends in kernels: low means the host (Python, dispatcher,
    launches) sets the pace, and time ratios follow kernel counts rather than FLOPs."""

    kernel_s: float
    kernels: int
    step_s: float  # median synchronised wall time of the step
    top: tuple[tuple[str, float, int], ...] = ()  # (op, its kernels' seconds, calls), largest first

    @property
    def fraction(self) -> float:
        return self.kernel_s / self.step_s


def kernel_time(fn: Callable[[], object], top: int = 8) -> tuple[float, int, tuple]:
    """Summed CUDA kernel seconds and launches of one call of ``fn`` (torch profiler), and the
    ``top`` operators by the GPU time of the kernels they launched."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    ops = [
        (a.key, a.self_device_time_total / 1e6, a.count)
        for a in prof.key_averages()
        if a.device_type == DeviceType.CPU and a.self_device_time_total > 0
    ]
    ops.sort(key=lambda o: -o[1])
    return sum(e.device_time_total for e in kernels) / 1e6, len(kernels), tuple(ops[:top])


def add_gpu_busy_rows(
    arms: Mapping[str, tuple[str, Callable[[], object], float]], report: Report
) -> None:
    """Informational ``GPU-busy-*`` rows: ``arms`` maps key -> (label, one step, its median s)."""
    for key, (label, fn, step_s) in arms.items():
        what = f"GPU kernel time / wall time of one {label}"
        try:
            kernel_s, n, top = kernel_time(fn)
        except Exception as exc:  # a diagnostic: report, don't lose the table
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            report.rows.append(Row(f"GPU-busy-{key}", what, "n/a", "n/a", reason, "(info)", None))
            continue
        busy = report.busy[key] = Busy(kernel_s, n, step_s, top)
        report.rows.append(
            Row(
                f"GPU-busy-{key}",
                what,
                f"{1e3 * kernel_s:.1f} ms in {n:,} kernels",
                f"{1e3 * step_s:.1f} ms step",
                f"{100 * busy.fraction:.0f} %",
                "(info)",
                None,
            )
        )
