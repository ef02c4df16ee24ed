"""``bench.reproduce`` end to end at tiny size: backbones, data, sweeps, report; then nothing new.

The first call is the tiny reproduction shared with ``test_report.py`` (three settings at two
seeds: six runs, two specs); the second goes through the CLI and must train nothing, track
nothing and rebuild the same files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _tiny_reproduction import SHARES_IT, tiny_reproduction

from bench.report.store import load_runs
from bench.reproduce import main
from bench.sweep import tracking

STEP = re.compile(r"^\[(\d+/\d+)\] ")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return tiny_reproduction(tmp_path_factory)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow
@SHARES_IT
def test_first_call_builds_assets_runs_sweeps_and_reports(tiny) -> None:
    result = tiny.result
    assert not result.failed
    assert len(result.trained) == 6  # table1's three settings x two seeds; dropping shares two
    assert set(result.sweeps) == {"table1", "dropping"}
    assert result.report == tiny.out / "README.md" and result.report.is_file()
    assert (tiny.runs_dir / "backbones").is_dir() and (tiny.runs_dir / "data").is_dir()
    steps = [m.group(1) for m in map(STEP.match, tiny.log) if m]
    assert steps == ["1/3", "2/3", "3/3"]
    # one MLflow run per trained point; dropping's two points are table1's runs, tagged by both
    client = tracking.client(tiny.uri)
    exp = client.get_experiment_by_name("mini-tiny")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    # a setting's seeds share one 'setting' tag (MLflow's group-by), its seed-free name first
    settings = {r.data.tags["setting"] for r in runs}
    assert len(settings) == 3 and any(t.startswith("large r=d/2 drop=0.5 ·") for t in settings)
    assert {r.data.tags["hardware.threads"] for r in runs} == {"1"}
    shared = client.search_runs([exp.experiment_id], tracking.spec_filter("dropping"))
    assert len(shared) == 2 and all(r.data.tags["spec.table1"] == "true" for r in shared)


@pytest.mark.slow
@SHARES_IT
def test_second_call_runs_nothing_and_rebuilds_the_same_report(tiny, capsys) -> None:
    before = _files(tiny.out)
    runs_before = load_runs(tiny.uri, profile="mini", scale="tiny")
    args = ["--tiny", "--quiet", "--runs-dir", str(tiny.runs_dir), "--out", str(tiny.out)]
    assert main([*args, "--sweeps", *map(str, tiny.spec_paths)]) == 0
    out = capsys.readouterr().out
    assert "trained 0 new points, 0 failed" in out
    assert "sweep dropping (profile mini-tiny): 2 points, 2 already finished" in out
    assert "queued 0 of 6 distinct points" in out
    after = _files(tiny.out)
    assert after.keys() == before.keys()
    changed = [name for name in before if before[name] != after[name]]
    assert not changed, f"rebuilt report differs in {changed}"
    runs_after = load_runs(tiny.uri, profile="mini", scale="tiny")
    assert [r.mlflow_id for r in runs_after.runs] == [r.mlflow_id for r in runs_before.runs]


def test_unknown_sweep_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["--tiny", "--sweeps", "no-such-sweep", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no-such-sweep: no such sweep spec") and "\n" not in err
    assert not (tmp_path / "mlflow.db").exists()


def test_paper_profile_needs_a_data_root(tmp_path: Path, capsys) -> None:
    assert main(["--profile", "paper", "--runs-dir", str(tmp_path)]) == 2
    assert "--data-root" in capsys.readouterr().err
