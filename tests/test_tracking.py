"""MLflow tracking against real stores: a SQLite store, and a real ``mlflow server`` over HTTP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bench.sweep import tracking
from bench.sweep.queue import QueueError, mask_url, open_storage
from bench.sweep.tracking import Tracker, TrackingError, check_reachable
from ituning.train import RunResult


@pytest.fixture(scope="module")
def store_template(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables created once (migrations take seconds)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture
def store(tmp_path, store_template) -> str:
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copy(store_template, runs / "mlflow.db")
    return f"sqlite:///{runs / 'mlflow.db'}"


def _result(tmp_path: Path) -> RunResult:
    out = tmp_path / "out"
    (out / "checkpoint").mkdir(parents=True)
    (out / "checkpoint" / "modules.safetensors").write_bytes(b"\0" * 16)
    (out / "config.json").write_text("{}")
    (out / "predictions_test.json").write_text("[]")
    (out / "result.json").write_text('{"metrics": {}}')
    return RunResult(
        metrics={"test/cider": 0.5, "nocaps/out-of-domain/cider": 0.25, "trainable_params": 808.0},
        unavailable={"test/spice": "Stanford CoreNLP jars absent"},
        artifacts={
            "config": out / "config.json",
            "predictions/test": out / "predictions_test.json",
            "checkpoint": out / "checkpoint",
            "attention": out / "attention.png",  # promised but not written
        },
    )


def test_run_carries_params_curves_scores_artifacts_and_tags(tmp_path, store):
    tracker = Tracker(store, "exp", runs_dir=tmp_path / "runs")
    tracker.describe_spec("table1", "Table 1 rows")
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.artifact_location == (tmp_path / "runs" / "mlartifacts").resolve().as_uri()
    run = tracker.start(
        run_name="base [abc]",
        params={
            "itune.drop_first": 2,
            "eval.splits": ["test"],
            "backbones.vision_pretrained": None,
        },
        tags={"config_hash": "abc", **tracking.environment_tags()},
    )
    for step in range(3):
        run.metric("train/loss", 3.0 - step, step)
    run.stage("train")
    result = _result(tmp_path)
    run.log_result(result, tmp_path / "out")
    run.end("FINISHED")

    got = MlflowClient(store).get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert got.data.params == {
        "itune.drop_first": "2",
        "eval.splits": '["test"]',
        "backbones.vision_pretrained": "null",
    }
    history = MlflowClient(store).get_metric_history(run.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.0), (2, 1.0)]
    assert got.data.metrics["nocaps/out-of-domain/cider"] == 0.25
    tags = got.data.tags
    assert tags["stage"] == "train"
    assert tags["unavailable.test/spice"] == "Stanford CoreNLP jars absent"
    assert tags["artifact_missing.attention"].endswith("attention.png")
    assert len(tags["git_commit"]) == 40 and tags["version.torch"] and tags["hardware.cores"]
    names = {a.path for a in MlflowClient(store).list_artifacts(run.run_id)}
    assert names == {"config.json", "predictions", "checkpoint", "result.json"}
    inner = MlflowClient(store).list_artifacts(run.run_id, "checkpoint")
    assert [a.path for a in inner] == ["checkpoint/modules.safetensors"]
    assert tracker.finished() == {"abc": run.run_id}
    assert Tracker(store, "exp").experiment_id == tracker.experiment_id  # reopened, not duplicated
    assert exp.tags.get("mlflow.note.content", "").startswith("I-Tuning runs of profile exp")


def test_a_point_shared_by_specs_is_one_run_each_spec_can_find(tmp_path, store):
    tracker = Tracker(store, "exp", runs_dir=tmp_path / "runs")
    tracker.describe_spec("table1", "Table 1 rows")
    run = tracker.start(run_name="p", params={}, tags={"config_hash": "abc"})
    other = tracker.start(run_name="q", params={}, tags={"config_hash": "def"})
    tracker.tag_specs(run.run_id, ["table1"])
    tracker.tag_specs(run.run_id, ["table1", "table2"])  # idempotent; a second spec joins
    tracker.tag_specs(other.run_id, ["dropping"])
    client = MlflowClient(store)
    exp = client.get_experiment(tracker.experiment_id)
    assert exp.tags[tracking.spec_tag("table1")] == "Table 1 rows"
    for spec, expected in (("table1", [run.run_id]), ("table2", [run.run_id]), ("lambda", [])):
        found = client.search_runs([tracker.experiment_id], tracking.spec_filter(spec))
        assert [r.info.run_id for r in found] == expected
    tags = client.get_run(run.run_id).data.tags
    assert {k: v for k, v in tags.items() if k.startswith("spec.")} == {
        "spec.table1": "true",
        "spec.table2": "true",
    }


def test_finished_and_orphans_by_config_hash(tmp_path, store):
    tracker = Tracker(store, "exp", runs_dir=tmp_path / "runs")
    done = tracker.start(run_name="a", params={}, tags={"config_hash": "aaa"})
    done.end("FINISHED")
    orphan = tracker.start(run_name="b", params={}, tags={"config_hash": "bbb"})
    live = tracker.start(run_name="c", params={}, tags={"config_hash": "ccc"})
    other = tracker.start(
        run_name="e", params={}, tags={"config_hash": "eee", "optuna.study": "t@paper"}
    )
    for run in (orphan, live):
        run.set_tags({"optuna.study": "t@mini"})
    assert tracker.finished() == {"aaa": done.run_id}
    assert tracker.close_orphans(keep={"ccc"}, study="t@mini") == [orphan.run_id]
    client = MlflowClient(store)
    assert client.get_run(orphan.run_id).info.status == "KILLED"
    assert client.get_run(orphan.run_id).data.tags["killed_reason"].startswith("its worker died")
    assert client.get_run(live.run_id).info.status == "RUNNING"
    assert client.get_run(other.run_id).info.status == "RUNNING"  # another profile's sweep
    failed = tracker.start(run_name="d", params={}, tags={"config_hash": "ddd"})
    failed.end("FAILED", "non-finite loss at step 3")
    assert client.get_run(failed.run_id).data.tags["failure_reason"] == "non-finite loss at step 3"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_stores_fail_fast_naming_the_url(tmp_path):
    port = _free_port()
    with pytest.raises(
        TrackingError, match=rf"MLflow tracking server http://127.0.0.1:{port} is unreachable"
    ):
        check_reachable(f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(TrackingError, match=r"MLflow 3 refuses the plain file store"):
        check_reachable(str(tmp_path / "mlruns"))
    with pytest.raises(QueueError) as info:
        open_storage(f"postgresql://me:secret@127.0.0.1:{port}/sweeps")
    assert "postgresql://me:***@127.0.0.1" in str(info.value) and "secret" not in str(info.value)
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(
        QueueError, match=r"optuna storage sqlite:///.*file/optuna.db is unreachable"
    ):
        open_storage(f"sqlite:///{blocked}/optuna.db")
    assert mask_url("sqlite:///runs/optuna.db") == "sqlite:///runs/optuna.db"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "FOLDER", "NOT_A_DB"])
def test_sqlite_urls_that_cannot_be_a_shared_store_are_one_line_at_once(tmp_path, url):
    """A folder named as the tracking store kept MLflow retrying for minutes; an in-memory
    optuna storage ended in a traceback (the workers cannot see it anyway)."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "text.db").write_text("not a database\n" * 100)
    url = {
        "FOLDER": f"sqlite:///{tmp_path / 'folder'}",
        "NOT_A_DB": f"sqlite:///{tmp_path / 'text.db'}",
    }.get(url, url)
    started = time.monotonic()
    with pytest.raises(TrackingError) as tracking_error:
        check_reachable(url)
    with pytest.raises(QueueError) as queue_error:
        open_storage(url)
    assert time.monotonic() - started < 10
    for message in (str(tracking_error.value), str(queue_error.value)):
        assert "\n" not in message and ("in-memory" in message or "not a" in message)
        assert "sqlite:///runs/" in message  # the example of a good URL


@pytest.mark.slow
def test_through_a_real_tracking_server(tmp_path, store_template):
    """What several machines share: ``mlflow server`` (1 worker, no job runner) over HTTP."""
    shutil.copy(store_template, tmp_path / "server.db")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination", str(tmp_path / "artifacts"),
    ]  # fmt: skip
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                check_reachable(uri, timeout_s=1)
                break
            except TrackingError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        tracker = Tracker(uri, "remote")
        run = tracker.start(run_name="x", params={"a": 1}, tags={"config_hash": "h1"})
        run.metric("train/loss", 1.5, 7)
        run.log_result(_result(tmp_path), tmp_path / "out")
        run.end("FINISHED")
        assert tracker.finished() == {"h1": run.run_id}
        assert (tmp_path / "artifacts").is_dir()  # proxied to the server's artifact store
        assert any((tmp_path / "artifacts").rglob("modules.safetensors"))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
