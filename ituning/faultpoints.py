"""Named pause points for fault injection (the reliability suite, ``python -m bench.faults``).

A SIGKILL "during checkpoint writing" cannot be timed from outside a run that writes its
checkpoint in milliseconds. So the code marks the moments worth killing at with
``fault_point("state.save")``; when ``ITUNING_PAUSE_AT`` names that point, the process writes the
file ``ITUNING_PAUSE_MARKER`` and sleeps there until it is killed. Without the variable (always,
outside the suite) a fault point is one dictionary lookup and does nothing.

``ITUNING_PAUSE_AT=<point>`` pauses at its first pass, ``<point>@<n>`` at its n-th (from 1).
Points: ``features.shard`` (a shard's .npy written, its index not yet), ``<stage>.step`` (an
optimiser step of ``vlp``/``train`` done, its state not yet saved), ``state.save`` (a training
state written to its temporary name, not yet renamed), ``checkpoint.save`` (module weights in
place, metadata not yet), ``evaluate.split`` (one split's predictions written), and in the
harness ``mlflow.log_result`` (metrics logged, artifacts not yet) and ``sweep.finished`` (MLflow
run FINISHED, optuna trial not yet completed).
"""

from __future__ import annotations

import os
import time

from ituning.files import atomic_write

PAUSE_ENV = "ITUNING_PAUSE_AT"
MARKER_ENV = "ITUNING_PAUSE_MARKER"
MAX_PAUSE_S = 600.0

_passes: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Pause here (until killed) if ``ITUNING_PAUSE_AT`` asks for this pass of ``name``."""
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] != (int(nth) if nth else 1):
        return
    marker = os.environ.get(MARKER_ENV)
    if marker:
        atomic_write(marker, f"{name}@{_passes[name]} {os.getpid()}\n")
    deadline = time.monotonic() + MAX_PAUSE_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
    raise RuntimeError(f"fault point {wanted}: paused {MAX_PAUSE_S:.0f} s and nobody killed us")
