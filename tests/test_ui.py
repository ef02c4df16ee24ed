"""``python -m bench.ui``: a real MLflow server on loopback, the comparison page, and its errors."""

from __future__ import annotations

import json
import socket
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from bench import ui
from bench.sweep import tracking


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _finished_runs(runs_dir: Path, spec: str, n: int, lr: str = "0.001") -> list[str]:
    """``n`` FINISHED runs of ``spec`` at rate ``lr`` in the mini profile's experiment, beside a
    FAILED one, a FINISHED run of another spec and one at a rate a later search replaced (none
    compared)."""
    tracker = tracking.Tracker(tracking.default_tracking_uri(runs_dir.resolve()), "mini")
    ids = []
    for i in range(n + 3):
        rate = lr if i != n + 2 else f"{float(lr) * 2:g}"
        params = {"optim.lr": rate}
        run = tracker.start(run_name=f"point {i}", params=params, tags={"config_hash": f"h{i}"})
        run.metric("test/cider", 10.0 * i)
        run.flush()
        tracker.tag_specs(run.run_id, [spec if i != n + 1 else "other"])
        run.end("FINISHED" if i != n else "FAILED")
        ids.append(run.run_id)
    return ids[:n]


@pytest.mark.slow
def test_server_answers_on_loopback_lists_the_runs_and_stops(tmp_path: Path) -> None:
    from bench.sweep import learning_rates

    runs_dir = tmp_path / "runs"
    rate = str(learning_rates.chosen("mini", "itune", "large"))  # what sweeps/dropping.yaml trains
    ids = _finished_runs(runs_dir, "dropping", 3, rate)
    port = _free_port()
    with ui.serve(runs_dir, port=port) as url:
        assert url == f"http://127.0.0.1:{port}"
        page = url + ui.compare_path(runs_dir, "dropping")
        path, _, fragment_query = page.partition("?")
        query = urllib.parse.parse_qs(fragment_query)
        assert query["compareRunsMode"] == ["CHART"]
        assert path.endswith("/runs")  # the runs tab (model training), not the traces overview
        exp_id = path.rsplit("/", 2)[1]
        experiment = tracking.client(
            tracking.default_tracking_uri(runs_dir.resolve())
        ).get_experiment(exp_id)
        view = json.loads(
            experiment.tags[f"mlflow.sharedViewState.{query['viewStateShareKey'][0]}"]
        )
        first, parallel = view["compareRunCharts"]
        assert first["type"] == "BAR" and first["metricKey"] == "test/cider"
        assert parallel["selectedParams"] == ["drop", "seed"]  # what sweeps/dropping.yaml varies
        body = json.dumps({"experiment_ids": [exp_id], "filter": view["searchFilter"]}).encode()
        request = urllib.request.Request(
            f"{url}/api/2.0/mlflow/runs/search",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            served = {r["info"]["run_id"] for r in json.load(reply)["runs"]}
        assert served == set(ids)  # the view's filter: FINISHED runs of the spec at its rate
        assert experiment.tags["mlflow.experiment.primaryMetric.name"] == "test/cider"
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    with socket.socket() as sock:  # stopped: nothing listens there any more
        # (the server's closed connections may linger in TIME_WAIT: SO_REUSEADDR allows that,
        # but Linux still refuses the bind while a socket listens on the port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_a_spec_without_runs_is_one_line_before_any_server(tmp_path: Path, capsys) -> None:
    _finished_runs(tmp_path / "runs", "table1", 1)
    args = ["--runs-dir", str(tmp_path / "runs"), "--screenshot", str(tmp_path / "x.png")]
    assert ui.main([*args, "--spec", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--spec nope" in err[0] and "bench.sweep nope" in err[0]
    assert not (tmp_path / "runs" / "mlflow-server.log").exists()
    assert not (tmp_path / "x.png").exists()


def test_server_command_binds_loopback_by_default(tmp_path: Path) -> None:
    argv, env = ui.server_command(tmp_path)
    assert argv[argv.index("--host") + 1] == "127.0.0.1"
    assert argv[argv.index("--workers") + 1] == "1"
    assert env == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
