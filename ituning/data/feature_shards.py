"""The feature cache's on-disk format: shards of patch tokens, each a ``.npy`` plus a JSON index.

Layout on disk::

    <root>/<sha256(encoder.identity)[:16]>/identity.txt        the full identity string
    <root>/<sha256(encoder.identity)[:16]>/<dtype>/<seq>-<rand>.npy   (n, N, D) tokens
    <root>/<sha256(encoder.identity)[:16]>/<dtype>/<seq>-<rand>.json  index: keys, shape, sha256

Why it is built this way (existing caches depend on every detail: names, index keys, write order):

* A shard is written to a temporary name and renamed, ``.npy`` first and the index last, so a shard
  without an index is incomplete and ignored, and a killed writer never leaves a half shard that
  looks complete.
* Each index holds the sha256 of its ``.npy`` (hashed while writing, no second read); a shard is
  verified the first time a process uses it, and a mismatch (truncated, overwritten) deletes it
  with a warning, so corrupt bytes are never returned as features.
* Each entry records the image file's (size, mtime) when it was encoded, so a changed image file
  is noticed and re-encoded.
* ``<seq>`` orders shards by age (newer entries win); ``<rand>`` keeps concurrent writers' names
  apart.
* numpy has no bfloat16, so bfloat16 tokens are stored bit-exact as int16.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ituning.errors import DataError
from ituning.faultpoints import fault_point
from ituning.files import atomic_open, atomic_write, sha256_file

FORMAT_VERSION = 1
STORAGE_DTYPES = {  # torch dtype -> (name in the index, numpy dtype it is stored as)
    torch.float16: ("float16", np.dtype("<f2")),
    torch.float32: ("float32", np.dtype("<f4")),
    torch.bfloat16: ("bfloat16", np.dtype("<i2")),  # numpy has no bfloat16: stored bit-exact
}
ORPHAN_AGE_S = 3600.0  # temporary files older than this belong to a dead writer


@dataclass
class Shard:
    """One shard as its index describes it; ``array`` is its memory map once verified."""

    name: str
    npy: Path
    index: Path
    keys: list[str]
    shape: tuple[int, ...]
    sha256: str
    fingerprints: list[list[int] | None]
    verified: bool = False
    array: np.ndarray | None = field(default=None, repr=False)


def storage_dtype(dtype: torch.dtype) -> tuple[str, np.dtype]:
    """(name in the index, numpy dtype on disk) for a torch storage dtype; DataError if unsupported."""
    if dtype not in STORAGE_DTYPES:
        names = ", ".join(n for n, _ in STORAGE_DTYPES.values())
        raise DataError(f"feature cache dtype {dtype} is not supported; use one of {names}")
    return STORAGE_DTYPES[dtype]


def to_numpy(x: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """Tokens as the numpy array a shard stores (bfloat16 reinterpreted as int16)."""
    x = x.detach().to("cpu", dtype).contiguous()
    return (x.view(torch.int16) if dtype == torch.bfloat16 else x).numpy()


def from_numpy(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """The inverse of :func:`to_numpy`, without a copy."""
    t = torch.from_numpy(a)
    return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t


def fingerprint(path: Path) -> list[int] | None:
    """An image file's [size, mtime_ns] (None if absent): how a changed file is noticed."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


class _HashingWriter:
    """File wrapper that hashes what ``np.save`` writes, so no second read is needed."""

    def __init__(self, f: Any) -> None:
        self.f, self.h = f, hashlib.sha256()

    def write(self, data: Any) -> int:
        self.h.update(data)
        return self.f.write(data)


