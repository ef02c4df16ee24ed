"""The feature cache on the tiny real open_clip encoder: resume, corruption, identities, sources."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from ituning.data.features import CachedFeatures, FeatureCache, LiveFeatures
from ituning.data.karpathy import read_karpathy
from ituning.data.records import CaptionDataset
from ituning.errors import BackboneError, DataError
from ituning.vision import load_vision, save_clip_folder

N_IMAGES = 24


@pytest.fixture
def dataset(tmp_path: Path) -> CaptionDataset:
    """24 noise images in a Karpathy-format file, read the way training reads it."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    root.mkdir()
    images = []
    for i in range(N_IMAGES):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            root / f"{i:03d}.png"
        )
        sent = {"raw": f"image {i}", "tokens": ["image", str(i)], "imgid": i, "sentid": i}
        split = "test" if i % 6 == 0 else "train"
        images.append(
            {
                "filename": f"{i:03d}.png",
                "imgid": i,
                "split": split,
                "sentids": [i],
                "sentences": [sent],
            }
        )
    path = tmp_path / "dataset_noise.json"
    path.write_text(json.dumps({"dataset": "noise", "images": images}))
    return read_karpathy(path, root)


def _ids(ds: CaptionDataset) -> list[str]:
    return [r.image_id for r in ds]


class FailingAfter(torch.nn.Module):
    """The real encoder, raising on its (k+1)-th batch: an extraction interrupted mid-way."""

    def __init__(self, encoder: torch.nn.Module, k: int) -> None:
        super().__init__()
        self.encoder, self.k, self.calls = encoder, k, 0
        self.identity, self.preprocess = encoder.identity, encoder.preprocess

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.k:
            raise RuntimeError("injected failure")
        return self.encoder(pixels)


def _shard_files(cache: FeatureCache) -> list[Path]:
    return sorted(cache.dir.glob("*.npy"))


def test_extract_once_then_cached_equals_live(tiny_vision, dataset, tmp_path):
    early = FeatureCache(tmp_path / "cache", tiny_vision)  # e.g. a rank that waits for rank 0
    cache = FeatureCache(tmp_path / "cache", tiny_vision, shard_size=10)
    stats = cache.extract(dataset, batch_size=4, progress=False)
    assert early.get(_ids(dataset)).shape[0] == N_IMAGES
    assert (stats.requested, stats.cached, stats.encoded, stats.skipped) == (
        N_IMAGES,
        0,
        N_IMAGES,
        0,
    )
    assert len(_shard_files(cache)) == 3 and len(cache) == N_IMAGES
    again = FeatureCache(tmp_path / "cache", tiny_vision, shard_size=10)  # as a new process would
    assert again.missing(_ids(dataset)) == []
    assert again.extract(dataset, progress=False).encoded == 0

    ids = _ids(dataset)
    random.Random(0).shuffle(ids)
    batch = ids[:7]  # a batch composition extraction never saw
    cached = CachedFeatures(again)(batch)
    live = LiveFeatures(tiny_vision, [dataset.split("train"), dataset.split("test")])(batch)
    assert cached.shape == (7, tiny_vision.num_tokens, tiny_vision.width) == (7, 16, 32)
    assert cached.dtype == live.dtype == torch.float16
    assert torch.equal(cached, live)
    recs = [dataset.get(i) for i in batch]
    assert torch.equal(CachedFeatures(again)(recs), cached)
    # exactly the encoder's output, rounded once to the storage dtype
    pixels = torch.stack(
        [tiny_vision.preprocess(Image.open(dataset.image_path(r)).convert("RGB")) for r in recs]
    )
    assert torch.equal(tiny_vision(pixels).half(), cached)
    assert all(isinstance(s.array, np.memmap) for s in again._shards.values())  # read via mmap


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_other_storage_dtypes_round_trip(tiny_vision, dataset, tmp_path, dtype):
    cache = FeatureCache(tmp_path / "cache", tiny_vision, dtype=dtype)
    cache.extract(dataset, progress=False)
    ids = _ids(dataset)[3:9]
    got = CachedFeatures(FeatureCache(tmp_path / "cache", tiny_vision, dtype=dtype))(ids)
    assert got.dtype == dtype
    assert torch.equal(got, LiveFeatures(tiny_vision, dataset, dtype=dtype)(ids))
    assert FeatureCache(tmp_path / "cache", tiny_vision).missing(ids) == ids  # fp16 is separate


