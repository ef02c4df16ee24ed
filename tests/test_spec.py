"""Sweep specs: schema errors (one line naming file, field and what is allowed), grid expansion,
resolution under the paper profile (no weights, no data needed), and the dry run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import SPECS_DIR
from bench.sweep.axes import Bottleneck, Drop
from bench.sweep.cli import main
from bench.sweep.profiles import get_profile
from bench.sweep.spec import load_spec, parse_spec
from ituning.errors import ConfigError

OK = "name: t\naxes: {lm: [base]}\n"

BAD_SPECS = [
    ("top-level list", "- 1\n", "x.yaml: expected a mapping with keys name, description"),
    (
        "unknown key",
        OK + "axis: {}\n",
        "x.yaml: axis: unknown key (allowed: name, description, base",
    ),
    ("missing name", "axes: {lm: [base]}\n", "x.yaml: name: expected a name of letters"),
    ("bad name", "name: 'a b'\naxes: {lm: [base]}\n", "x.yaml: name: expected a name of letters"),
    (
        "no axes",
        "name: t\n",
        "x.yaml: axes: expected a mapping of one or more of method, lm, lambda",
    ),
    (
        "unknown axis",
        "name: t\naxes: {depth: [1]}\n",
        "x.yaml: axes.depth: unknown key (allowed: method, lm, lambda, bottleneck, drop, vlp, dataset, seed)",
    ),
    (
        "empty axis",
        "name: t\naxes: {seed: []}\n",
        "x.yaml: axes.seed: empty axis; give at least one value",
    ),
    (
        "duplicate value",
        "name: t\naxes: {seed: [1, 1]}\n",
        "x.yaml: axes.seed[1]: duplicate value 1",
    ),
    (
        "unknown lm",
        "name: t\naxes: {lm: [huge]}\n",
        "x.yaml: axes.lm[0]: unknown LM 'huge' (allowed: base, medium, large, llama-base, "
        "llama-medium, llama-large, smollm2, smollm2-random)",
    ),
    (
        "seed type",
        "name: t\naxes: {seed: [zero]}\n",
        "x.yaml: axes.seed[0]: expected an integer >= 0, got 'zero'",
    ),
    (
        "negative seed",
        "name: t\naxes: {seed: [-1]}\n",
        "x.yaml: axes.seed[0]: expected an integer >= 0, got -1",
    ),
    (
        "vlp type",
        "name: t\naxes: {vlp: [yes please]}\n",
        "x.yaml: axes.vlp[0]: expected true or false, got 'yes please'",
    ),
    (
        "lambda type",
        "name: t\naxes: {lambda: [big]}\n",
        "x.yaml: axes.lambda[0]: expected null (the searched λ) or a positive number, got 'big'",
    ),
    (
        "drop as count",
        "name: t\naxes: {drop: [18]}\n",
        "x.yaml: axes.drop[0]: expected a fraction of depth in [0, 1), got 18; write {layers: 18} for an absolute count",
    ),
    (
        "drop = 1",
        "name: t\naxes: {drop: [1.0]}\n",
        "x.yaml: axes.drop[0]: expected a fraction of depth in [0, 1), got 1.0",
    ),
    (
        "drop layers < 0",
        "name: t\naxes: {drop: [{layers: -2}]}\n",
        "x.yaml: axes.drop[0].layers: expected an integer >= 0, got -2",
    ),
    (
        "drop bad key",
        "name: t\naxes: {drop: [{count: 2}]}\n",
        "x.yaml: axes.drop[0]: expected {layers: N}, got keys ['count']",
    ),
    (
        "bottleneck 0",
        "name: t\naxes: {bottleneck: [0]}\n",
        "x.yaml: axes.bottleneck[0]: expected null, a fraction of d_lm in (0, 4] or {width: N}, got 0",
    ),
    (
        "bottleneck width",
        "name: t\naxes: {bottleneck: [64]}\n",
        "write {width: 64} for an absolute width",
    ),
    (
        "base type",
        "name: t\nbase: [lm]\naxes: {lm: [base]}\n",
        "x.yaml: base: expected a mapping of axis values, got a list",
    ),
    (
        "base value",
        "name: t\nbase: {lm: tiny}\naxes: {seed: [0]}\n",
        "x.yaml: base.lm: unknown LM 'tiny'",
    ),
    (
        "extra type",
        OK + "extra: {lm: base}\n",
        "x.yaml: extra: expected a list of points, got a mapping",
    ),
    ("extra key", OK + "extra: [{size: large}]\n", "x.yaml: extra[0].size: unknown key"),
    (
        "empty exclude",
        OK + "exclude: [{}]\n",
        "x.yaml: exclude[0]: an empty exclusion would remove every point",
    ),
    (
        "exclude all",
        OK + "exclude: [{lm: base}]\n",
        "x.yaml: exclude: the exclusions remove every point of the grid",
    ),
    (
        "override unknown",
        OK + "overrides: {eval.bogus: 1}\n",
        "x.yaml: overrides.eval.bogus: unknown setting (allowed here: splits, nocaps, beam",
    ),
    (
        "override top unknown",
        OK + "overrides: {epoch: 3}\n",
        "x.yaml: overrides.epoch: unknown setting (allowed here: method, itune, optim, eval, epochs",
    ),
    (
        "override axis-owned",
        OK + "overrides: {itune.drop_first: 3}\n",
        "x.yaml: overrides.itune.drop_first: set by the 'drop' axis, not by an override",
    ),
    (
        "override profile-owned",
        OK + "overrides: {backbones: {lm: gpt2}}\n",
        "x.yaml: overrides.backbones.lm: set by the profile (--profile), not by a spec",
    ),
    (
        "override value",
        OK + "overrides: {eval.beam: 0}\n",
        "x.yaml: overrides.eval.beam: Input should be greater than or equal to 1",
    ),
    (
        "override type",
        OK + "overrides: {epochs: many}\n",
        "x.yaml: overrides.epochs: Input should be a valid integer",
    ),
    (
        "python tag",
        "name: !!python/object/apply:os.system [echo hi]\naxes: {lm: [base]}\n",
        "x.yaml: line 1: YAML tag !!python/object/apply:os.system is not allowed; a spec is plain data",
    ),
    (
        "duplicate key",
        "name: t\nname: u\naxes: {lm: [base]}\n",
        "x.yaml: line 2: duplicate key 'name'",
    ),
    ("bad yaml", "name: [t\n", "x.yaml: line 2: not valid YAML"),
]


@pytest.mark.parametrize(("case", "text", "message"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_fails_with_one_line_naming_file_and_field(case, text, message):
    with pytest.raises(ConfigError) as info:
        parse_spec(text, source="x.yaml")
    msg = str(info.value)
    assert message in msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: sweep spec not found"):
        load_spec(tmp_path / "nope.yaml")


def test_grid_is_the_product_minus_exclusions_plus_extras():
    spec = parse_spec(
        """
