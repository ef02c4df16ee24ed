"""Hub weights from the local cache first: no request, no retry, when the files are there.

Without a network, transformers and open_clip retry every Hub request with back-off (minutes per
load: 120 s and counting for a two-layer GPT-2 already in the cache, measured here), unless
``HF_HUB_OFFLINE=1`` is set. Every Hub load of this library therefore runs once with the Hub
switched off, which reads the cache only and fails at once if a file is missing; only then, and
only if the user has not switched the Hub off, does it try the network.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


def user_offline() -> bool:
    """The user asked for no network (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Every Hub request fails at once (huggingface_hub then answers from its cache)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def local_first(load: Callable[[], T]) -> T:
    """``load()`` from the cache alone; if that fails, once more with the network, unless the
    user switched it off (then the cache-only failure is the answer)."""
    try:
        with hub_offline():
            return load()
    except Exception:
        if user_offline():
            raise
    return load()
