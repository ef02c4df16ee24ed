"""Frozen-encoder features: a sharded on-disk cache, and two interchangeable "visual sources".

The vision encoder never trains, so each image is encoded once and its patch tokens are reused by
every epoch and every sweep run that shares the encoder. Training asks a *visual source* for the
tokens of a batch of image ids; :class:`CachedFeatures` reads them from the cache and
:class:`LiveFeatures` runs the encoder, and both return the same tensor (live output is cast
through the storage dtype, exactly what the cache stored).

The on-disk format (shard files, indexes, checksums, write order) lives in
:mod:`~ituning.data.feature_shards`; this module decides which entries are live and serves them.

* Keys are image ids (dataset-qualified, so sources never collide) under the encoder's identity
  (model, weights digest, preprocessing, CLS choice): two encoders never share an entry.
* A shard without an index is incomplete and ignored; an interrupted :meth:`FeatureCache.extract`
  still writes the images it had encoded, and a rerun encodes only what is missing.
* A shard whose checksum fails is deleted with a warning, and its images count as missing, to be
  re-encoded; corrupt bytes are never returned as features.
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

import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ituning.data.feature_shards import (
    FORMAT_VERSION,
    Shard,
    ShardFolder,
    fingerprint,
    from_numpy,
    storage_dtype,
    to_numpy,
)
from ituning.data.image_encoding import Encoder, ImageLoader, check_encoder, encode_pixels
from ituning.data.records import CaptionDataset, CaptionRecord
from ituning.errors import DataError
from ituning.files import atomic_write, sha256_text

__all__ = [
    "FORMAT_VERSION",
    "CachedFeatures",
    "Encoder",
    "ExtractStats",
    "FeatureCache",
    "LiveFeatures",
]


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
        self.identity = check_encoder(encoder)
        self.dtype = dtype
        self.dtype_name, self.np_dtype = storage_dtype(dtype)
        self.shard_size = shard_size
        digest = sha256_text(self.identity, 16)
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
        self._folder = ShardFolder(self.dir, self.identity, self.dtype_name, self.np_dtype)
        self._shards: dict[str, Shard] = {}
        self._entries: dict[str, tuple[Shard, int]] = {}
        self.refresh()

    # ----------------------------------------------------------------------------- index
    def refresh(self) -> None:
        """Re-read the shard indexes (e.g. after another process extracted)."""
        shards: dict[str, Shard] = {}
        for index in self._folder.index_files():
            name = index.stem
            old = self._shards.get(name)
            if old is not None and old.index == index:
                shards[name] = old
                continue
            shard = self._folder.read(index)
            if shard is not None:
                shards[name] = shard
        self._shards = shards
        self._rebuild_entries()

    def _rebuild_entries(self) -> None:
        self._entries = {}
        for shard in self._shards.values():  # sorted by name = creation order; newer wins
            for row, key in enumerate(shard.keys):
                self._entries[key] = (shard, row)

    def _verify_keys(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        while True:
            shards = {
                self._entries[k][0].name: self._entries[k][0] for k in keys if k in self._entries
            }
            bad = next((s for s in shards.values() if not self._folder.verify(s)), None)
            if bad is None:
                return
            self._shards.pop(bad.name, None)
            self._rebuild_entries()

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
        groups: dict[str, tuple[Shard, list[int], list[int]]] = {}
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
        return from_numpy(out, self.dtype)

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
        self._folder.clean_orphans()
        recs = list(dataset.records)
        paths = [dataset.image_path(r) for r in recs]
        prints = [fingerprint(p) for p in paths]
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
        loader = ImageLoader(self.encoder, num_workers)
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
                    feats = to_numpy(
                        encode_pixels(self.encoder, [t for _, t in good], self.dtype), self.dtype
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
        shard = self._folder.write(keys, arr, prints)
        self._shards[shard.name] = shard
        for row, key in enumerate(keys):
            self._entries[key] = (shard, row)

    def _collect_garbage(self) -> None:
        """Delete shards whose every entry a newer shard superseded."""
        live = {shard.name for shard, _ in self._entries.values()}
        for name in [n for n in self._shards if n not in live]:
            self._folder.delete(self._shards.pop(name))


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
        check_encoder(encoder)
        storage_dtype(dtype)
        self.encoder = encoder
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None
        self._loader = ImageLoader(encoder, num_workers)
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
        out = encode_pixels(self.encoder, loaded, self.dtype)  # type: ignore[arg-type]
        return out.to(self.device) if self.device is not None else out
