"""Frozen-encoder features: a sharded on-disk cache, and two interchangeable "visual sources".

The vision encoder never trains, so each image is encoded once and its patch tokens are reused by
every epoch and every sweep run that shares the encoder. Training asks a *visual source* for the
tokens of a batch of image ids; :class:`CachedFeatures` reads them from the cache and
:class:`LiveFeatures` runs the encoder, and both return the same tensor (live output is cast
through the storage dtype, exactly what the cache stored).

Layout on disk::

    <root>/<sha256(encoder.identity)[:16]>/identity.txt        the full identity string
    <root>/<sha256(encoder.identity)[:16]>/<dtype>/<seq>-<rand>.npy   (n, N, D) tokens
    <root>/<sha256(encoder.identity)[:16]>/<dtype>/<seq>-<rand>.json  index: keys, shape, sha256

* Keys are image ids (dataset-qualified, so sources never collide) under the encoder's identity
  (model, weights digest, preprocessing, CLS choice): two encoders never share an entry.
* A shard is written to a temporary name and renamed, ``.npy`` first and the index last, so a shard
  without an index is incomplete and ignored; an interrupted :meth:`FeatureCache.extract` still
  writes the images it had encoded, and a rerun encodes only what is missing.
* Each index holds the sha256 of its ``.npy``; a shard is verified the first time this process uses
  it. A mismatch (truncated, overwritten) deletes the shard with a warning, and its images count as
  missing, to be re-encoded; corrupt bytes are never returned as features.
* Each entry records the image file's (size, mtime) when it was encoded; :meth:`FeatureCache.extract`
  re-encodes an image whose file changed (e.g. a Shapes world regenerated in place). Newer shards
  override older ones; shards left with no live entry are deleted.
* Reads are memory-mapped, so a split's features live in the page cache rather than twice in RAM.
* Concurrent extractors (sweep workers) are safe: shard names never clash, and an image encoded by
  both simply has two equal entries, the newer one winning.

"Identical" cached and live batches assume the encoder's output for an image does not depend on
its batch neighbours: true bit for bit on the CPU (tested); on a GPU, kernels chosen per batch size
can move the last bit of a float32 result, which the float16 rounding usually, not always, absorbs.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ituning.data.images import load_image
from ituning.data.records import CaptionDataset, CaptionRecord
from ituning.errors import BackboneError, DataError
from ituning.faultpoints import fault_point
from ituning.files import atomic_open, atomic_write, sha256_file

FORMAT_VERSION = 1
_STORAGE = {  # torch dtype -> (name in the index, numpy dtype it is stored as)
    torch.float16: ("float16", np.dtype("<f2")),
    torch.float32: ("float32", np.dtype("<f4")),
    torch.bfloat16: ("bfloat16", np.dtype("<i2")),  # numpy has no bfloat16: stored bit-exact
}
_ORPHAN_AGE_S = 3600.0  # temporary files older than this belong to a dead writer


class Encoder(Protocol):
    """What the cache needs from ``ituning.vision.VisionEncoder``."""

    identity: str

    def preprocess(self, image: Any) -> torch.Tensor: ...

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ExtractStats:
    """What one :meth:`FeatureCache.extract` call did."""

    requested: int
    cached: int
    encoded: int
    skipped: int
    skipped_ids: tuple[str, ...] = ()
    bad_images: tuple[str, ...] = ()  # one message per skipped image, naming its path
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class _Shard:
    name: str
    npy: Path
    index: Path
    keys: list[str]
    shape: tuple[int, ...]
    sha256: str
    fingerprints: list[list[int] | None]
    verified: bool = False
    array: np.ndarray | None = field(default=None, repr=False)


def _storage(dtype: torch.dtype) -> tuple[str, np.dtype]:
    if dtype not in _STORAGE:
        names = ", ".join(n for n, _ in _STORAGE.values())
        raise DataError(f"feature cache dtype {dtype} is not supported; use one of {names}")
    return _STORAGE[dtype]


def _to_numpy(x: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    x = x.detach().to("cpu", dtype).contiguous()
    return (x.view(torch.int16) if dtype == torch.bfloat16 else x).numpy()


def _from_numpy(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    t = torch.from_numpy(a)
    return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t


def _fingerprint(path: Path) -> list[int] | None:
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


def _encoder_device_dtype(encoder: Any) -> tuple[torch.device, torch.dtype]:
    params = list(encoder.parameters()) if hasattr(encoder, "parameters") else []
    floating = [p for p in params if p.is_floating_point()]
    p = floating[0] if floating else None
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def _check_encoder(encoder: Any) -> str:
    identity = getattr(encoder, "identity", None)
    if not isinstance(identity, str) or not identity:
        raise BackboneError(
            f"{type(encoder).__name__} has no 'identity' string; the feature cache keys entries by it"
        )
    if not callable(getattr(encoder, "preprocess", None)):
        raise BackboneError(f"{type(encoder).__name__} has no 'preprocess' callable")
    return identity


class _Loader:
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


def _encode(encoder: Any, pixels: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Encoder forward on a stacked batch, returned on the CPU in the storage dtype."""
    device, pdtype = _encoder_device_dtype(encoder)
    with torch.no_grad():
        out = encoder(torch.stack(pixels).to(device=device, dtype=pdtype))
    if out.dim() != 3:
        raise BackboneError(f"vision encoder returned shape {tuple(out.shape)}; expected (B, N, D)")
    return out.detach().to("cpu", dtype)


