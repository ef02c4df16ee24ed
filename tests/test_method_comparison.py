"""The report's account of how methods were compared: the searched rates and the rates the runs
actually trained at, from the committed record and the runs' params."""

from __future__ import annotations

from pathlib import Path

from test_report import PAPER, make_run, runset

from bench.report.method_comparison import method_comparison
from bench.report.settings import ReportInputs, ReportSettings
from bench.sweep import learning_rates
from bench.sweep.learning_rates import LearningRates, SearchRecord


def _record(chosen: float, scores: dict[float, float]) -> SearchRecord:
    return SearchRecord(chosen=chosen, seed=0, metric="val/cider", study="s", scores=scores)


def _section(tmp_path: Path, monkeypatch, rates: LearningRates, *runs) -> str:
    path = tmp_path / "rates.yaml"
    learning_rates.write(rates, path)
    monkeypatch.setattr(learning_rates, "LEARNING_RATES_FILE", path)
    inputs = ReportInputs(
        ReportSettings(out_dir=tmp_path), runset(*runs), PAPER, tmp_path, tmp_path
    )
    return "\n".join(method_comparison(inputs))


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
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| **140.0** |" in rows["itune"] and "| 0.006 |" in rows["itune"]
    assert "**250.0**" in rows["full"]
    # a run trained at another rate than the search chose says so
    assert "0.006 (not the searched 0.001)" in rows["full"]
    assert (
        "edge of the grid" in text and "full" in text.split("edge of the grid")[0].splitlines()[-1]
    )


def test_without_a_search_the_section_says_every_method_trains_at_the_budget_rate(
    tmp_path, monkeypatch
):
    runs = [make_run(), make_run(params={"method": "clipcap-mlp"}, specs=("baselines",))]
    text = _section(tmp_path, monkeypatch, LearningRates(), *runs)
    assert "No learning-rate search is recorded for profile `mini`" in text
    assert "python -m bench.tune" in text
