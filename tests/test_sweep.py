"""The sweep runner against real stores (optuna SQLite storage, MLflow SQLite store) and the real
``ituning.train.run_experiment`` at tiny size (mini profile, ``scale="tiny"``: quick backbones and
a 48-image Shapes world, built once for the module).

The queue tests at the top exercise claims, dead workers and heartbeats without training.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bench import SPECS_DIR
from bench.sweep import queue as q
from bench.sweep import storage_retry
from bench.sweep.cli import main
from bench.sweep.coordinator import run_sweep
from bench.sweep.profile import LMChoice
from bench.sweep.profiles import get_profile
from bench.sweep.spec import load_spec, parse_spec
from ituning.errors import BackboneError

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------- the queue alone


def _attrs(i: int) -> dict:
    return {"digest": f"p{i:02d}", "config": "{}", "label": f"point {i}"}


def _claim_all(url: str, name: str, out: multiprocessing.Queue) -> None:
    got: list[str] = []
    try:
        queue = q.WorkQueue(q.open_storage(url), name)
        while (claim := queue.claim()) is not None:
            got.append(claim.digest)
            queue.complete(claim)
    except Exception as exc:  # reported, so that the parent does not wait forever
        got.append(f"error: {exc!r}")
    out.put(got)


@pytest.mark.slow
def test_three_processes_claim_every_point_exactly_once(tmp_path):
    """Without BEGIN IMMEDIATE on SQLite this claimed ~4 of 60 points twice (see bench.sweep.queue)."""
    n = 48
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    queue = q.WorkQueue(q.open_storage(url), "s")  # created before the workers start
    assert queue.enqueue(_attrs(i) for i in range(n)) == n
    assert queue.enqueue(_attrs(i) for i in range(n)) == 0  # already queued: not twice
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(url, "s", out)) for _ in range(3)]
    for p in procs:
        p.start()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    assert sorted(sum(got, [])) == [f"p{i:02d}" for i in range(n)]
    states = [t.state for t in queue.trials()]
    assert states.count(q.TrialState.COMPLETE) == n and len(states) == n


def test_a_dead_local_worker_is_requeued_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    queue = q.WorkQueue(q.open_storage(url), "s")
    queue.enqueue([_attrs(0), _attrs(1)])
    code = (
        "import sys, time; from bench.sweep import queue as q\n"
        f"w = q.WorkQueue(q.open_storage({url!r}), 's'); c = w.claim()\n"
        "print(c.digest, flush=True); time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        digest = proc.stdout.readline().strip()
        assert queue.reap() == []  # alive: left alone
    finally:
        proc.kill()  # SIGKILL: no chance to clean up
        proc.wait()
    assert queue.reap() == [digest]
    assert queue.reap() == []  # exactly one re-queue
    waiting = [t.user_attrs["digest"] for t in queue.trials((q.TrialState.WAITING,))]
    assert sorted(waiting) == ["p00", "p01"]
    retried = next(
        t for t in queue.trials((q.TrialState.WAITING,)) if t.user_attrs["digest"] == digest
    )
    assert retried.user_attrs["retry_of"] == 0


def _claimed_elsewhere(queue: q.WorkQueue) -> q.Claim:
    """Claim the next point as if from another machine that then went silent (no heartbeats)."""
    claim = queue.claim()
    queue.storage.set_trial_system_attr(
        claim.trial_id, "worker", {"host": "elsewhere", "boot": "x", "pid": 1, "start": "1"}
    )
    return claim


def test_a_silent_remote_worker_is_requeued_after_the_grace_period(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    queue = q.WorkQueue(q.open_storage(url, heartbeat_s=1, grace_s=1), "s")
    queue.enqueue([_attrs(0)])
    _claimed_elsewhere(queue)
    assert queue.reap() == []
    time.sleep(2.5)
    assert queue.reap() == ["p00"]
    assert [t.state for t in queue.trials()] == [q.TrialState.FAIL, q.TrialState.WAITING]


def test_a_heartbeat_keeps_a_long_point_alive(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    queue = q.WorkQueue(q.open_storage(url, heartbeat_s=1, grace_s=2), "s")
    queue.enqueue([_attrs(0)])
    claim = _claimed_elsewhere(queue)
    with queue.heartbeat(claim):
        time.sleep(3.5)
        assert queue.reap() == []
    queue.complete(claim)
    assert [t.state for t in queue.trials()] == [q.TrialState.COMPLETE]


def _storage_error(driver_error: Exception) -> Exception:
    """What optuna raises when a commit fails: its own error, caused by SQLAlchemy's."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import OperationalError

    try:
        try:
            raise OperationalError("COMMIT", {}, driver_error)
        except OperationalError as exc:
            raise StorageInternalError("An exception is raised during the commit.") from exc
    except StorageInternalError as wrapped:
        return wrapped


