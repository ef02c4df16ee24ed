"""How sweep and search workers start: forked from a server that has already imported a worker's
libraries.

A spawned worker spends about 9 s of CPU importing torch, transformers, open_clip and MLflow before
it trains anything, and N spawned workers do it N times. Python's fork server imports them once
(:data:`PRELOAD`); each worker is then a fork of an idle, single-threaded process, which keeps
spawn's safety (nothing forked from a process that holds threads, CUDA or open stores).

The server lives as long as the process that started it, and keeps the environment it started with.
A worker therefore takes its coordinator's environment at the time it is started
(:func:`environment` there, :func:`adopt` in the worker), as a spawned one would.
"""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.context import BaseContext

#: What a worker imports before its first point (the worker loop, training, the mini backbones).
PRELOAD = ("bench.sweep.worker", "bench.tune.search", "ituning.train", "bench.mini.profile")


def worker_processes() -> BaseContext:
    """The multiprocessing context sweep and search workers start from."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


def environment() -> dict[str, str]:
    """The coordinator's environment now, for a worker to :func:`adopt`."""
    return dict(os.environ)


def adopt(env: dict[str, str]) -> None:
    """Make this worker's environment its coordinator's (the server's may be older)."""
    os.environ.clear()
    os.environ.update(env)
