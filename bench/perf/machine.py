"""The machine a run measured on, for the report's "Machine" section."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch

from bench.perf.settings import Mode


def load_average() -> str | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none): other jobs' load."""
    with contextlib.suppress(OSError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    return None


def machine_info(mode: Mode) -> dict[str, str]:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "torch threads": (
            f"{torch.get_num_threads()} (set explicitly)"
            if mode.threads is not None
            else str(torch.get_num_threads())
        ),
    }
    load = load_average()
    if load is not None:
        info["load average at start"] = load
    if mode.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
