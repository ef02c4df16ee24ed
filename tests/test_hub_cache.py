"""Hub weights in the local cache load without a request: no retries on a machine without a
network (transformers retried a cached two-layer GPT-2 for over two minutes here)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import build_tiny_tokenizer

from ituning.hub_cache import local_first

REPO = "ituning-test/tiny-gpt2"


def test_the_cache_is_tried_first_and_the_network_only_after_a_miss(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen = []

    def miss_then_hit():
        seen.append(constants.HF_HUB_OFFLINE)
        if len(seen) == 1:
            raise OSError("not in the cache")
        return "loaded"

    assert local_first(miss_then_hit) == "loaded" and seen == [True, False]
    assert constants.HF_HUB_OFFLINE is False  # restored

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the user said: no network
    seen.clear()
    with pytest.raises(OSError, match="not in the cache"):
        local_first(miss_then_hit)
    assert seen == [True]


def test_a_cached_hub_lm_loads_without_any_request(tiny, tmp_path):
    """A GPT-2 in the Hugging Face cache layout, the Hub address pointing at a closed port:
    before, every file was requested and retried with back-off; now nothing is requested."""
    snapshot = tmp_path / "hub" / f"models--{REPO.replace('/', '--')}" / "snapshots" / ("a" * 40)
    tiny.gpt2().save_pretrained(snapshot)
    build_tiny_tokenizer().save_pretrained(snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HOME=str(tmp_path), HF_ENDPOINT="http://127.0.0.1:9")
    code = f"from ituning.backbones import load_lm; print(type(load_lm({REPO!r})[0]).__name__)"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "GPT2LMHeadModel"
    assert "Retrying" not in proc.stderr and "127.0.0.1" not in proc.stderr
    assert time.perf_counter() - start < 60
