"""From image files to patch tokens: threaded loading and the frozen encoder's forward pass.

Shared by :meth:`~ituning.data.features.FeatureCache.extract` and
:class:`~ituning.data.features.LiveFeatures`, so cached and live tokens come out of the same code.

Why threads: decoding (PIL) and resizing mostly release the GIL, and without overlap the encoder
waits on the disk for every batch. Why the loader returns errors rather than raising them: the
caller decides whether an unreadable image stops extraction or is skipped (``skip_bad_images``),
and it needs to know which image it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import torch

from ituning.data.images import load_image
from ituning.errors import BackboneError, DataError


class Encoder(Protocol):
    """What the cache needs from ``ituning.vision.VisionEncoder``."""

    identity: str

    def preprocess(self, image: Any) -> torch.Tensor: ...

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor: ...


def check_encoder(encoder: Any) -> str:
    """The encoder's identity string (the cache key), after checking it has what we call."""
    identity = getattr(encoder, "identity", None)
    if not isinstance(identity, str) or not identity:
        raise BackboneError(
            f"{type(encoder).__name__} has no 'identity' string; the feature cache keys entries by it"
        )
    if not callable(getattr(encoder, "preprocess", None)):
        raise BackboneError(f"{type(encoder).__name__} has no 'preprocess' callable")
    return identity


def _encoder_device_dtype(encoder: Any) -> tuple[torch.device, torch.dtype]:
    params = list(encoder.parameters()) if hasattr(encoder, "parameters") else []
    floating = [p for p in params if p.is_floating_point()]
    p = floating[0] if floating else None
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def encode_pixels(encoder: Any, pixels: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Encoder forward on a stacked batch, returned on the CPU in the storage dtype."""
    device, pdtype = _encoder_device_dtype(encoder)
    with torch.no_grad():
        out = encoder(torch.stack(pixels).to(device=device, dtype=pdtype))
    if out.dim() != 3:
        raise BackboneError(f"vision encoder returned shape {tuple(out.shape)}; expected (B, N, D)")
    return out.detach().to("cpu", dtype)


class ImageLoader:
    """Decode + preprocess images on a few threads, a batch ahead of the encoder."""

    def __init__(self, encoder: Any, num_workers: int | None) -> None:
        self.preprocess = encoder.preprocess
        self.workers = num_workers if num_workers is not None else min(8, os.cpu_count() or 1)

    def _one(self, path: Path) -> torch.Tensor | DataError:
        try:
            return self.preprocess(load_image(path))
        except DataError as exc:
            return exc

    def batches(
        self, items: Sequence[Any], paths: Sequence[Path], batch_size: int
    ) -> Iterator[tuple[list[Any], list[Path], list[torch.Tensor | DataError]]]:
        """``(items, paths, pixels or the DataError each image raised)`` per batch; with
        ``num_workers=0`` images load inline."""
        starts = range(0, len(items), batch_size)
        if self.workers <= 0:
            for s in starts:
                ps = list(paths[s : s + batch_size])
                yield list(items[s : s + batch_size]), ps, [self._one(p) for p in ps]
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="ituning-images") as pool:
            pending: tuple[list[Any], list[Path], list[Future]] | None = None
            for s in starts:
                ps = list(paths[s : s + batch_size])
                nxt = (list(items[s : s + batch_size]), ps, [pool.submit(self._one, p) for p in ps])
                if pending is not None:
                    yield pending[0], pending[1], [f.result() for f in pending[2]]
                pending = nxt
            if pending is not None:
                yield pending[0], pending[1], [f.result() for f in pending[2]]
