"""Reading a profile's runs back from MLflow: what :mod:`bench.report.results` summarises.

One FINISHED run per run id (``config_hash``), the first to finish if a store from before runs
were shared holds two; failed points that never finished since; runs at a learning rate a later
search replaced, or on backbones the profile no longer builds, set apart
(:mod:`bench.report.superseded`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from bench.report.results import SPEC_PREFIX, Run, RunSet
from bench.report.superseded import Backbones, on_other_backbones, split_superseded
from bench.sweep import learning_rates, tracking
from bench.sweep.budgets import budget_of
from bench.sweep.profile import profile_label
from bench.sweep.profiles import get_profile
from bench.sweep.tracking import TrackingError
from ituning.errors import ConfigError, first_line


def load_runs(uri: str, *, profile: str, scale: str = "full") -> RunSet:
    """All runs of ``profile``/``scale``; TrackingError if the store does not exist or fails."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise TrackingError(
                f"MLflow store {db} does not exist; run the sweeps first "
                "(python -m bench.reproduce) or pass --tracking-uri / --runs-dir"
            )
    experiment = profile_label(profile, scale)
    try:
        frame = search_runs(uri, experiment)
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(
            f"MLflow tracking store {uri} cannot be read: {first_line(exc)}"
        ) from None
    out = RunSet(uri=uri, profile=profile, scale=scale)
    if frame.empty:
        return out
    frame = frame[frame["tags.config_hash"].notna()].sort_values(["start_time", "run_id"])
    finished = frame[frame["status"] == "FINISHED"]
    # One run per point; were there two FINISHED ones (a store from before runs were shared), the
    # first to finish counts.
    finished = finished.drop_duplicates("tags.config_hash", keep="first")
    done = set(finished["tags.config_hash"])
    failed = frame[frame["status"].isin(["FAILED", "KILLED"])]
    failed = failed[~failed["tags.config_hash"].isin(done)]
    failed = failed.drop_duplicates("tags.config_hash", keep="last")
    epochs = budget_of(profile, scale).epochs
    rates = learning_rates.read()

    def runs_of(rows: pd.DataFrame) -> list[Run]:
        runs = (_searched(_run(row, epochs), rates, experiment) for row in rows.to_dict("records"))
        return sorted(runs, key=lambda r: r.config_hash)

    current = _current_backbones(profile, scale)
    out.runs, out.superseded = split_superseded(runs_of(finished), experiment, rates, current)
    out.failed = [r for r in runs_of(failed) if not on_other_backbones(r, current)]
    return out


def _current_backbones(profile: str, scale: str) -> Backbones:
    """The backbones the profile trains now; none where it cannot say without its data (the paper
    profile's are hub names, never rebuilt)."""
    try:
        now = get_profile(profile, scale=scale)
    except ConfigError:
        return Backbones()
    return Backbones({size: lm.name for size, lm in now.lms.items()}, now.vision)


def _searched(run: Run, rates: learning_rates.LearningRates, label: str) -> Run:
    """``run`` knowing the λ searched for its method and LM size (what ``lambda: null`` meant)."""
    lam = rates.chosen_lambda(label, run.method, run.lm_size)
    return run if lam is None else dataclasses.replace(run, searched_lambda=lam)


def search_runs(uri: str, experiment: str) -> pd.DataFrame:
    """``mlflow.search_runs`` of one experiment in the store at ``uri`` (empty if it is absent)."""
    import mlflow

    tracking.client(uri)  # creates or migrates a SQLite store under its lock, quiets the logs
    with _tracking_uri(uri):
        found = mlflow.get_experiment_by_name(experiment)
        if found is None:
            return pd.DataFrame()
        return mlflow.search_runs([found.experiment_id], output_format="pandas")


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def _run(row: dict, budget_epochs: int | None = None) -> Run:
    """A DataFrame row of ``mlflow.search_runs`` as a :class:`Run` (``budget_epochs``: its
    profile's)."""

    def section(prefix: str) -> dict:
        return {
            k.removeprefix(prefix): v
            for k, v in row.items()
            if k.startswith(prefix) and not pd.isna(v)
        }

    tags = section("tags.")
    start, end = row.get("start_time"), row.get("end_time")
    return Run(
        mlflow_id=row["run_id"],
        config_hash=tags["config_hash"],
        status=row["status"],
        specs=tuple(
            sorted(
                k.removeprefix(SPEC_PREFIX)
                for k, v in tags.items()
                if k.startswith(SPEC_PREFIX) and v == "true"
            )
        ),
        params=section("params."),
        metrics={k: float(v) for k, v in section("metrics.").items()},
        tags=tags,
        start_ms=0 if pd.isna(start) else int(start.timestamp() * 1000),
        end_ms=0 if pd.isna(end) else int(end.timestamp() * 1000),
        budget_epochs=budget_epochs,
    )
