"""The mini profile's Llama-family LMs: the GPT-2 minis' twins, built once, injected like them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2LMHeadModel,
    LlamaForCausalLM,
)

from bench.mini.backbones import (
    FORMAT_VERSION,
    MANIFEST,
    MiniBackbonesConfig,
    backbone_dir,
    folder_hashes,
)
from bench.mini.llama import (
    MiniLlamaConfig,
    build_llama_lms,
    llama_dir,
    main,
    param_count,
)
from bench.mini.lm import LMSpec, hf_tokenizer, lm_config
from ituning.data.shapes import lm_sentences
from ituning.data.shapes_scene import WorldConfig
from ituning.files import canonical_json, sha256_text

QUICK = MiniLlamaConfig.quick()
NAMES = ["llama-base", "llama-medium", "llama-large"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_llama_lms(tmp_path_factory.mktemp("llama"), 0, quick=True, progress=False)


def test_the_gpt2_set_keeps_its_digest_and_its_models() -> None:
    """The Llama code adds no field to ``LMSpec``: the GPT-2 set hashes the payload it always
    did, so its folder (``runs/backbones/mini-5c09523298``, packed LM pre-training) is still found,
    not rebuilt."""
    gpt2 = MiniBackbonesConfig()
    assert set(LMSpec.model_fields) == {"name", "n_layer", "n_embd", "n_head"}
    dump = gpt2.model_dump(mode="json")
    dump["lms"] = [
        {"name": s.name, "n_layer": s.n_layer, "n_embd": s.n_embd, "n_head": s.n_head}
        for s in gpt2.lms
    ]
    payload = {"format": FORMAT_VERSION, "seed": 0, "config": dump}
    assert gpt2.digest(0) == sha256_text(canonical_json(payload))
    assert backbone_dir(Path("out"), gpt2, 0).name == "mini-5c09523298", (
        "the GPT-2 backbones' hash changed: every cached set would be rebuilt; "
        "update this name only if that is intended"
    )
    spec, train = gpt2.lms[0], gpt2.lm_train
    torch.manual_seed(0)
    made = spec.new_model(train)
    torch.manual_seed(0)
    direct = GPT2LMHeadModel(lm_config(spec, train))
    assert type(made) is GPT2LMHeadModel
    assert all(
        torch.equal(a, b) for a, b in zip(made.parameters(), direct.parameters(), strict=True)
    )


def test_full_size_twins_match_the_gpt2_minis_in_shape_and_parameters() -> None:
    gpt2, llama = MiniBackbonesConfig(), MiniLlamaConfig.default()
    assert llama.lm_train == gpt2.lm_train and llama.world == gpt2.world
    assert [s.name for s in llama.lms] == NAMES
    for g, s in zip(gpt2.lms, llama.lms, strict=True):
        assert (s.n_layer, s.n_embd, s.n_head) == (g.n_layer, g.n_embd, g.n_head)
        assert s.intermediate_size % 8 == 0 and abs(s.intermediate_size - 8 * s.n_embd / 3) <= 12
        ratio = param_count(s, llama.lm_train) / param_count(g, gpt2.lm_train)
        assert abs(ratio - 1) < 0.015, (s.name, ratio)
    with torch.device("meta"):
        lm = llama.lms[0].new_model(llama.lm_train)
    assert type(lm) is LlamaForCausalLM and lm.config.attention_dropout == 0.0
    assert lm.lm_head.weight is lm.model.embed_tokens.weight  # tied, as GPT-2's
    assert lm.config.max_position_embeddings == gpt2.lm_train.n_positions


def test_llama_folder_is_its_own_and_follows_its_configuration(tmp_path: Path) -> None:
    full = llama_dir(tmp_path, MiniLlamaConfig.default(), 0)
    assert full.name.startswith("mini-llama-")
    assert full != backbone_dir(tmp_path, MiniBackbonesConfig(), 0)
    changed = [
        llama_dir(tmp_path, MiniLlamaConfig.default(), 1),
        llama_dir(tmp_path, MiniLlamaConfig.quick(), 0),
        llama_dir(
            tmp_path,
            MiniLlamaConfig.twin_of(MiniBackbonesConfig(world=WorldConfig(background_noise=0.0))),
            0,
        ),
    ]
    assert len({full, *changed}) == 4


def test_built_lms_are_llamas_with_the_minis_tokenizer(built) -> None:
    assert list(built.lm_dirs) == NAMES
    gpt2 = MiniBackbonesConfig.quick()
    reference = hf_tokenizer().get_vocab()
    for (name, folder), g in zip(built.lm_dirs.items(), gpt2.lms, strict=True):
        lm = AutoModelForCausalLM.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        assert type(lm) is LlamaForCausalLM, name
        c = lm.config
        assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads) == (
            g.n_layer,
            g.n_embd,
            g.n_head,
        )
        assert tok.get_vocab() == reference
        assert tok.eos_token == tok.bos_token == "<|endoftext|>" and tok.pad_token == "<pad>"
        for text in lm_sentences(0, WorldConfig(), 20):
            assert tok.decode(tok(text).input_ids) == text.lower()


def test_manifest_reports_parameters_perplexities_and_gate(built) -> None:
    m = json.loads((built.root / MANIFEST).read_text())
    assert m == built.manifest and m["family"] == "llama" and m["lms"] == NAMES
    assert m["files"] == folder_hashes(built.root)
    for name in NAMES:
        report = m["lm_report"][name]
        assert report["params"] > 0 and report["train_seconds"] >= 0
        assert report["heldout_perplexity"] > 1.0 and report["heldout_perplexity_flickr"] > 1.0
    g = m["gates"]
    assert set(g["lm_perplexity"]) == set(g["lm_perplexity_flickr"]) == set(NAMES)
    assert isinstance(g["lm_larger_is_better"], bool)
    assert g["passed"] == (g["lm_larger_is_better"] and all(g["lm_named_row_pass"].values()))


def test_second_call_reuses_the_folder_and_touches_nothing(built, capsys) -> None:
    assert not built.cached
    before = {p: p.stat().st_mtime_ns for p in built.root.rglob("*")}
    again = build_llama_lms(built.root.parent, 0, quick=True, progress=False)
    assert again.cached and again.root == built.root and again.manifest == built.manifest
    assert main(["--out", str(built.root.parent), "--quick", "--quiet"]) == 0
    assert "cached" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in built.root.rglob("*")} == before


def test_an_interrupted_build_is_cleaned_and_rebuilt_identically(built, tmp_path: Path) -> None:
    root = llama_dir(tmp_path, QUICK, 0)
    (root / "llama-base").mkdir(parents=True)  # no manifest: half written
    (root / "llama-base" / "junk").write_text("half written")
    again = build_llama_lms(tmp_path, 0, quick=True, progress=False)
    assert not again.cached and not (root / "llama-base" / "junk").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name, f"{root.name}.lock"]
    assert again.manifest["files"] == built.manifest["files"]  # deterministic weights


def test_ituning_injects_and_trains_through_the_same_model(built) -> None:
    from ituning.backbones import load_lm
    from ituning.config import ITuningConfig
    from ituning.inject import ITuningModel

    lm, tok = load_lm(str(built.lm_dirs["llama-large"]), progress=False)
    model = ITuningModel(lm, 16, ITuningConfig())
    assert model.kept_layers == list(range(lm.config.num_hidden_layers))
    assert model.bottleneck == lm.config.hidden_size // 2
    visual = torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(0))
    batch = tok(["a red circle.", "a small blue star left of a square."], padding=True)
    ids = torch.tensor(batch.input_ids)
    mask = torch.tensor(batch.attention_mask)
    labels = ids.masked_fill(mask == 0, -100)
    before_lm = {k: v.clone() for k, v in model.lm.state_dict().items()}
    before_mod = {k: v.clone() for k, v in model.module_state_dict().items()}
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    model.train()
    losses = []
    for _ in range(3):  # step 1 moves the zero-initialised up-projection only, then everything
        opt.zero_grad()
        loss = model(input_ids=ids, attention_mask=mask, visual=visual, labels=labels).loss
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        final = float(model(input_ids=ids, attention_mask=mask, visual=visual, labels=labels).loss)
    assert final < losses[0]
    after = model.module_state_dict()
    assert all(not torch.equal(after[k], before_mod[k]) for k in before_mod)
    assert all(torch.equal(v, before_lm[k]) for k, v in model.lm.state_dict().items())
    gen = model.generate(visual, max_new_tokens=4, do_sample=False)
    assert gen.shape[0] == 2