class ShardFolder:
    """The shards of one encoder in one dtype: read, verify, write and delete them on disk.

    It keeps no index of its own; :class:`~ituning.data.features.FeatureCache` decides which
    shards are live and which entry wins.
    """

    def __init__(self, path: Path, identity: str, dtype_name: str, np_dtype: np.dtype) -> None:
        self.path = path
        self.identity = identity
        self.dtype_name = dtype_name
        self.np_dtype = np_dtype

    def index_files(self) -> list[Path]:
        """Every shard index, sorted by name, that is by creation order."""
        return sorted(self.path.glob("*.json"))

    def read(self, index: Path) -> Shard | None:
        """The shard an index describes; None if it vanished, or (removed) if it is unusable."""
        npy = index.with_suffix(".npy")
        try:
            meta = json.loads(index.read_text(encoding="utf-8"))
            keys = [str(k) for k in meta["keys"]]
            shape = tuple(int(s) for s in meta["shape"])
            ok = (
                meta["format"] == FORMAT_VERSION
                and meta["dtype"] == self.dtype_name
                and meta["identity"] == self.identity
                and len(shape) == 3
                and shape[0] == len(keys) == len(meta["fingerprints"])
                and isinstance(meta["sha256"], str)
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok or not npy.exists():
            self._discard(index, npy, "its index is unreadable or its .npy is missing")
            return None
        return Shard(index.stem, npy, index, keys, shape, meta["sha256"], meta["fingerprints"])

    def verify(self, shard: Shard) -> bool:
        """Checksum and header check, once per process; a bad shard is removed from disk."""
        if shard.verified:
            return True
        why = None
        try:
            if sha256_file(shard.npy) != shard.sha256:
                why = "checksum mismatch: truncated or corrupt"
            else:
                arr = np.load(shard.npy, mmap_mode="r", allow_pickle=False)
                if arr.shape != shard.shape or arr.dtype != self.np_dtype:
                    why = f"holds {arr.shape} {arr.dtype}, index says {shard.shape} {self.np_dtype}"
                else:
                    shard.array = arr
        except FileNotFoundError:
            why = "file vanished"
        except (OSError, ValueError) as exc:
            why = f"unreadable: {exc}"
        if why is not None:
            self._discard(shard.index, shard.npy, why)
            return False
        shard.verified = True
        return True

    def write(self, keys: list[str], arr: np.ndarray, prints: list[list[int] | None]) -> Shard:
        """Write a new shard, ``.npy`` then index, each atomically; returned verified and mapped."""
        # Sequence numbers order shards by age (newer entries win); look at the folder, not just
        # the shards this process knows, so a concurrent writer's shards count too.
        prefixes = (p.stem.split("-", 1)[0] for p in self.path.glob("*.json"))
        seq = max((int(x) for x in prefixes if x.isdigit()), default=-1)
        name = f"{seq + 1:08d}-{secrets.token_hex(4)}"
        npy, index = self.path / f"{name}.npy", self.path / f"{name}.json"
        with atomic_open(npy, "wb") as f:
            w = _HashingWriter(f)
            np.lib.format.write_array(w, np.ascontiguousarray(arr), allow_pickle=False)
        fault_point("features.shard")
        meta = {
            "format": FORMAT_VERSION,
            "identity": self.identity,
            "dtype": self.dtype_name,
            "shape": list(arr.shape),
            "sha256": w.h.hexdigest(),
            "keys": keys,
            "fingerprints": prints,
        }
        atomic_write(index, json.dumps(meta))
        shard = Shard(name, npy, index, list(keys), tuple(arr.shape), meta["sha256"], list(prints))
        shard.verified = True
        shard.array = np.load(npy, mmap_mode="r", allow_pickle=False)
        return shard

    def delete(self, shard: Shard) -> None:
        """Remove a superseded shard, index first (no warning: nothing is lost)."""
        shard.index.unlink(missing_ok=True)
        shard.npy.unlink(missing_ok=True)

    def clean_orphans(self) -> None:
        """Remove temporary files and index-less ``.npy`` files left by a dead writer."""
        now = time.time()
        for p in [*self.path.glob(".*.tmp"), *self.path.glob("*.npy")]:
            if p.suffix == ".npy" and p.with_suffix(".json").exists():
                continue
            try:
                if now - p.stat().st_mtime > ORPHAN_AGE_S:
                    p.unlink()
            except FileNotFoundError:
                pass

    def _discard(self, index: Path, npy: Path, why: str) -> None:
        warnings.warn(
            f"feature cache: removing shard {npy} ({why}); its images will be re-encoded",
            stacklevel=3,
        )
        for p in (index, npy):
            p.unlink(missing_ok=True)
