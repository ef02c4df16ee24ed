"""How sweep and search workers start: forked from a server that has already imported a worker's
libraries.

A spawned worker spends about 9 s of CPU importing torch, transformers, open_clip and MLflow before
it trains anything, and N spawned workers do it N times. Python's fork server imports them once
(:data:`PRELOAD`); each worker is then a fork of an idle, single-threaded process, which keeps
spawn's safety (nothing forked from a process that holds threads, CUDA or open stores).

The server lives as long as the process that started it, and keeps the environment, stdout and
stderr it started with. A worker therefore takes its coordinator's as they are when the worker
starts (:class:`Inherited`), as a spawned one would: a later sweep in the same process, with
another environment or its output redirected, gets what it expects.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from multiprocessing.context import BaseContext
from typing import Any

#: What a worker imports before its first point (the worker loop, training, the mini backbones).
PRELOAD = ("bench.sweep.worker", "bench.tune.search", "ituning.train", "bench.mini.profile")


def worker_processes() -> BaseContext:
    """The multiprocessing context sweep and search workers start from."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


class Inherited:
    """The coordinator's environment and its stdout and stderr, for a worker to :meth:`adopt`.

    Made in the coordinator; the descriptors are duplicated into the worker by multiprocessing as
    the worker starts (they are pickled then), so pass it in a worker's arguments."""

    def __init__(self, environ: dict[str, str] | None = None, fds: tuple[Any, Any] | None = None):
        self.environ = dict(os.environ) if environ is None else environ
        self.fds = fds

    def __reduce__(self):
        from multiprocessing.reduction import DupFd

        return (Inherited, (self.environ, (DupFd(1), DupFd(2))))

    def adopt(self) -> None:
        """In the worker: the coordinator's environment, and its stdout and stderr on fds 1, 2."""
        os.environ.clear()
        os.environ.update(self.environ)
        if self.fds is None:  # not handed over by a process start
            return
        for target, stream, dup in zip((1, 2), (sys.stdout, sys.stderr), self.fds, strict=True):
            stream.flush()
            fd = dup.detach()
            os.dup2(fd, target)
            os.close(fd)