def test_a_lost_database_server_is_retried_and_sqlite_errors_are_not(monkeypatch, capsys):
    import sqlite3

    import psycopg

    refused = _storage_error(psycopg.OperationalError("connection refused (the server restarts)"))
    local = _storage_error(sqlite3.OperationalError("disk I/O error"))
    assert storage_retry.server_lost(refused) and not storage_retry.server_lost(local)
    monkeypatch.setattr(storage_retry, "RECONNECT_EVERY_S", 0.01)
    monkeypatch.setattr(storage_retry, "OUTAGES", storage_retry.Outages())
    answers = [refused, refused, "claimed"]

    def flaky():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert storage_retry.retry(flaky) == "claimed" and not answers
    assert "optuna storage unreachable (connection refused" in capsys.readouterr().err
    assert storage_retry.OUTAGES.within(
        60
    )  # stale heartbeats are not reaped for a grace period now

    def down():
        raise refused

    monkeypatch.setattr(storage_retry, "RECONNECT_S", 0.05)
    with pytest.raises(q.QueueError, match=r"unreachable for 0 s: connection refused"):
        storage_retry.retry(down)
    with pytest.raises(type(local)):  # a local error propagates at once
        storage_retry.retry(lambda: (_ for _ in ()).throw(local))


def _variable(name: str) -> str | None:  # in a worker process
    print(f"worker sees {name}={os.environ.get(name)}", flush=True)
    return os.environ.get(name)


def test_a_worker_takes_its_coordinators_environment_and_output_as_they_are_when_it_starts(
    monkeypatch, tmp_path
):
    """Workers fork from a server that keeps the environment and output it started with."""
    from concurrent.futures import ProcessPoolExecutor

    from bench.sweep import processes

    def pool(inherit: bool) -> ProcessPoolExecutor:
        init = (processes.Inherited.adopt, (processes.Inherited(),)) if inherit else (None, ())
        return ProcessPoolExecutor(
            1, mp_context=processes.worker_processes(), initializer=init[0], initargs=init[1]
        )

    name = "ITUNING_TEST_VARIABLE"
    monkeypatch.delenv(name, raising=False)
    with pool(inherit=True) as workers:  # the fork server runs from here on
        assert workers.submit(_variable, name).result() is None
    monkeypatch.setenv(name, "set later")
    with pool(inherit=False) as workers:
        assert workers.submit(_variable, name).result() is None
    out, saved = tmp_path / "stdout", os.dup(1)
    with out.open("w") as redirected:  # this process's stdout now goes to a file
        sys.stdout.flush()
        os.dup2(redirected.fileno(), 1)
        try:
            with pool(inherit=True) as workers:
                assert workers.submit(_variable, name).result() == "set later"
        finally:
            os.dup2(saved, 1)
            os.close(saved)
    assert out.read_text() == f"worker sees {name}=set later\n"


def test_a_full_disk_under_the_queue_is_one_line_naming_it():
    import sqlite3

    full = _storage_error(sqlite3.OperationalError("database or disk is full"))
    with pytest.raises(q.QueueError) as err:
        storage_retry.retry(lambda: (_ for _ in ()).throw(full))
    assert str(err.value) == (
        "optuna storage: disk full (database or disk is full); free space on its filesystem "
        "and rerun"
    )


