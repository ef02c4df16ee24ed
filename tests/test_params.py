"""Parameter accounting from configurations alone reproduces the paper's #Params column."""

from __future__ import annotations

import json

import pytest

from ituning.config import ITuningConfig
from ituning.params import count_parameters, main

# the paper's Table 1 / Dropping numbers (millions) and the exact counts they round from
PAPER = [
    ("gpt2", 0, 14.18, 14_178_816),
    ("gpt2-medium", 0, 44.10, 44_101_632),
    ("gpt2-large", 0, 94.49, 94_487_040),
    ("gpt2-large", 18, 47.24, 47_243_520),
]


@pytest.mark.parametrize("lm,drop,paper_m,exact", PAPER)
def test_default_counts_match_the_paper(lm, drop, paper_m, exact):
    counts = count_parameters(lm, config=ITuningConfig(drop_first=drop))
    assert counts["trainable"] == exact
    assert abs(counts["trainable"] / 1e6 - paper_m) / paper_m < 0.01
    d, r = counts["lm"]["d_lm"], counts["bottleneck"]
    assert r == d // 2 and counts["vision"]["width"] == 768
    assert counts["per_layer"] == 2 * d * r + 2 * 768 * r + 3 * r + d
    assert counts["kept_layers"] == list(range(drop, counts["lm"]["n_layers"]))


def test_frozen_counts_are_gpt2_plus_vit_b16():
    counts = count_parameters("gpt2")
    assert counts["lm"]["params"] == 124_439_808  # GPT-2 base, tied embeddings once
    assert counts["vision"]["params"] == 86_192_640  # ViT-B/16 visual tower incl. projection
    assert counts["frozen"] == 124_439_808 + 86_192_640
    assert counts["vision"]["num_tokens"] == 196


def test_cli_json(capsys):
    assert main(["--lm", "gpt2-large", "--drop-first", "18", "--bottleneck", "64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bottleneck"] == 64 and len(out["kept_layers"]) == 18
    assert out["trainable"] == 18 * (2 * 1280 * 64 + 2 * 768 * 64 + 3 * 64 + 1280)
    assert {"trainable", "frozen", "per_layer", "kept_layers", "lm", "vision"} <= set(out)


def test_cli_counts_local_backbones(tiny_lm_dir, tiny_clip_dir, capsys):
    args = ["--lm", str(tiny_lm_dir), "--vision", str(tiny_clip_dir), "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["lm"]["d_lm"], out["vision"]["width"], out["bottleneck"]) == (32, 32, 16)
    assert out["trainable"] == 4 * (2 * 32 * 16 + 2 * 32 * 16 + 3 * 16 + 32)
    assert main(["--lm", str(tiny_lm_dir), "--vision", str(tiny_clip_dir)]) == 0
    assert "trainable" in capsys.readouterr().out


def test_cli_errors_are_one_line(capsys):
    assert main(["--lm", "gpt2", "--drop-first", "12"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "drop_first=12" in err