class FeatureCache:
    """Patch tokens of one frozen encoder, stored once per image (see the module docstring)."""

    def __init__(
        self,
        root: Path | str,
        encoder: Encoder,
        *,
        dtype: torch.dtype = torch.float16,
        shard_size: int = 1024,
    ) -> None:
        if shard_size < 1:
            raise DataError(f"feature cache shard_size must be >= 1, got {shard_size}")
        self.encoder = encoder
        self.identity = _check_encoder(encoder)
        self.dtype = dtype
        self.dtype_name, self.np_dtype = _storage(dtype)
        self.shard_size = shard_size
        digest = hashlib.sha256(self.identity.encode()).hexdigest()[:16]
        self.encoder_dir = Path(root) / digest
        self.dir = self.encoder_dir / self.dtype_name
        self.dir.mkdir(parents=True, exist_ok=True)
        ident = self.encoder_dir / "identity.txt"
        if ident.exists():
            if ident.read_text(encoding="utf-8") != self.identity:
                raise DataError(
                    f"{ident} names another encoder (identity digest collision); "
                    "use another cache root"
                )
        else:
            atomic_write(ident, self.identity)
        self._shards: dict[str, _Shard] = {}
        self._entries: dict[str, tuple[_Shard, int]] = {}
        self.refresh()

    # ----------------------------------------------------------------------------- index
    def refresh(self) -> None:
        """Re-read the shard indexes (e.g. after another process extracted)."""
        shards: dict[str, _Shard] = {}
        for index in sorted(self.dir.glob("*.json")):
            name = index.stem
            old = self._shards.get(name)
            if old is not None and old.index == index:
                shards[name] = old
                continue
            shard = self._read_index(index)
            if shard is not None:
                shards[name] = shard
        self._shards = shards
        self._rebuild_entries()

    def _read_index(self, index: Path) -> _Shard | None:
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
        return _Shard(index.stem, npy, index, keys, shape, meta["sha256"], meta["fingerprints"])

    def _rebuild_entries(self) -> None:
        self._entries = {}
        for shard in self._shards.values():  # sorted by name = creation order; newer wins
            for row, key in enumerate(shard.keys):
                self._entries[key] = (shard, row)

    def _discard(self, index: Path, npy: Path, why: str) -> None:
        warnings.warn(
            f"feature cache: removing shard {npy} ({why}); its images will be re-encoded",
            stacklevel=3,
        )
        for p in (index, npy):
            p.unlink(missing_ok=True)

    def _verify(self, shard: _Shard) -> bool:
        """Checksum and header check, once per process; a bad shard is removed."""
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
            self._shards.pop(shard.name, None)
            self._rebuild_entries()
            return False
        shard.verified = True
        return True

    def _verify_keys(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        while True:
            shards = {
                self._entries[k][0].name: self._entries[k][0] for k in keys if k in self._entries
            }
            if all(self._verify(s) for s in shards.values()):
                return

    # ----------------------------------------------------------------------------- queries
    def __contains__(self, image_id: object) -> bool:
        return image_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def missing(self, image_ids: Iterable[str], *, verify: bool = True) -> list[str]:
        """The ids with no (valid, when ``verify``) entry, in the order given."""
        ids = list(dict.fromkeys(image_ids))
        if verify:
            self._verify_keys(ids)
        return [i for i in ids if i not in self._entries]

    def get(self, image_ids: Sequence[str]) -> torch.Tensor:
        """Tokens ``(B, N, D)`` in the storage dtype, read from memory-mapped shards."""
        ids = list(image_ids)
        if any(i not in self._entries for i in ids):  # perhaps extracted by another process since
            self.refresh()
        absent = [i for i in ids if i not in self._entries]
        if absent:
            raise DataError(
                f"feature cache {self.dir}: no features for image {absent[0]!r} "
                f"({len(absent)} of {len(ids)} missing); run FeatureCache.extract on its dataset"
            )
        self._verify_keys(ids)
        absent = [i for i in ids if i not in self._entries]
        if absent:  # another process may have replaced the shard: look again once
            self.refresh()
            self._verify_keys(ids)
            absent = [i for i in ids if i not in self._entries]
        if absent:
            raise DataError(
                f"feature cache {self.dir}: a shard holding image {absent[0]!r} was corrupt and has "
                f"been removed ({len(absent)} images affected); run FeatureCache.extract again"
            )
        if not ids:
            return torch.empty((0, 0, 0), dtype=self.dtype)
        first = self._entries[ids[0]][0]
        out = np.empty((len(ids), *first.shape[1:]), dtype=self.np_dtype)
        groups: dict[str, tuple[_Shard, list[int], list[int]]] = {}
        for pos, key in enumerate(ids):
            shard, row = self._entries[key]
            if shard.shape[1:] != first.shape[1:]:
                raise DataError(
                    f"feature cache {self.dir}: shards disagree on token shape "
                    f"({shard.shape[1:]} vs {first.shape[1:]}); delete the folder and re-extract"
                )
            g = groups.setdefault(shard.name, (shard, [], []))
            g[1].append(pos)
            g[2].append(row)
        for shard, positions, rows in groups.values():
            order = np.argsort(rows, kind="stable")
            out[np.asarray(positions)[order]] = shard.array[np.asarray(rows)[order]]
        return _from_numpy(out, self.dtype)

    # ----------------------------------------------------------------------------- extraction
    def extract(
        self,
        dataset: CaptionDataset,
        *,
        batch_size: int = 64,
        skip_bad_images: bool = False,
        progress: bool = True,
        num_workers: int | None = None,
    ) -> ExtractStats:
        """Encode the dataset's images that are missing, corrupt or changed on disk.

        A corrupt or unreadable image raises DataError naming its path, unless
        ``skip_bad_images``: then it is left out and counted, and a warning names the first ones.
        Whatever was encoded before an error or interrupt is written before it propagates.
        """
        started = time.perf_counter()
        self.refresh()
        self._clean_orphans()
        recs = list(dataset.records)
        paths = [dataset.image_path(r) for r in recs]
        prints = [_fingerprint(p) for p in paths]
        self._verify_keys(r.image_id for r in recs)
        # An absent file (None) with a cached entry is trusted: images may be removed after extraction.
        todo = [
            i
            for i, r in enumerate(recs)
            if r.image_id not in self._entries
            or (prints[i] is not None and self._entry_fingerprint(r.image_id) != prints[i])
        ]
        bad: list[tuple[str, str]] = []
        encoded = 0
        buf_keys: list[str] = []
        buf_prints: list[list[int] | None] = []
        buf: list[np.ndarray] = []

        def flush() -> None:
            if buf_keys:
                self._write_shard(buf_keys, np.concatenate(buf), buf_prints)
                buf_keys.clear(), buf_prints.clear(), buf.clear()

        bar = tqdm(
            total=len(todo),
            unit="img",
            desc=f"encoding {dataset.name} images",
            disable=not progress or not todo,
            leave=False,
        )
        loader = _Loader(self.encoder, num_workers)
        try:
            for idx, _, loaded in loader.batches(todo, [paths[i] for i in todo], batch_size):
                good = []
                for i, item in zip(idx, loaded, strict=True):
                    if isinstance(item, DataError):
                        if not skip_bad_images:
                            raise DataError(
                                f"{item}; replace or remove that image file (or pass "
                                "skip_bad_images=True to skip such images)"
                            )
                        bad.append((recs[i].image_id, str(item)))
                    else:
                        good.append((i, item))
                if good:
                    feats = _to_numpy(
                        _encode(self.encoder, [t for _, t in good], self.dtype), self.dtype
                    )
                    for row, (i, _) in enumerate(good):
                        buf_keys.append(recs[i].image_id)
                        buf_prints.append(prints[i])
                        buf.append(feats[row : row + 1])
                        if len(buf_keys) >= self.shard_size:
                            flush()
                    encoded += len(good)
                bar.update(len(idx))
                bar.set_postfix(skipped=len(bad), refresh=False)
        finally:
            bar.close()
            flush()
            self._collect_garbage()
        if bad:
            warnings.warn(
                f"feature cache: skipped {len(bad)} unreadable images of {dataset.name} "
                f"(first: {bad[0][1]})",
                stacklevel=2,
            )
        return ExtractStats(
            requested=len(recs),
            cached=len(recs) - len(todo),
            encoded=encoded,
            skipped=len(bad),
            skipped_ids=tuple(i for i, _ in bad),
            bad_images=tuple(m for _, m in bad),
            seconds=time.perf_counter() - started,
        )

    def _entry_fingerprint(self, key: str) -> list[int] | None:
        shard, row = self._entries[key]
        fp = shard.fingerprints[row]
        return list(fp) if fp is not None else None

    def _write_shard(
        self, keys: list[str], arr: np.ndarray, prints: list[list[int] | None]
    ) -> None:
        # Sequence numbers order shards by age (newer entries win); look at the folder, not just
        # the shards this process knows, so a concurrent writer's shards count too.
        prefixes = (p.stem.split("-", 1)[0] for p in self.dir.glob("*.json"))
        seq = max((int(x) for x in prefixes if x.isdigit()), default=-1)
        name = f"{seq + 1:08d}-{secrets.token_hex(4)}"
        npy, index = self.dir / f"{name}.npy", self.dir / f"{name}.json"
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
        shard = _Shard(name, npy, index, list(keys), tuple(arr.shape), meta["sha256"], list(prints))
        shard.verified = True
        shard.array = np.load(npy, mmap_mode="r", allow_pickle=False)
        self._shards[name] = shard
        for row, key in enumerate(keys):
            self._entries[key] = (shard, row)

    def _collect_garbage(self) -> None:
        """Delete shards whose every entry a newer shard superseded."""
        live = {shard.name for shard, _ in self._entries.values()}
        for name in [n for n in self._shards if n not in live]:
            shard = self._shards.pop(name)
            shard.index.unlink(missing_ok=True)
            shard.npy.unlink(missing_ok=True)

    def _clean_orphans(self) -> None:
        """Remove temporary files and index-less ``.npy`` files left by a dead writer."""
        now = time.time()
        for p in [*self.dir.glob(".*.tmp"), *self.dir.glob("*.npy")]:
            if p.suffix == ".npy" and p.with_suffix(".json").exists():
                continue
            try:
                if now - p.stat().st_mtime > _ORPHAN_AGE_S:
                    p.unlink()
            except FileNotFoundError:
                pass


def _as_ids(items: Sequence[CaptionRecord | str]) -> list[str]:
    return [it.image_id if isinstance(it, CaptionRecord) else str(it) for it in items]


class CachedFeatures:
    """Visual source backed by a :class:`FeatureCache`: ``source(ids or records) -> (B, N, D)``."""

    def __init__(self, cache: FeatureCache, *, device: torch.device | str | None = None) -> None:
        self.cache = cache
        self.dtype = cache.dtype
        cache.refresh()
        self.device = torch.device(device) if device is not None else None

    def __call__(self, items: Sequence[CaptionRecord | str]) -> torch.Tensor:
        out = self.cache.get(_as_ids(items))
        return out.to(self.device) if self.device is not None else out


class LiveFeatures:
    """Visual source that runs the encoder on each batch; values equal the cache's.

    The output is cast through the storage ``dtype`` (and returned on the CPU unless ``device``),
    exactly as :class:`FeatureCache` stores it, so switching sources does not change a batch.
    """

    def __init__(
        self,
        encoder: Encoder,
        datasets: CaptionDataset | Iterable[CaptionDataset],
        *,
        dtype: torch.dtype = torch.float16,
        device: torch.device | str | None = None,
        num_workers: int | None = 0,
    ) -> None:
        _check_encoder(encoder)
        _storage(dtype)
        self.encoder = encoder
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None
        self._loader = _Loader(encoder, num_workers)
        if isinstance(datasets, CaptionDataset):
            datasets = [datasets]
        self._paths: dict[str, Path] = {}
        for ds in datasets:
            for rec in ds.records:
                path = ds.image_path(rec)
                if self._paths.setdefault(rec.image_id, path) != path:
                    raise DataError(
                        f"image id {rec.image_id!r} names two files ({self._paths[rec.image_id]} "
                        f"and {path}); image ids must be unique across the datasets given"
                    )

    def __call__(self, items: Sequence[CaptionRecord | str]) -> torch.Tensor:
        ids = _as_ids(items)
        unknown = [i for i in ids if i not in self._paths]
        if unknown:
            raise DataError(f"live features: image {unknown[0]!r} is in none of the datasets given")
        if not ids:
            return torch.empty((0, 0, 0), dtype=self.dtype)
        paths = [self._paths[i] for i in ids]
        _, _, loaded = next(self._loader.batches(ids, paths, len(ids)))
        for item in loaded:
            if isinstance(item, DataError):
                raise item
        out = _encode(self.encoder, loaded, self.dtype)  # type: ignore[arg-type]
        return out.to(self.device) if self.device is not None else out
