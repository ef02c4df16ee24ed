"""The learning-rate search: the same grid for every method (crossed with λ for I-Tuning), scored
on the validation split only, tracked in MLflow and optuna, resumable, and read back by the profile
that trains the method."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from bench.sweep import learning_rates
from bench.sweep.learning_rates import LearningRates, SearchRecord
from bench.sweep.profiles import get_profile
from bench.sweep.spec import parse_spec
from bench.tune.cli import main
from ituning.errors import ConfigError
from ituning.train import run_experiment

pytestmark = pytest.mark.slow
FAILING_LR = 3e-3
FAILING = "test_tune:fails_at_one_rate"


def fails_at_one_rate(config, out_dir, **kwargs):
    """The real trainer, except I-Tuning at :data:`FAILING_LR` (a worker imports it by name)."""
    if config.method == "itune" and config.optim.lr == FAILING_LR:
        raise RuntimeError("diverged")
    return run_experiment(config, out_dir, **kwargs)


def _tune(runs: Path, record: Path, *extra: str) -> int:
    args = ["--scale", "tiny", "--runs-dir", str(runs), "--record", str(record), "--quiet"]
    grid = ["--grid", "1e-3", str(FAILING_LR), "--lambdas", "1", "2"]
    grid += ["--methods", "itune", "clipcap-mlp"]
    return main([*args, "--workers", "2", *grid, *extra])


def _search_runs(runs: Path) -> list:
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mini-tiny-lr-search")
    return client.search_runs([exp.experiment_id]) if exp else []


def test_each_method_searches_the_same_grid_on_validation_resumes_and_records(
    runs_dir, tmp_path, capsys
):
    record = tmp_path / "rates.yaml"
    # I-Tuning fails at one rate (both its λs): the search fails, naming each failed trial, and
    # chooses nothing from an incomplete grid
    assert _tune(runs_dir, record, "--executor", FAILING) == 1
    err = capsys.readouterr().err
    assert "2 trial(s) failed (itune lr 0.003 λ " in err and "RuntimeError: diverged" in err
    assert "rerun the same command" in err and "Traceback" not in err
    assert not record.exists()
    statuses = sorted(r.info.status for r in _search_runs(runs_dir))
    assert statuses == ["FAILED"] * 2 + ["FINISHED"] * 4  # I-Tuning 2 x 2, ClipCap 2 rates

    # a cell left waiting by a search over another grid is not run by this one
    storage = f"sqlite:///{runs_dir / 'optuna.db'}"
    (itune_study,) = [
        s.study_name
        for s in optuna.get_all_study_summaries(storage)
        if s.study_name.startswith("mini-tiny-lr-itune-")
    ]
    optuna.load_study(study_name=itune_study, storage=storage).enqueue_trial(
        {"lr": 5e-4, "lambda": 1.0}
    )

    # the rerun trains only the failed cells, then records every method's search
    assert _tune(runs_dir, record) == 0
    assert "learning-rate search: 2 trial(s) to run" in capsys.readouterr().out
    (stray,) = [
        t
        for t in optuna.load_study(study_name=itune_study, storage=storage).trials
        if t.system_attrs.get("fixed_params", {}).get("lr") == 5e-4
    ]
    assert stray.params == {} and stray.state == optuna.trial.TrialState.FAIL  # never trained
    rates = learning_rates.read(record)
    for method in ("itune", "clipcap-mlp"):
        searched = rates.searched("mini-tiny", method)["base"]
        assert sorted(searched.scores) == [1e-3, FAILING_LR]
        assert (searched.seed, searched.metric) == (0, "val/cider")
        study = optuna.load_study(study_name=searched.study, storage=storage)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        # the record keeps 4 decimals of each validation score
        cells = {(t.params["lr"], t.params.get("lambda")): round(t.value, 4) for t in done}
        assert cells[searched.chosen, searched.lambda_] == max(cells.values())  # a best cell
        at_lambda = {lr: v for (lr, lam), v in cells.items() if lam == searched.lambda_}
        assert searched.scores == at_lambda
        sampled = [t for t in study.trials if "fixed_params" not in t.system_attrs]  # not retries
        assert sampled and all("grid_id" in t.system_attrs for t in sampled)  # the grid sampler
    itune = rates.searched("mini-tiny", "itune")["base"]
    assert set(itune.lambda_scores) == {1.0, 2.0} and "-lambda-" in itune.study
    clipcap = rates.searched("mini-tiny", "clipcap-mlp")["base"]  # ClipCap has no λ to search
    assert clipcap.lambda_ is None and clipcap.lambda_scores == {} and "lambda" not in clipcap.study
    assert "lambda_scores" in record.read_text() and record.read_text().count("lambda:") == 1

    finished = [r for r in _search_runs(runs_dir) if r.info.status == "FINISHED"]
    assert len(finished) == 6
    for run in finished:  # the search never looks at the test or NoCaps-style splits
        assert "val/cider" in run.data.metrics
        assert not any(k.startswith(("test/", "nocaps")) for k in run.data.metrics)
        assert float(run.data.params["optim.lr"]) == float(run.data.tags["lr"])
        assert run.data.tags["optuna.study"].startswith("mini-tiny-lr-")
        if "lambda" in run.data.tags:  # the λ trained is the λ tagged
            assert float(run.data.params["lambda"]) == float(run.data.tags["lambda"])
    assert sum("lambda" in r.data.tags for r in finished) == 4

    # a third call finds every cell scored: nothing trains, the record is the same
    before = record.read_text()
    assert _tune(runs_dir, record) == 0
    assert len(_search_runs(runs_dir)) == 8 and record.read_text() == before


def test_a_third_lm_size_can_be_searched_after_two(runs_dir, tmp_path, monkeypatch, capsys):
    """With rates recorded at two sizes, the profile refuses to guess a third; the search that
    settles it must not be refused the same way: it reaches its trial (which fails by design
    here, so that nothing trains)."""
    record = tmp_path / "rates.yaml"
    rates = LearningRates()
    for lm in ("base", "medium"):
        rates = rates.with_record("mini-tiny", "itune", lm, search_record(1e-3, {1e-3: 1.0}))
    learning_rates.write(rates, record)
    monkeypatch.setattr(learning_rates, "LEARNING_RATES_FILE", record)
    args = ["--scale", "tiny", "--runs-dir", str(runs_dir), "--record", str(record), "--quiet"]
    args += ["--lm", "large", "--methods", "itune", "--grid", str(FAILING_LR), "--lambdas", "1"]
    assert main([*args, "--workers", "1", "--executor", FAILING]) == 1
    err = capsys.readouterr().err
    assert "itune lr 0.003: RuntimeError: diverged" in err and "searched at LM sizes" not in err


def search_record(chosen: float, scores: dict[float, float], **lam) -> SearchRecord:
    """A search's record at seed 0 (``lam``: ``lambda_`` and ``lambda_scores`` where λ was
    searched)."""
    return SearchRecord(chosen=chosen, seed=0, metric="val/cider", study="s", scores=scores, **lam)


def test_a_point_that_leaves_lambda_to_the_search_trains_at_the_searched_one(tmp_path, monkeypatch):
    path = tmp_path / "rates.yaml"
    searched = search_record(3e-3, {3e-3: 9.0}, lambda_=4.0, lambda_scores={1.0: 5.0, 4.0: 9.0})
    rates = (
        LearningRates()
        .with_record("mini-tiny", "itune", "large", searched)
        .with_record("mini-tiny", "itune", "base", search_record(1e-3, {1e-3: 9.0}))  # rate only
        .with_record("mini-tiny", "clipcap-mlp", "large", search_record(1e-3, {1e-3: 9.0}))
    )
    learning_rates.write(rates, path)
    assert learning_rates.read(path) == rates
    monkeypatch.setattr(learning_rates, "LEARNING_RATES_FILE", path)
    profile = get_profile("mini", runs_dir=tmp_path / "runs", scale="tiny")
    spec = parse_spec(
        "name: m\nbase: {lambda: null}\naxes: {method: [itune, clipcap-mlp], lm: [base, large]}\n"
        "extra: [{lm: large, lambda: 2}]\n"
    )
    got = {
        (p.point["method"], p.point["lm"], p.point["lambda"]): (
            p.config.optim.lr,
            p.config.itune.scale,
        )
        for p in profile.plan(spec)
    }
    assert got == {
        ("itune", "base", None): (1e-3, 1.0),  # rate searched without λ: λ = 1
        ("itune", "large", None): (3e-3, 4.0),  # the searched λ with the searched rate
        ("itune", "large", 2.0): (3e-3, 2.0),  # a spec's own λ wins (the λ ablation)
        ("clipcap-mlp", "base", None): (1e-3, 1.0),  # no λ: ClipCap's config is unchanged
        ("clipcap-mlp", "large", None): (1e-3, 1.0),
    }
    plan = next(
        p for p in profile.plan(spec) if p.point["lm"] == "large" and p.point["lambda"] is None
    )
    assert plan.axis_params()["lambda"] == 4.0  # MLflow logs the λ trained, not "searched"
    assert searched.at_edge()  # λ 4 is the largest tried: a larger one might do better
    inner_rate = {1e-3: 1.0, 3e-3: 9.0, 1e-2: 2.0}
    inner = search_record(
        3e-3, inner_rate, lambda_=4.0, lambda_scores={1.0: 5.0, 4.0: 9.0, 8.0: 7.0}
    )
    assert not inner.at_edge()
    top_lambda = search_record(3e-3, inner_rate, lambda_=4.0, lambda_scores={1.0: 5.0, 4.0: 9.0})
    assert top_lambda.lambda_at_edge() and not top_lambda.rate_at_edge()
    assert search_record(1e-2, inner_rate).rate_at_edge()  # no λ searched: the rate alone decides
    assert (
        search_record(3e-3, inner_rate, lambda_=1.0, lambda_scores={1.0: 9.0, 2.0: 5.0}).at_edge()
        is False
    )


def test_the_profile_trains_each_method_at_the_rate_searched_for_its_lm_size(tmp_path, monkeypatch):
    path = tmp_path / "rates.yaml"
    rates = (
        LearningRates()
        .with_record("mini-tiny", "full", "base", search_record(2e-4, {2e-4: 9.0, 1e-3: 1.0}))
        .with_record("mini-tiny", "clipcap-mlp", "base", search_record(1e-3, {1e-3: 9.0}))
        .with_record("mini-tiny", "clipcap-mlp", "large", search_record(3e-4, {3e-4: 9.0}))
    )
    learning_rates.write(rates, path)
    monkeypatch.setattr(learning_rates, "LEARNING_RATES_FILE", path)
    profile = get_profile("mini", runs_dir=tmp_path / "runs", scale="tiny")
    spec = parse_spec("name: m\naxes: {method: [itune, full, clipcap-mlp], lm: [base, large]}\n")
    lrs = {(p.point["method"], p.point["lm"]): p.config.optim.lr for p in profile.plan(spec)}
    assert lrs == {
        ("itune", "base"): profile.budget.lr,  # never searched: the budget's rate
        ("itune", "large"): profile.budget.lr,
        ("full", "base"): 2e-4,
        ("full", "large"): 2e-4,  # searched at one size only: that rate at every size
        ("clipcap-mlp", "base"): 1e-3,
        ("clipcap-mlp", "large"): 3e-4,  # searched at this size: its own rate
    }
    # searched at two sizes but not this one: one line saying which search to run
    medium = parse_spec("name: m\naxes: {method: [clipcap-mlp], lm: [medium]}\n")
    with pytest.raises(ConfigError, match=r"searched at LM sizes base, large but not medium: run"):
        profile.plan(medium)
    # the search's own trials and a spec's override still set the rate they name
    forced = parse_spec("name: m\naxes: {method: [full]}\noverrides: {optim: {lr: 0.05}}\n")
    assert [p.config.optim.lr for p in profile.plan(forced)] == [0.05]
    # the full-scale profile has no record in this file: budget rate there too
    full_scale = get_profile("mini", runs_dir=tmp_path / "runs")
    plain = parse_spec("name: m\naxes: {method: [itune, full]}\n")
    assert [p.config.optim.lr for p in full_scale.plan(plain)] == [full_scale.budget.lr] * 2


def test_the_record_round_trips_and_says_when_the_best_rate_is_at_the_grids_edge(tmp_path):
    path = tmp_path / "rates.yaml"
    inner = search_record(1e-3, {1e-4: 1.0, 1e-3: 5.0, 1e-2: 2.0})
    edge = search_record(1e-2, {1e-4: 1.0, 1e-3: 5.0, 1e-2: 6.0})
    rates = (
        LearningRates()
        .with_record("mini", "itune", "base", inner)
        .with_record("mini", "full", "base", edge)
    )
    learning_rates.write(rates, path)
    assert learning_rates.read(path) == rates
    assert learning_rates.chosen("mini", "full", "large", path) == 1e-2
    assert learning_rates.chosen("paper", "full", "base", path) is None
    assert not inner.at_edge() and edge.at_edge()
    assert "do not edit" in path.read_text()
    # a second search at another size keeps the first
    both = rates.with_record("mini", "full", "large", inner)
    assert set(both.searched("mini", "full")) == {"base", "large"}


def test_a_damaged_record_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "rates.yaml"
    path.write_text("mini:\n  itune:\n    base: {chosen: -1}\n")
    with pytest.raises(learning_rates.ConfigError, match=r"rates\.yaml: .*chosen"):
        learning_rates.read(path)


def test_trial_workers_keep_the_profiles_thread_count():
    """One thread per worker at mini (two two-thread workers on two cores ran 6x slower)."""
    from concurrent.futures import ProcessPoolExecutor

    import torch

    from bench.sweep import processes
    from bench.tune.search import _init

    ctx, inherited = processes.worker_processes(), processes.Inherited()
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=_init, initargs=(1, inherited)) as pool:
        assert pool.submit(torch.get_num_threads).result() == 1
