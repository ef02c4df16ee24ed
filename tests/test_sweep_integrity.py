"""Exit statuses that tell the truth, and "finished" that is checked before it is trusted.

End to end at tiny size against the real stores: a worker SIGKILLed in the middle of a point, a
runs folder on a full disk (a real 1.2 MB tmpfs, when this machine lets us mount one), and the
finished points' results and checkpoints deleted or corrupted between two sweeps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import link_tiny_assets
from mlflow import MlflowClient

from bench.faults.lost_results import flip_byte
from bench.faults.worker_death import DYING_SEED, EXECUTOR
from bench.sweep import queue as q
from bench.sweep.cli import main
from bench.sweep.profiles import get_profile
from bench.sweep.spec import parse_spec

pytestmark = pytest.mark.slow
TWO_SEEDS = "name: two\naxes: {seed: [0, 1]}\n"


def _write_spec(tmp_path: Path, text: str = TWO_SEEDS) -> Path:
    path = tmp_path / "two.yaml"
    path.write_text(text)
    return path


def _digests(runs: Path, spec: Path) -> dict[int, str]:
    profile = get_profile("mini", runs_dir=runs, scale="tiny")
    return {p.point["seed"]: p.run_id for p in profile.plan(parse_spec(spec.read_text()))}


def _runs(runs: Path) -> list:
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mini-tiny")
    return client.search_runs([exp.experiment_id]) if exp else []


def _statuses(runs: Path, digest: str) -> list[str]:
    return sorted(r.info.status for r in _runs(runs) if r.data.tags["config_hash"] == digest)


def _sweep(spec: Path, runs: Path, *extra: str) -> int:
    return main([str(spec), "--scale", "tiny", "--runs-dir", str(runs), "--quiet", *extra])


def test_a_worker_killed_mid_point_fails_the_sweep_naming_the_point(runs_dir, tmp_path, capsys):
    spec = _write_spec(tmp_path)
    digests = _digests(runs_dir, spec)
    rc = _sweep(spec, runs_dir, "--workers", "2", "--executor", EXECUTOR)
    out, err = capsys.readouterr()
    dying = digests[DYING_SEED]
    assert rc == 1, out + err  # was 0: a dead worker's point was counted "pending"
    assert f"failed {dying}" in out and "its worker died" in out
    assert "still queued or running elsewhere" not in out
    assert "worker(s) died" in err
    assert _statuses(runs_dir, digests[0]) == ["FINISHED"]

    assert _sweep(spec, runs_dir, "--workers", "1") == 0  # the fault gone: finished once
    assert _statuses(runs_dir, dying).count("FINISHED") == 1
    assert "RUNNING" not in _statuses(runs_dir, dying)
    storage = q.open_storage(f"sqlite:///{runs_dir / 'optuna.db'}")
    assert not q.WorkQueue(storage, "mini-tiny").trials((q.TrialState.RUNNING,))


def test_lost_or_corrupt_results_and_checkpoints_are_restored_or_rebuilt(
    runs_dir, tmp_path, capsys
):
    spec = _write_spec(tmp_path, "name: one\naxes: {seed: [0]}\n")
    (digest,) = _digests(runs_dir, spec).values()
    folder = runs_dir / "points" / digest
    assert _sweep(spec, runs_dir, "--workers", "1") == 0
    result = (folder / "result.json").read_bytes()
    weights = folder / "checkpoint" / "modules.safetensors"
    intact = weights.read_bytes()
    state = folder / "state" / "train_state.pt"
    capsys.readouterr()

    (folder / "result.json").unlink()  # was: "1 already finished", exit 0, never rebuilt
    assert _sweep(spec, runs_dir) == 0
    assert "result.json is missing; restored from its MLflow run" in capsys.readouterr().out
    assert (folder / "result.json").read_bytes() == result
    assert not (folder / "checkpoint.damaged").exists()  # the intact checkpoint stayed

    flip_byte(weights)  # was: loaded silently, other captions
    assert _sweep(spec, runs_dir) == 0
    assert "do not match the sha256 recorded" in capsys.readouterr().out
    assert weights.read_bytes() == intact and (folder / "checkpoint.damaged").is_dir()

    shutil.rmtree(folder / "checkpoint")
    assert _sweep(spec, runs_dir) == 0
    assert weights.read_bytes() == intact

    # the MLflow copy damaged too: the run is superseded, the point rebuilt from its state
    (mlflow_weights,) = (runs_dir / "mlartifacts").rglob("checkpoint/modules.safetensors")
    flip_byte(mlflow_weights)
    flip_byte(weights)
    stamp = state.stat().st_mtime_ns
    assert _sweep(spec, runs_dir, "--workers", "1") == 0
    out = capsys.readouterr().out
    assert "its MLflow copy is unusable" in out and "it is trained again" in out
    assert _statuses(runs_dir, digest) == ["FAILED", "FINISHED"]
    superseded = next(r for r in _runs(runs_dir) if r.info.status == "FAILED")
    assert "trained again" in superseded.data.tags["failure_reason"]
    assert weights.read_bytes() == intact  # rebuilt bit for bit: training resumed at its end
    assert state.stat().st_mtime_ns == stamp  # ... without a training step
    assert (folder / "result.json.damaged").is_file()


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a full disk is simulated by a tmpfs, which only root can mount")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")


def test_a_full_disk_fails_the_sweep_and_a_rerun_after_freeing_space_finishes(
    tiny_assets, tmp_path, capfd
):
    """``capfd``: the workers are processes of their own, writing to the inherited stderr."""
    small = tmp_path / "small"
    _mount_tmpfs(small, "1200k")
    try:
        runs = link_tiny_assets(small / "runs", tiny_assets)
        spec = _write_spec(tmp_path)
        rc = _sweep(spec, runs, "--workers", "2")
        out, err = capfd.readouterr()
        assert rc == 1, out + err  # was 0, the workers dead and the points "pending"
        assert "disk full" in out + err and "Traceback" not in out + err
        for digest in _digests(runs, spec).values():
            assert f"failed {digest}" in out
        finished = [r for r in _runs(runs) if r.info.status == "FINISHED"]
        for run in finished:  # nothing FINISHED without its result
            assert (runs / "points" / run.data.tags["config_hash"] / "result.json").is_file()

        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        assert _sweep(spec, runs, "--workers", "2") == 0
        for digest in _digests(runs, spec).values():
            statuses = _statuses(runs, digest)
            assert statuses.count("FINISHED") == 1 and "RUNNING" not in statuses
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