name: g
base: {lm: base, seed: 3}
axes: {lm: [base, medium, large], vlp: [false, true]}
exclude: [{lm: base, vlp: true}]
extra: [{lm: large, vlp: true, drop: 0.5}, {lm: medium}]   # the second repeats a grid point
"""
    )
    points = spec.points()
    assert [(p["lm"], p["vlp"], p["drop"]) for p in points] == [
        ("base", False, Drop(fraction=0.0)),
        ("medium", False, Drop(fraction=0.0)),
        ("medium", True, Drop(fraction=0.0)),
        ("large", False, Drop(fraction=0.0)),
        ("large", True, Drop(fraction=0.0)),
        ("large", True, Drop(fraction=0.5)),
    ]
    assert {p["seed"] for p in points} == {3}


def test_fractions_and_absolute_counts_resolve_per_depth():
    assert Drop(fraction=0.5).resolve(36) == 18
    assert Drop(fraction=0.5).resolve(6) == 3
    assert Drop(fraction=0.25).resolve(36) == 9
    assert Drop(layers=18).resolve(36) == 18
    assert Bottleneck().resolve(1280) == 640  # the paper's d_lm / 2
    assert Bottleneck(fraction=0.25).resolve(768) == 192
    assert Bottleneck(width=64).resolve(768) == 64
    # null and 0.5 are the same point (so they are one run)
    assert (
        parse_spec("name: t\naxes: {bottleneck: [null]}").points()
        == parse_spec("name: t\naxes: {bottleneck: [0.5]}").points()
    )


@pytest.fixture(scope="module")
def paper():
    return get_profile("paper", data_root="data", runs_dir="runs")


def test_paper_profile_reproduces_the_papers_parameter_counts(paper):
    plans = paper.plan(load_spec(SPECS_DIR / "table1.yaml"))
    got = {
        (p.point["lm"], p.point["vlp"], p.resolved("drop")): p.arch.trainable_params for p in plans
    }
    assert round(got[("base", False, 0)] / 1e6, 2) == 14.18
    assert round(got[("medium", True, 0)] / 1e6, 2) == 44.10
    assert round(got[("large", True, 0)] / 1e6, 2) == 94.49
    assert round(got[("large", True, 18)] / 1e6, 2) == 47.24
    coco = [p for p in plans if p.point["dataset"] == "coco"]
    cfg = next(p.config for p in coco if p.resolved("drop") == 18)
    assert (cfg.backbones.lm, cfg.itune.drop_first, cfg.itune.bottleneck) == ("gpt2-large", 18, 640)
    assert (cfg.batch_captions, cfg.epochs, cfg.vlp_epochs, cfg.eval.beam) == (4096, 30, 10, 5)
    assert cfg.data.captions == Path("data/coco/dataset_coco.json")
    assert len({p.run_id for p in plans}) == 42  # 7 rows x 2 datasets x 3 seeds


def test_table1_and_table2_share_their_no_vlp_runs(paper):
    t1 = {p.run_id for p in paper.plan(load_spec(SPECS_DIR / "table1.yaml"))}
    t2 = {p.run_id for p in paper.plan(load_spec(SPECS_DIR / "table2.yaml"))}
    assert len(t1 & t2) == 9 and len(t2) == 12  # 3 seeds of 3 shared and 4 table2 rows


#: Specs of LMs only the mini profile has (SmolLM2 with random weights): one line under paper.
MINI_ONLY_SPECS = {"lm_family_smollm2"}


def test_every_shipped_spec_resolves_under_paper(paper):
    names = sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))
    assert {"table1", "table2", "dropping", "lambda", "bottleneck", "vlp", "smoke"} <= set(names)
    assert {"lm_family", *MINI_ONLY_SPECS} <= set(names)
    for name in names:
        spec = load_spec(SPECS_DIR / f"{name}.yaml")
        if name in MINI_ONLY_SPECS:
            with pytest.raises(ConfigError, match=r"lm: 'smollm2-random' is not an LM of profile"):
                paper.plan(spec)
        else:
            assert paper.plan(spec)


def test_dropping_every_layer_is_refused_for_that_depth(paper):
    spec = parse_spec(
        "name: t\naxes: {lm: [large]}\nextra: [{lm: base, drop: {layers: 12}}]\n", source="x.yaml"
    )
    with pytest.raises(ConfigError) as info:
        paper.plan(spec)
    assert str(info.value) == (
        "x.yaml: point [base r=d/2 drop=12L s0]: drop: {'layers': 12} means 12 of the 12 "
        "layers of gpt2 (profile paper): drop_first=12 removes every module of a 12-layer LM; "
        "use a value below 12 (as a fraction of depth: below 0.958)"
    )
    spec = parse_spec("name: t\naxes: {drop: [0.99]}\n", source="x.yaml")
    with pytest.raises(ConfigError, match=r"drop: 0.99 means 12 of the 12 layers"):
        paper.plan(spec)


def test_override_reaches_the_config(paper):
    spec = parse_spec(OK + "overrides: {eval: {beam: 2}, itune.attn_scaling: none}\n")
    (plan,) = paper.plan(spec)
    assert plan.config.eval.beam == 2 and plan.config.itune.attn_scaling == "none"


def test_paper_profile_names_the_missing_data(tmp_path):
    with pytest.raises(ConfigError, match=r"profile paper needs --data-root DIR"):
        get_profile("paper")
    profile = get_profile("paper", data_root=tmp_path / "absent")
    plans = profile.plan(load_spec(SPECS_DIR / "table2.yaml"))
    found = profile.problems(plans)
    assert re.search(r"--data-root .*absent: no such folder", found[0])
    (tmp_path / "coco").mkdir()
    found = get_profile("paper", data_root=tmp_path).problems(plans)
    assert found[:2] == [
        f"{tmp_path}/coco/dataset_coco.json: missing; put Karpathy's COCO split file there "
        "(data root layout: bench/sweep/paper_profile.py)",
        f"{tmp_path}/coco/images: missing; put COCO 2014 images (train2014/, val2014/) there "
        "(data root layout: bench/sweep/paper_profile.py)",
    ]
    # and, in the same round, each LM size and the vision encoder the cache lacks
    assert any(
        line.startswith("language model gpt2-large: not in the Hugging Face cache")
        for line in found
    )


def test_cli_dry_run_prints_runs_with_layer_counts_and_params(capsys, tmp_path):
    rc = main(
        [
            "dropping",
            "--profile",
            "paper",
            "--data-root",
            "data",
            "--runs-dir",
            str(tmp_path),
            "--dry-run",
            "--no-estimate",  # timing GPT-2 large on a CPU is not this test's business
        ]
    )
    out, err = capsys.readouterr()
    # the plan is printed although the data is not in place; then the problems, and exit 2
    assert "0.5 -> 18" in out and "0.75 -> 27" in out
    assert "47.24M (47,243,520)" in out
    assert "12 runs" in out
    assert rc == 2 and err.startswith("error: --data-root data: no such folder")
    assert not any(tmp_path.iterdir())  # a dry run touches no store


def test_table1_lists_every_row_on_both_datasets_at_the_paper_profile(capsys, tmp_path):
    argv = ["table1", "--profile", "paper", "--data-root", "data", "--runs-dir", str(tmp_path)]
    assert main([*argv, "--dry-run", "--no-estimate"]) == 2  # the data is not in place
    out = capsys.readouterr().out
    # 3 LM sizes x VLP on/off x 2 datasets x 3 seeds, and Dropping (large, VLP) on each x 3 seeds
    assert "42 runs" in out
    rows = [line for line in out.splitlines() if "(dataset_" in line]
    assert sum("flickr30k (dataset_flickr30k.json)" in r for r in rows) == 21
    assert sum("coco (dataset_coco.json)" in r for r in rows) == 21


def test_runs_from_before_the_dataset_axis_are_coco_runs_of_the_same_setting():
    from bench.report.results import Run
    from bench.sweep.tracking import setting_digest

    old = {"lm": "base", "vlp": "False", "seed": "0", "lambda": "1.0"}
    assert setting_digest(old) == setting_digest({**old, "dataset": "coco"})
    assert setting_digest(old) != setting_digest({**old, "dataset": "flickr30k"})
    assert Run("m", "h", "FINISHED", (), old, {}, {}, 0).dataset == "coco"


def test_cli_invalid_spec_is_one_error_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\naxes: {drop: [18]}\n")
    rc = main([str(bad), "--runs-dir", str(tmp_path), "--profile", "paper", "--data-root", "d"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines() == [
        f"error: {bad}: axes.drop[0]: expected a fraction of depth in [0, 1), got 18; "
        "write {layers: 18} for an absolute count"
    ]


def test_lambda_below_one_is_refused_by_the_librarys_rule_unless_overridden(paper):
    spec = parse_spec("name: t\naxes: {lambda: [0.5]}\n", source="x.yaml")
    with pytest.raises(ConfigError) as info:
        paper.plan(spec)
    assert str(info.value) == (
        "x.yaml: point [base λ=0.5 r=d/2 drop=0 s0]: itune: scale (lambda) = 0.5 < 1; the paper "
        "requires lambda >= 1 (set allow_scale_below_one=true to run it anyway)"
    )
    allowed = parse_spec(
        "name: t\naxes: {lambda: [0.5]}\noverrides: {itune.allow_scale_below_one: true}\n"
    )
    assert paper.plan(allowed)[0].config.itune.scale == 0.5


def test_extras_take_every_seed_and_seeds_option_replaces_the_axis():
    spec = parse_spec(
        "name: t\naxes: {lm: [base], seed: [0, 1, 2]}\nextra:\n  - {lm: large, drop: 0.5}\n"
        "  - {lm: medium, seed: 7}\n"
    )
    labels = [p.label() for p in spec.points()]
    assert sum(lbl.startswith("large") for lbl in labels) == 3  # the extra, at each seed
    assert [lbl for lbl in labels if lbl.startswith("medium")] == ["medium r=d/2 drop=0 s7"]
    five = spec.with_seeds(5)
    assert {p["seed"] for p in five.points()} == set(range(5))
    assert len(five.points()) == 15  # base, large and medium, each at seeds 0-4
    assert spec.points()[0].label(seed=False) == "base r=d/2 drop=0"
    with pytest.raises(ConfigError, match="--seeds must be >= 1"):
        spec.with_seeds(0)


def test_clipcaps_prefix_and_the_longest_caption_fit_the_mini_lms_positions(tmp_path):
    """ClipCap puts its prefix before the caption in the LM's positions: at the mini budget the
    prefix, the longest caption and its end token must fit (a run refuses otherwise)."""
    mini = get_profile("mini", runs_dir=tmp_path, scale="full")
    spec = "name: t\naxes: {method: [clipcap-mlp, clipcap-transformer], lm: [base, large]}\n"
    for plan in mini.plan(parse_spec(spec)):
        cfg = plan.config
        positions = mini.lm_architecture(cfg.backbones.lm).n_positions
        assert cfg.clipcap.prefix_length + cfg.max_caption_tokens + 1 <= positions, plan.point
