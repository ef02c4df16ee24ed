"""The report's account of how methods were compared: the searched rates and the rates the runs
actually trained at, from the committed record and the runs' params."""

from __future__ import annotations

from pathlib import Path

from test_report import PAPER, make_run, runset
from test_tune import search_record as _record

from bench.report.method_comparison import method_comparison
from bench.report.settings import ReportInputs, ReportSettings
from bench.report.superseded import Backbones, split_superseded
from bench.sweep import learning_rates
from bench.sweep.learning_rates import LearningRates, SearchRecord


def _section(tmp_path: Path, monkeypatch, rates: LearningRates, *runs, superseded=()) -> str:
    path = tmp_path / "rates.yaml"
    learning_rates.write(rates, path)
    monkeypatch.setattr(learning_rates, "LEARNING_RATES_FILE", path)
    found = runset(*runs)
    found.superseded = list(superseded)
    inputs = ReportInputs(ReportSettings(out_dir=tmp_path), found, PAPER, tmp_path, tmp_path)
    return "\n".join(method_comparison(inputs))


def _rows(text: str) -> dict[tuple[str, str], str]:
    """(method, searched at) -> its table line."""
    cells = [line.split("|") for line in text.splitlines() if line.startswith("| ")]
    return {(c[1].strip(), c[3].strip()): "|".join(c) for c in cells}


def test_each_method_shows_its_searched_scores_and_the_rate_its_runs_used(tmp_path, monkeypatch):
    rates = (
        LearningRates()
        .with_record(
            "mini", "itune", "base", _record(6e-3, {1e-3: 120.0, 6e-3: 140.0, 1e-2: 139.0})
        )
        .with_record("mini", "full", "base", _record(1e-3, {1e-3: 250.0, 6e-3: 230.0, 1e-2: 90.0}))
    )
    runs = [
        make_run(params={"optim.lr": "0.006"}),
        make_run(params={"method": "full", "optim.lr": "0.006"}, specs=("baselines",)),
    ]
    text = _section(tmp_path, monkeypatch, rates, *runs)
    assert "optuna's grid sampler" in text and "`mini-lr-search`" in text
    assert "with the base LM (the rate chosen there is used at every LM size)" in text
    assert "never scored in the search" in text
    rows = _rows(text)
    itune, full = rows["itune", "base, seed 0"], rows["full", "base, seed 0"]
    assert "| **140.0** |" in itune and "| 0.006 |" in itune
    assert "**250.0**" in full
    # a run trained at another rate than the search chose says so
    assert "0.006 (not the searched 0.001)" in full
    assert (
        "edge of the grid" in text and "full" in text.split("edge of the grid")[0].splitlines()[-1]
    )
    assert "itune" not in text.split("edge of the grid")[0].splitlines()[-1]
    assert "The best λ" not in text  # no λ was searched


def test_a_lambda_at_the_largest_searched_is_flagged_apart_from_the_rate(tmp_path, monkeypatch):
    inner_rate = {1e-3: 120.0, 6e-3: 140.0, 1e-2: 139.0}
    rates = LearningRates().with_record(
        "mini", "itune", "base",
        _record(6e-3, inner_rate, lambda_=16.0, lambda_scores={1.0: 100.0, 16.0: 140.0}),
    )  # fmt: skip
    text = _section(tmp_path, monkeypatch, rates, make_run(params={"optim.lr": "0.006"}))
    assert "edge of the grid" not in text  # 6e-3 lies inside the rates searched
    line = next(row for row in text.splitlines() if row.startswith("The best λ"))
    assert line.startswith("The best λ of itune (base) is the largest searched")


def test_without_a_search_the_section_says_every_method_trains_at_the_budget_rate(
    tmp_path, monkeypatch
):
    runs = [make_run(), make_run(params={"method": "clipcap-mlp"}, specs=("baselines",))]
    text = _section(tmp_path, monkeypatch, LearningRates(), *runs)
    assert "No learning-rate search is recorded for profile `mini`" in text
    assert "python -m bench.tune" in text


def test_searches_at_several_sizes_give_a_row_each_with_the_rates_of_that_sizes_runs(
    tmp_path, monkeypatch
):
    rates = (
        LearningRates()
        .with_record("mini", "itune", "base", _record(1e-2, {3e-3: 120.0, 1e-2: 140.0}))
        .with_record("mini", "itune", "large", _record(3e-3, {3e-3: 150.0, 1e-2: 130.0}))
    )
    runs = [
        make_run(params={"optim.lr": "0.01"}),
        make_run("large", n_layers=8, params={"optim.lr": "0.01"}),
    ]
    stale = make_run("large", n_layers=8, params={"optim.lr": "0.006"})
    text = _section(tmp_path, monkeypatch, rates, *runs, superseded=[stale])
    assert "with each of the LM sizes base, large" in text
    rows = _rows(text)
    assert "| 0.01 |" in rows["itune", "base, seed 0"]
    assert "0.01 (not the searched 0.003)" in rows["itune", "large, seed 0"]
    assert "1 finished run(s) are left out of every table" in text and "later search" in text