def test_stale_heartbeats_right_after_an_outage_are_not_reaped(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    queue = q.WorkQueue(q.open_storage(url, heartbeat_s=1, grace_s=1), "s")
    queue.enqueue([_attrs(0)])
    claim = _claimed_elsewhere(queue)
    queue.storage.record_heartbeat(claim.trial_id)
    time.sleep(2.5)
    outages = storage_retry.Outages()
    outages.note()
    monkeypatch.setattr(storage_retry, "OUTAGES", outages)
    assert queue.reap() == []  # the database was down a moment ago: no heartbeat could land
    assert queue.running_elsewhere({"p00"}) == ["p00"]  # so a worker with nothing to do waits
    monkeypatch.setattr(storage_retry, "OUTAGES", storage_retry.Outages())
    assert queue.reap() == ["p00"]


# ---------------------------------------------------------------------- end to end, tiny


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def _runs(runs_dir: Path, experiment: str = "mini-tiny") -> list:
    client = MlflowClient(f"sqlite:///{runs_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def _finished_once_each(runs: list, n: int) -> None:
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted({r.data.tags["config_hash"] for r in finished}) == sorted(
        r.data.tags["config_hash"] for r in finished
    )
    assert len(finished) == n
    assert not [r for r in runs if r.info.status == "RUNNING"]


@pytest.mark.slow
def test_smoke_with_two_workers_then_nothing_new(runs_dir, capsys):
    args = ["smoke", "--scale", "tiny", "--runs-dir", str(runs_dir), "--quiet"]
    rc = main([*args, "--workers", "2"])
    runs = _runs(runs_dir)
    assert rc == 0, [(r.info.status, r.data.tags.get("failure_reason")) for r in runs]
    _finished_once_each(runs, 2)
    run = next(r for r in runs if r.data.params["lm"] == "large")
    params = run.data.params
    # each axis once, under its own name, with its resolved value
    assert params["drop"] == "2"  # drop 0.5 of the 3-layer quick LM
    assert (params["lambda"], params["vlp"], params["seed"]) == ("1.0", "False", "0")
    assert params["lm.layers"] == "3" and params["profile"] == "mini"
    assert not [k for k in params if k.startswith(("point.", "resolved.", "itune.scale"))]
    assert "itune.drop_first" not in params and "itune.bottleneck" not in params
    assert run.data.tags["spec.smoke"] == "true"
    assert {"test/cider", "nocaps/out-of-domain/cider", "trainable_params", "wall_time_s"} <= set(
        run.data.metrics
    )
    profile = get_profile("mini", runs_dir=runs_dir, scale="tiny")
    plan = next(
        p for p in profile.plan(load_spec(SPECS_DIR / "smoke.yaml")) if p.point["lm"] == "large"
    )
    assert run.data.metrics["trainable_params"] == plan.arch.trainable_params
    client = MlflowClient(f"sqlite:///{runs_dir / 'mlflow.db'}")
    assert client.get_metric_history(run.info.run_id, "train/loss")  # streamed curve
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "checkpoint", "predictions", "result.json", "attention.png"} <= artifacts
    storage = q.open_storage(f"sqlite:///{runs_dir / 'optuna.db'}")
    trials = q.WorkQueue(storage, "mini-tiny").trials()
    assert sorted(t.state.name for t in trials) == ["COMPLETE", "COMPLETE"]
    capsys.readouterr()

    assert main(args) == 0  # second invocation: nothing to do
    out = capsys.readouterr().out
    assert "sweep smoke (profile mini-tiny): 2 points, 2 already finished" in out
    assert "queued 0 of 2 distinct points" in out
    assert len(_runs(runs_dir)) == 2
    assert len(q.WorkQueue(storage, "mini-tiny").trials()) == 2

    # another spec asking for one of these points finds the same run: nothing new is trained
    base_only = runs_dir.parent / "base-only.yaml"
    base_only.write_text("name: base-only\naxes: {lm: [base]}\n")
    assert main([str(base_only), *args[1:]]) == 0
    assert "1 points, 1 already finished" in capsys.readouterr().out
    runs = _runs(runs_dir)
    assert len(runs) == 2
    base = next(r for r in runs if r.data.params["lm"] == "base")
    assert base.data.tags["spec.smoke"] == base.data.tags["spec.base-only"] == "true"


@pytest.mark.slow
def test_a_failing_point_is_recorded_and_the_sweep_goes_on(runs_dir, tmp_path):
    spec = parse_spec("name: failing\naxes: {lm: [large, base]}\n", source="failing.yaml")
    profile = get_profile("mini", runs_dir=runs_dir, scale="tiny")
    # A backbone that is not there: the real loader raises BackboneError for every large point.
    broken = replace(
        profile, lms={**profile.lms, "large": LMChoice(str(tmp_path / "no-lm"), 3, 32)}
    )
    lines: list[str] = []
    report = run_sweep(spec, broken, progress=False, log=lines.append)
    assert not report.ok and len(report.done) == 1
    (reason,) = report.failed.values()
    assert "no-lm" in reason
    runs = _runs(runs_dir)
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    failed = next(r for r in runs if r.info.status == "FAILED")
    assert "no-lm" in failed.data.tags["failure_reason"]
    assert any(line.startswith("  failed ") for line in lines)
    with pytest.raises(BackboneError):  # the same error, raised directly by the library
        from ituning.backbones import load_lm

        load_lm(str(tmp_path / "no-lm"))


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_finishes_each_point_once(runs_dir, tmp_path, capsys):
    spec = _spec(tmp_path, "name: killed\naxes: {seed: [5]}\noverrides: {epochs: 4}\n")
    args = [str(spec), "--scale", "tiny", "--runs-dir", str(runs_dir), "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.sweep", *args],
        cwd=ROOT,
        stdout=(tmp_path / "log.txt").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    profile = get_profile("mini", runs_dir=runs_dir, scale="tiny")
    folders = [runs_dir / "points" / p.run_id for p in profile.plan(parse_spec(spec.read_text()))]
    try:
        deadline = time.monotonic() + 120
        while not any(
            (f / "state").is_dir()
            and any((f / "state").iterdir())
            and not (f / "result.json").exists()
            for f in folders
        ):
            assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep's own process group, started above
        proc.wait()
    before = _runs(runs_dir)
    assert [r.info.status for r in before].count("RUNNING") == 1  # the orphan

    assert main(args) == 0
    after = _runs(runs_dir)
    _finished_once_each(after, 1)
    killed = [r for r in after if r.info.status == "KILLED"]
    assert [r.info.run_id for r in killed] == [
        r.info.run_id for r in before if r.info.status == "RUNNING"
    ]
    rerun = next(
        r
        for r in after
        if r.info.status == "FINISHED"
        and r.data.tags["config_hash"] == killed[0].data.tags["config_hash"]
    )
    assert rerun.data.tags["resumed"] == "True" or rerun.data.tags["reused_result"] == "True"
    storage = q.open_storage(f"sqlite:///{runs_dir / 'optuna.db'}")
    queue = q.WorkQueue(storage, profile.label)
    assert not queue.trials((q.TrialState.RUNNING, q.TrialState.WAITING))
    assert "re-queued after a dead worker" in capsys.readouterr().out


def test_points_are_queued_once_heaviest_first_across_specs(runs_dir):
    """With N workers the longest points start first (no worker ends alone on a long point); a
    point two specs share is queued once, knowing both specs."""
    from bench.sweep.coordinator import run_sweeps

    first = parse_spec("name: order-a\naxes: {lm: [base, medium, large]}\n", source="order-a.yaml")
    second = parse_spec(
        "name: order-b\naxes: {drop: [0.5, 0]}\nbase: {lm: large}\n", source="order-b.yaml"
    )
    profile = get_profile("mini", runs_dir=runs_dir, scale="tiny")
    reports = run_sweeps([first, second], profile, workers=0, progress=False, log=lambda s: None)
    assert [r.points for r in reports.values()] == [3, 2]
    assert all(len(r.pending) == r.points for r in reports.values())  # queued, none run
    storage = q.open_storage(f"sqlite:///{runs_dir / 'optuna.db'}")
    trials = sorted(q.WorkQueue(storage, profile.label).trials(), key=lambda t: t.number)
    plans = {p.run_id: p for spec in (first, second) for p in profile.plan(spec)}
    assert len(trials) == len(plans) == 4  # large without dropping is in both specs
    costs = [plans[t.user_attrs["digest"]].relative_cost for t in trials]
    assert costs == sorted(costs, reverse=True)
    shared = next(
        t
        for t in trials
        if t.user_attrs["axes"] == {**t.user_attrs["axes"], "lm": "large", "drop": 0}
    )
    assert shared.user_attrs["specs"] == ["order-a", "order-b"]


def test_mini_workers_run_one_thread_whatever_their_number(tmp_path):
    """A point's numbers must not depend on the worker count (float sums split over threads
    round differently): a rerun that finds one point left must equal the uninterrupted sweep."""
    from bench.sweep.coordinator import worker_threads

    mini = get_profile("mini", runs_dir=tmp_path, scale="tiny")
    assert {worker_threads(mini, n) for n in (1, 2, 8)} == {1}
    paper = get_profile("paper", runs_dir=tmp_path, data_root=tmp_path)
    assert worker_threads(paper, 1) == (os.cpu_count() or 1)