def test_interrupted_extraction_keeps_its_work_and_resumes(tiny_vision, dataset, tmp_path):
    root = tmp_path / "cache"
    failing = FailingAfter(tiny_vision, k=2)
    with pytest.raises(RuntimeError, match="injected failure"):
        FeatureCache(root, failing, shard_size=100).extract(dataset, batch_size=4, progress=False)
    cache = FeatureCache(root, tiny_vision, shard_size=100)
    missing = cache.missing(_ids(dataset))
    assert len(missing) == N_IMAGES - 2 * 4 and missing == _ids(dataset)[8:]
    stats = cache.extract(dataset, batch_size=4, progress=False)
    assert (stats.cached, stats.encoded) == (8, N_IMAGES - 8)
    assert torch.equal(cache.get(_ids(dataset)), LiveFeatures(tiny_vision, dataset)(_ids(dataset)))


def test_half_written_shards_are_ignored(tiny_vision, dataset, tmp_path):
    root = tmp_path / "cache"
    cache = FeatureCache(root, tiny_vision, shard_size=10)
    cache.extract(dataset, progress=False)
    first = _shard_files(cache)[0]
    # A crash between writing the .npy and its index, and one in the middle of writing a .npy:
    first.with_suffix(".json").unlink()
    (cache.dir / ".00000099-deadbeef.npy.tmp").write_bytes(first.read_bytes()[:100])
    fresh = FeatureCache(root, tiny_vision, shard_size=10)
    assert fresh.missing(_ids(dataset)) == _ids(dataset)[:10]
    assert fresh.extract(dataset, progress=False).encoded == 10
    assert torch.equal(fresh.get(_ids(dataset)), LiveFeatures(tiny_vision, dataset)(_ids(dataset)))


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _bad_index(path: Path) -> None:
    path.with_suffix(".json").write_text('{"format": 1, "keys": [')


@pytest.mark.parametrize(
    "damage", [_flip, _truncate, _bad_index], ids=["flipped", "truncated", "bad-index"]
)
def test_corrupt_shard_is_detected_and_rebuilt(tiny_vision, dataset, tmp_path, damage):
    root = tmp_path / "cache"
    cache = FeatureCache(root, tiny_vision, shard_size=10)
    cache.extract(dataset, progress=False)
    before = cache.get(_ids(dataset))
    damage(_shard_files(cache)[1])

    with pytest.warns(UserWarning, match="feature cache: removing shard"):
        fresh = FeatureCache(root, tiny_vision, shard_size=10)
        if damage is not _bad_index:
            with pytest.raises(
                DataError, match="corrupt and has been removed.*run FeatureCache.extract"
            ):
                fresh.get(_ids(dataset)[12:14])
    stats = fresh.extract(dataset, progress=False)
    assert (stats.cached, stats.encoded) == (N_IMAGES - 10, 10)
    assert torch.equal(fresh.get(_ids(dataset)), before)


def test_corruption_found_by_extract_first(tiny_vision, dataset, tmp_path):
    root = tmp_path / "cache"
    FeatureCache(root, tiny_vision, shard_size=10).extract(dataset, progress=False)
    _flip(sorted((next(root.iterdir()) / "float16").glob("*.npy"))[2])
    fresh = FeatureCache(root, tiny_vision, shard_size=10)
    with pytest.warns(UserWarning, match="checksum mismatch"):
        stats = fresh.extract(dataset, progress=False)
    assert stats.encoded == N_IMAGES - 20


