"""The README's "Several machines" commands, run for real: a PostgreSQL cluster (installed by
``nox -s tests`` where it is missing), an ``mlflow server`` on it, and three worker processes that
each believe they are a machine of their own (``bench.faults.machines``)."""

from __future__ import annotations

import os

import pytest

from bench import REPO_ROOT
from bench.faults.machines import fleet, missing_pieces
from bench.faults.several_machines import several_machines
from bench.faults.trials import Trial


@pytest.mark.slow
def test_three_machines_outlive_a_dead_one_and_restarted_servers(tiny_assets, tmp_path):
    problem = missing_pieces()
    if problem:
        pytest.skip(problem)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    trial = Trial("several machines")
    with fleet(tmp_path, tiny_assets, {**env, "PYTHONHASHSEED": "0"}) as f:
        several_machines(f, trial, down_s=4)  # raises, naming what broke, if a promise is broken
    assert any("re-run by machine" in note for note in trial.notes)