def test_a_run_is_superseded_only_when_its_setting_has_runs_at_the_recorded_rate():
    rates = (
        LearningRates()
        .with_record("mini", "itune", "base", _record(1e-2, {6e-3: 1.0, 1e-2: 2.0}))
        .with_record("mini", "full", "base", _record(3e-3, {3e-3: 2.0, 1e-2: 1.0}))
    )
    new = [make_run(seed=s, params={"optim.lr": "0.01"}) for s in (0, 1)]
    old = [make_run(seed=s, params={"optim.lr": "0.006"}) for s in (0, 1, 2)]
    other = make_run(vlp=True, params={"optim.lr": "0.006"})  # no replacement: kept
    full = make_run(params={"method": "full", "optim.lr": "0.01"})  # no full run at 3e-3: kept
    unsearched = make_run(params={"method": "clipcap-mlp", "optim.lr": "0.5"})
    kept, superseded = split_superseded([*new, *old, other, full, unsearched], "mini", rates)
    assert {r.config_hash for r in superseded} == {r.config_hash for r in old}
    assert {r.config_hash for r in kept} == {r.config_hash for r in [*new, other, full, unsearched]}
    # another profile's record does not apply
    assert split_superseded(old + new, "paper", rates)[1] == []


def test_runs_on_backbones_the_profile_no_longer_builds_are_always_left_out():
    """The mini LMs rebuilt (a new set folder): a run on the old set is of another model, even with
    no run on the new one yet; the runs folder's spelling does not matter, only the set's name."""
    old_set = make_run(params={"lm.name": "runs/backbones/mini-aaa/mini-base"})
    new_set = make_run(seed=1, params={"lm.name": "/somewhere/runs/backbones/mini-bbb/mini-base"})
    large = make_run("large", n_layers=8, params={"lm.name": "runs/backbones/mini-aaa/mini-large"})
    current = Backbones({"base": "runs/backbones/mini-bbb/mini-base"})  # large: not checked
    kept, superseded = split_superseded([old_set, new_set, large], "mini", LearningRates(), current)
    assert superseded == [old_set] and kept == [new_set, large]
    # the same LM over a rebuilt vision encoder is another model too
    clip = {"lm.name": "runs/backbones/mini-bbb/mini-base", "backbones.vision": "b/mini-aaa/clip"}
    old_clip = make_run(seed=2, params=clip)
    now = Backbones(current.lms, vision="runs/backbones/mini-bbb/clip")
    assert split_superseded([new_set, old_clip], "mini", LearningRates(), now)[1] == [old_clip]
    assert split_superseded([old_set], "mini", LearningRates())[1] == []  # nothing to compare to


def test_runs_from_before_a_setting_was_added_are_the_same_setting_and_can_be_superseded():
    """A run logged before ``data.instances`` existed and one logged after (at its default) are
    seeds of one setting; an old-rate run without the new params is still replaced."""
    from bench.sweep.tracking import setting_digest

    new = {"data.instances": "None", "data.skip_bad_images": "False", "optim.lr": "0.01"}
    before = make_run(params={"optim.lr": "0.01"})
    after = make_run(seed=1, params=new)
    assert setting_digest(before.params) == setting_digest(after.params)
    assert setting_digest(after.params) != setting_digest({**after.params, "data.instances": "x"})
    rates = LearningRates().with_record("mini", "itune", "base", _record(1e-2, {1e-2: 1.0}))
    stale = make_run(params={"optim.lr": "0.006"})
    kept, superseded = split_superseded([stale, after], "mini", rates)
    assert superseded == [stale] and kept == [after]


def test_a_random_weight_control_is_said_to_train_at_its_twins_searched_rate(tmp_path, monkeypatch):
    scores = {1e-3: 1.0, 1e-2: 2.0}
    rates = (
        LearningRates()
        .with_record("mini", "itune", "base", _record(1e-3, scores))
        .with_record("mini", "itune", "smollm2", _record(1e-2, scores))
    )
    runs = [
        make_run(lm, params={"optim.lr": "0.01"}, specs=("lm_family_smollm2",))
        for lm in ("smollm2", "smollm2-random")
    ]
    text = _section(tmp_path, monkeypatch, rates, make_run(), *runs)
    assert "`smollm2-random` trains at the rate searched for `smollm2`" in text
    assert "No rate was searched" not in text
    # both LMs' runs count as trained at the searched rate: no "not the searched" remark
    assert "| 0.01 |" in _rows(text)["itune", "smollm2, seed 0"]
    assert learning_rates.chosen("mini", "itune", "smollm2-random") == 1e-2


def test_a_search_with_lambda_says_which_lambda_the_rates_scores_are_at(tmp_path, monkeypatch):
    searched = SearchRecord(
        chosen=3e-3,
        lambda_=8.0,
        seed=0,
        metric="val/cider",
        study="s",
        scores={3e-3: 408.9, 6e-3: 396.2},
        lambda_scores={1.0: 386.5, 2.0: 398.3, 8.0: 408.9},
    )
    rates = LearningRates().with_record("mini", "itune", "large", searched)
    run = make_run("large", n_layers=8, params={"optim.lr": "0.003", "lambda": "8.0"})
    text = _section(tmp_path, monkeypatch, rates, run)
    row = _rows(text)["itune", "large, seed 0, λ 8 of 1/2/8"]
    assert "**408.9**" in row and "396.2" in row
    assert "the grid is rate × λ" in text


def test_the_searched_sizes_are_named_in_one_order_whatever_the_record_s(tmp_path, monkeypatch):
    """GPT-2 sizes first, then the other families by size: the report text must not change
    between two builds of the same store (the sizes came from a set)."""
    rates = LearningRates()
    for lm in ("smollm2", "llama-large", "large", "llama-base", "base"):
        rates = rates.with_record("mini", "itune", lm, _record(6e-3, {1e-3: 1.0, 6e-3: 2.0}))
    text = _section(tmp_path, monkeypatch, rates, make_run(params={"optim.lr": "0.006"}))
    assert "each of the LM sizes base, large, llama-base, llama-large, smollm2," in text
    rows = [searched.split(",")[0] for _, searched in _rows(text) if searched != "searched at"]
    assert rows == ["base", "large", "llama-base", "llama-large", "smollm2"]