def test_two_encoder_identities_never_share_entries(tiny_vision, tiny_clip_dir, dataset, tmp_path):
    root = tmp_path / "cache"
    a = FeatureCache(root, tiny_vision)
    a.extract(dataset, progress=False)
    with_cls = load_vision(tiny_clip_dir, include_cls=True)
    torch.manual_seed(1)
    other_cfg = json.loads((tiny_clip_dir / "open_clip_config.json").read_text())["model_cfg"]
    other = load_vision(
        save_clip_folder(open_clip.CLIP(**other_cfg), other_cfg, tmp_path / "other_clip")
    )
    assert len({tiny_vision.identity, with_cls.identity, other.identity}) == 3
    for enc in (with_cls, other):
        b = FeatureCache(root, enc)
        assert b.dir != a.dir and b.missing(_ids(dataset)) == _ids(dataset)
        assert b.extract(dataset, progress=False).encoded == N_IMAGES
    assert FeatureCache(root, with_cls).get(_ids(dataset)[:2]).shape == (2, 17, 32)  # CLS + 16
    assert not torch.equal(FeatureCache(root, other).get(_ids(dataset)), a.get(_ids(dataset)))
    assert a.extract(dataset, progress=False).encoded == 0


def test_unreadable_image_names_its_path_or_is_skipped(tiny_vision, dataset, tmp_path):
    bad = dataset.get("noise:010")
    dataset.image_path(bad).write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    cache = FeatureCache(tmp_path / "cache", tiny_vision)
    with pytest.raises(DataError, match=r"cannot read image .*010\.png.*skip_bad_images=True"):
        cache.extract(dataset, batch_size=4, progress=False)
    assert len(cache) == 8  # the batches before the bad one were kept
    with pytest.warns(
        UserWarning,
        match=r"skipped 1 unreadable images of noise \(first: cannot read image .*010\.png",
    ):
        stats = cache.extract(dataset, batch_size=4, skip_bad_images=True, progress=False)
    assert (stats.encoded, stats.skipped, stats.skipped_ids) == (N_IMAGES - 9, 1, ("noise:010",))
    assert "010.png" in stats.bad_images[0]
    assert cache.missing(_ids(dataset)) == ["noise:010"]
    with pytest.raises(DataError, match=r"no features for image 'noise:010'.*extract"):
        cache.get(["noise:000", "noise:010"])
    with pytest.raises(DataError, match=r"cannot read image .*010\.png"):
        LiveFeatures(tiny_vision, dataset)(["noise:010"])
    trainable = dataset.without(stats.skipped_ids)
    assert CachedFeatures(cache)(list(trainable.records)).shape[0] == N_IMAGES - 1


def test_changed_image_files_are_re_encoded(tiny_vision, dataset, tmp_path):
    cache = FeatureCache(tmp_path / "cache", tiny_vision, shard_size=100)
    cache.extract(dataset, progress=False)
    old = cache.get(["noise:005"])
    Image.new("RGB", (32, 32), (0, 255, 0)).save(dataset.image_path(dataset.get("noise:005")))
    assert cache.extract(dataset, progress=False).encoded == 1
    new = cache.get(["noise:005"])
    assert not torch.equal(old, new)
    assert torch.equal(new, LiveFeatures(tiny_vision, dataset)(["noise:005"]))
    # regenerate every image in place: the superseded shard is deleted, not kept as dead weight
    for rec in dataset:
        Image.new("RGB", (32, 32), (7, 7, 7)).save(dataset.image_path(rec))
    assert cache.extract(dataset, progress=False).encoded == N_IMAGES
    assert len(_shard_files(cache)) == 1
    # features survive the images being removed after extraction
    for rec in dataset:
        dataset.image_path(rec).unlink()
    assert cache.extract(dataset, progress=False).encoded == 0


def test_bad_arguments(tiny_vision, dataset, tmp_path):
    with pytest.raises(DataError, match="dtype torch.int8 is not supported"):
        FeatureCache(tmp_path, tiny_vision, dtype=torch.int8)
    with pytest.raises(BackboneError, match="Identity has no 'identity' string"):
        FeatureCache(tmp_path, torch.nn.Identity())
    with pytest.raises(DataError, match="'noise:999' is in none of the datasets"):
        LiveFeatures(tiny_vision, dataset)(["noise:999"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = FeatureCache(tmp_path / "c", tiny_vision)
        assert empty.missing(["a", "b", "a"]) == ["a", "b"]
