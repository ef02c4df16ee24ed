"""Fault injection: the rows of the reliability suite that no other test file covers.

``python -m bench.faults`` runs every row for real and prints the figures; here each row keeps
its sharpest check, fast. Covered elsewhere (and so not repeated): spec parsing errors
(test_spec.py), dataset field and path errors in the loaders (test_data_loaders.py), a SIGKILL
mid-training of a sweep and a failing point that does not stop a sweep (test_sweep.py), exact
resume after an exception and non-finite losses (test_training.py), corrupt feature shards
(test_features.py), corrupt checkpoints (test_checkpoint.py), unreachable stores
(test_tracking.py). Added here: the command-line contract for malformed inputs (exit 2, one line,
nothing written), dataset files checked before any store is touched, a real SIGKILL in the middle
of a state write and of MLflow logging, concurrent store creation, code-running pickles, the
fault points themselves, and the MLflow UI's loopback binding.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import REPO_ROOT
from bench.faults import inputs, stores, untrusted_files
from bench.faults.harness import free_port
from bench.sweep import cli as sweep_cli
from bench.sweep import coordinator as sweep
from bench.sweep import queue as q
from bench.sweep import tracking
from ituning import faultpoints
from ituning import train as train_cli
from ituning.errors import BackboneError, CheckpointError
from ituning.faultpoints import MARKER_ENV, PAUSE_ENV, fault_point
from ituning.phase_clock import is_timing_metric
from ituning.resume_state import load_state
from ituning.train import run_experiment


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (PAUSE_ENV, MARKER_ENV)}
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _kill_at(args: list[str], point: str, tmp_path: Path, timeout: float = 180) -> str:
    """Run ``python args`` until it pauses at ``point``, then SIGKILL its process group."""
    marker = tmp_path / "paused"
    log = tmp_path / "killed.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=tmp_path,
            env=_env(**{PAUSE_ENV: point, MARKER_ENV: str(marker)}),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):  # exited early: the assertions above say why
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return marker.read_text().split()[0]


# ---------------------------------------------------------------------- fault points


@pytest.fixture
def fresh_passes(monkeypatch, tmp_path) -> Path:
    """In-process fault points with their own pass counts and a marker file under ``tmp_path``."""
    monkeypatch.setattr(faultpoints, "_passes", {})
    monkeypatch.delenv(PAUSE_ENV, raising=False)
    marker = tmp_path / "paused"
    monkeypatch.setenv(MARKER_ENV, str(marker))
    return marker


@pytest.mark.timeout(30)  # a pause would sleep 600 s: the timeout turns it into a failure
def test_a_fault_point_does_nothing_unless_named(fresh_passes, monkeypatch):
    marker = fresh_passes
    started = time.monotonic()
    fault_point("state.save")  # no variable: returns at once
    monkeypatch.setenv(PAUSE_ENV, "checkpoint.save")
    fault_point("state.save")  # another point
    monkeypatch.setenv(PAUSE_ENV, "state.save@2")
    fault_point("state.save")  # the named point, but not yet its pass
    assert time.monotonic() - started < 5
    assert not marker.exists()


def test_a_named_fault_point_writes_its_marker_at_its_nth_pass(fresh_passes, monkeypatch):
    """The positive control of the test above, in-process: no pause (``MAX_PAUSE_S`` 0), so the
    point gives up at once, after writing the marker."""
    marker = fresh_passes
    monkeypatch.setattr(faultpoints, "MAX_PAUSE_S", 0.0)
    monkeypatch.setenv(PAUSE_ENV, "state.save@2")
    fault_point("state.save")
    assert not marker.exists()
    with pytest.raises(RuntimeError, match="nobody killed us"):
        fault_point("state.save")
    assert marker.read_text().split()[0] == "state.save@2"


def test_a_fault_point_pauses_at_its_nth_pass_until_killed(tmp_path):
    code = (
        "from ituning.faultpoints import fault_point\n"
        "fault_point('p'); print('first pass', flush=True); fault_point('p'); print('after')\n"
    )
    where = _kill_at(["-c", code], "p@2", tmp_path, timeout=60)
    assert where == "p@2"
    assert (tmp_path / "killed.log").read_text() == "first pass\n"


# ---------------------------------------------------------------------- R1: malformed inputs


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def _sweep_main(argv: list[str]) -> int:
    try:
        return sweep_cli.main(argv)
    except SystemExit as exc:  # argparse usage errors
        return int(exc.code)


@pytest.mark.parametrize(
    ("name", "text", "names"), inputs.BAD_SPECS, ids=[c[0] for c in inputs.BAD_SPECS]
)
def test_a_malformed_spec_is_exit_2_one_line_and_writes_nothing(
    name, text, names, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "bad.yaml"
    spec.write_bytes(text if isinstance(text, bytes) else text.encode())
    runs = tmp_path / "runs"
    assert _sweep_main([str(spec), "--scale", "tiny", "--runs-dir", str(runs), "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert all(n in line for n in ("bad.yaml", *names)), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no runs/, no mlflow.db


@pytest.mark.parametrize(
    ("name", "argv", "names"), inputs.BAD_FLAGS, ids=[c[0] for c in inputs.BAD_FLAGS]
)
def test_a_bad_flag_is_exit_2_one_line_and_writes_nothing(
    name, argv, names, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    rc = _sweep_main(["smoke", "--scale", "tiny", "--runs-dir", str(runs), "--quiet", *argv])
    assert rc == 2
    line = _one_error_line(capsys)
    assert all(n in line for n in names), line
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory) -> Path:
    return inputs.write_paper_root(tmp_path_factory.mktemp("paper") / "data")


@pytest.fixture(scope="module")
def paper_weights(tiny_assets, tmp_path_factory) -> Path:
    """``--weights`` of the tiny backbones: the paper scenarios test data, not a download."""
    return inputs.write_paper_weights(tmp_path_factory.mktemp("weights"), tiny_assets / "backbones")


DATA_EDITS = inputs.bad_data_files()


@pytest.mark.parametrize(
    ("name", "damage", "names", "vlp"), DATA_EDITS, ids=[c[0] for c in DATA_EDITS]
)
def test_a_bad_dataset_file_stops_the_sweep_before_any_store(
    name, damage, names, vlp, paper_root, paper_weights, tmp_path, monkeypatch, capsys
):
    """The coordinator reads the paper profile's dataset files before it opens MLflow or optuna."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(paper_root, root)
    damage(root)
    spec = tmp_path / "vlp.yaml"
    spec.write_text("name: v\naxes: {vlp: [true]}\n")
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    argv = [str(spec) if vlp else "smoke", "--profile", "paper", "--data-root", str(root)]
    argv += ["--weights", str(paper_weights)]
    assert _sweep_main([*argv, "--scale", "tiny", "--runs-dir", str(runs), "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert all(n in line for n in names), line
    assert not runs.exists()


def test_a_valid_paper_root_passes_the_check(paper_root, paper_weights, tmp_path):
    from bench.sweep.preflight import problems
    from bench.sweep.profiles import get_profile
    from bench.sweep.spec import parse_spec

    profile = get_profile(
        "paper",
        runs_dir=tmp_path / "runs",
        data_root=paper_root,
        scale="tiny",
        weights=paper_weights,
    )
    plans = profile.plan(parse_spec("name: v\naxes: {vlp: [false, true]}\n"))
    assert problems(profile, plans, progress=False) == []  # reads every file, writes nothing
    assert not (tmp_path / "runs").exists()


def test_malformed_chair_annotations_stop_the_sweep_before_training(
    paper_root, paper_weights, tmp_path, capsys
):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(paper_root, root)
    (root / "coco" / "annotations" / "instances_val2014.json").write_text('{"images": []}')
    runs = tmp_path / "runs"
    argv = ["smoke", "--profile", "paper", "--data-root", str(root), "--runs-dir", str(runs)]
    argv += ["--weights", str(paper_weights)]
    assert _sweep_main([*argv, "--scale", "tiny"]) == 2
    line = _one_error_line(capsys)
    assert "instances_val2014.json" in line and "not COCO instance annotations" in line
    assert not runs.exists()


def test_path_traversal_in_a_dataset_is_refused_by_the_sweep(
    paper_root, paper_weights, tmp_path, capsys
):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(paper_root, root)
    inputs.edit_json(
        root / "coco" / "dataset_coco.json",
        lambda d: d["images"][0].update(filename="../../../../etc/passwd"),
    )
    runs = tmp_path / "runs"
    argv = ["smoke", "--profile", "paper", "--data-root", str(root), "--runs-dir", str(runs)]
    argv += ["--weights", str(paper_weights)]
    assert _sweep_main([*argv, "--scale", "tiny"]) == 2
    line = _one_error_line(capsys)
    assert "dataset_coco.json: images[0].filename" in line and "escapes the image root" in line
    assert not runs.exists()


def test_the_train_command_checks_its_data_before_writing_its_folder(paper_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(paper_root, root)
    inputs.edit_json(root / "coco" / "dataset_coco.json", lambda d: d["images"][1].pop("split"))
    config = tmp_path / "config.json"
    data = {
        "captions": str(root / "coco" / "dataset_coco.json"),
        "image_root": str(root / "coco" / "images"),
    }
    config.write_text(json.dumps({"data": data, "backbones": {"lm": str(tmp_path / "no-lm")}}))
    out = tmp_path / "out"
    assert train_cli.main(["--config", str(config), "--out", str(out)]) == 2
    assert "dataset_coco.json: images[1].split: missing" in _one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", 'epochs=!!python/object/apply:os.system ["touch {m}"]'], "--set epochs"),
        (["--set", "epochs"], "expected KEY=VALUE"),
    ],
)
def test_train_overrides_are_plain_data(argv, message, tmp_path, capsys):
    marker = tmp_path / "EXECUTED"
    config = tmp_path / "config.yaml"
    config.write_text("data: {captions: x.json, image_root: x}\n")
    argv = [a.replace("{m}", str(marker)) for a in argv]
    assert train_cli.main(["--config", str(config), *argv]) == 2
    assert message in _one_error_line(capsys)
    assert not marker.exists()


def test_a_config_that_is_not_utf8_is_one_line(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_bytes(b"epochs: \xff\n")
    assert train_cli.main(["--config", str(config)]) == 2
    assert "config.yaml: byte 8: not UTF-8" in _one_error_line(capsys)


# ---------------------------------------------------------------------- R3 and R5: training


@pytest.fixture(scope="module")
def straight(make_train_config, tmp_path_factory):
    cfg = make_train_config()
    out = tmp_path_factory.mktemp("straight") / "run"
    result = run_experiment(cfg, out, progress=False)
    return cfg, out, result


def _untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not is_timing_metric(k)}


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_state_write_resumes_exactly(straight, tmp_path):
    cfg, straight_out, straight_result = straight
    config = tmp_path / "config.json"
    config.write_text(cfg.canonical_json())
    out = tmp_path / "run"
    args = ["-m", "ituning.train", "--config", str(config), "--out", str(out)]
    assert _kill_at(args, "state.save@2", tmp_path) == "state.save@2"
    assert any(p.name.endswith(".tmp") for p in (out / "state").iterdir())  # the half-done write
    assert load_state(out / "state").global_step == 3  # the previous state, intact
    result = run_experiment(cfg, out, progress=False)
    weights = "checkpoint/modules.safetensors"
    assert (out / weights).read_bytes() == (straight_out / weights).read_bytes()
    assert _untimed(result.metrics) == _untimed(straight_result.metrics)


def test_a_damaged_result_json_is_evaluated_again_without_training(straight, tmp_path):
    import shutil

    cfg, straight_out, straight_result = straight
    out = tmp_path / "run"
    shutil.copytree(straight_out, out)
    (out / "result.json").write_text('{"metrics": {"train/fin')
    steps: list = []
    result = run_experiment(cfg, out, progress=False, on_metric=lambda *a: steps.append(a))
    assert steps == []  # the state says training is done
    assert _untimed(result.metrics) == _untimed(straight_result.metrics)
    assert json.loads((out / "result.json").read_text())["metrics"] == result.metrics


def test_damaged_mini_backbones_are_one_line_naming_the_file_and_the_fix(tmp_path):
    from bench.mini.backbones import folder_hashes
    from bench.mini.profile import verify_backbones

    root = tmp_path / "quick-abc"
    (root / "mini-base").mkdir(parents=True)
    (root / "mini-base" / "model.safetensors").write_bytes(b"weights")
    (root / "mini-base" / "config.json").write_text("{}")
    manifest = {"files": folder_hashes(root)}
    verify_backbones(root, manifest)
    (root / "mini-base" / "config.json").write_text('{"n_layer": 9}')
    with pytest.raises(BackboneError, match=r"mini-base/config.json: changed since it was built"):
        verify_backbones(root, manifest)
    (root / "mini-base" / "config.json").write_text("{}")
    (root / "mini-base" / "model.safetensors").unlink()
    with pytest.raises(BackboneError) as info:
        verify_backbones(root, manifest)
    assert str(info.value) == (
        f"{root}/mini-base/model.safetensors: missing (its sha256 is in manifest.json); delete "
        f"{root} and rerun to rebuild the mini backbones"
    )


# ---------------------------------------------------------------------- R8: untrusted files


def test_a_training_state_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "EXECUTED"
    untrusted_files.write_evil_pickle(tmp_path / "state" / "train_state.pt", marker)
    with pytest.raises(CheckpointError, match=r"train_state.pt: .*not a safe checkpoint"):
        load_state(tmp_path / "state")
    assert not marker.exists()


def test_module_weights_that_are_a_pickle_are_refused(tmp_path):
    from ituning.checkpoint import META, WEIGHTS, load_checkpoint

    marker = tmp_path / "EXECUTED"
    untrusted_files.write_evil_pickle(tmp_path / WEIGHTS, marker, torch_format=False)
    (tmp_path / META).write_text(
        json.dumps({"format": "ituning-modules/1", "config": {}, "lm": {}, "vision": {}})
    )
    with pytest.raises(CheckpointError, match=r"modules.safetensors is truncated or not a safet"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_the_payload_is_real(tmp_path):
    """The crafted files do run code when loaded unsafely: the refusals above are meaningful."""
    import pickle

    marker = tmp_path / "EXECUTED"
    untrusted_files.write_evil_pickle(tmp_path / "evil.pkl", marker, torch_format=False)
    pickle.loads((tmp_path / "evil.pkl").read_bytes())  # noqa: S301 - the point of the test
    assert marker.exists()


def test_the_sources_never_deserialise_code():
    assert untrusted_files.scan_unsafe_loads([REPO_ROOT / "ituning", REPO_ROOT / "bench"]) == []


def test_the_ui_session_binds_to_loopback(tmp_path):
    args, env = untrusted_files.ui_command(5123, tmp_path)
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--port") + 1] == "5123"
    assert args[args.index("-m") + 1] == "bench.ui"  # its server command: tests/test_ui.py


# ---------------------------------------------------------------------- R6: stores unreachable


def test_an_unreachable_tracking_server_fails_before_anything_is_built(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    runs = tmp_path / "runs"
    assert (
        _sweep_main(["smoke", "--scale", "tiny", "--runs-dir", str(runs), "--tracking-uri", url])
        == 2
    )
    assert url in _one_error_line(capsys)
    assert not runs.exists()  # no backbones trained, no world written, no store created


def test_a_locked_storage_fails_in_seconds_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(q, "LOCK_WAIT_S", 1)
    runs = tmp_path / "runs"
    runs.mkdir()
    holder = sqlite3.connect(runs / "optuna.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        rc = _sweep_main(["smoke", "--scale", "tiny", "--runs-dir", str(runs), "--quiet"])
        took = time.monotonic() - started
    finally:
        holder.close()
    assert rc == 2 and took < 30
    line = _one_error_line(capsys)
    assert f"optuna storage sqlite:///{runs}/optuna.db is locked by another process" in line
    assert sorted(p.name for p in runs.iterdir()) == ["optuna.db"]


# ---------------------------------------------------------------------- R7: concurrent creation


_CREATE_STORES = """
import sys, time
from pathlib import Path
from bench.sweep import queue as q
from bench.sweep import tracking
runs, go = Path(sys.argv[1]), Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
tracker = tracking.Tracker(tracking.default_tracking_uri(runs), "crowd", runs_dir=runs)
queue = q.WorkQueue(q.open_storage(q.default_storage_url(runs)), "crowd@mini")
print("ok", tracker.experiment_id, flush=True)
"""


@pytest.mark.slow
def test_three_processes_creating_the_stores_at_once_all_succeed(tmp_path):
    """Before the creation lock, this left MLflow's tables half-migrated (store unusable)."""
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CREATE_STORES, str(tmp_path / "runs"), str(go)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(3)
    ]
    assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 3
    go.touch()  # all three create the stores at the same moment
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert len({o.split()[-1] for o in outs}) == 1  # one experiment
    tracking.check_reachable(tracking.default_tracking_uri(tmp_path / "runs"))


# ---------------------------------------------------------------------- R2: kill during logging

_SWEEP_DRIVER = """
import sys
from pathlib import Path
from bench.mini.profile import MiniProfile
from bench.sweep.profiles import get_profile
from bench.sweep.plan import Arch, RunPlan
from bench.sweep.spec import Point, parse_spec
from bench.sweep.coordinator import run_sweep
from ituning.run_config import TrainConfig

config = TrainConfig.model_validate_json(Path(sys.argv[1]).read_text())
class Prebuilt(MiniProfile):  # the config names the template's assets: nothing to build
    def prepare(self, plans=(), *, progress=True):
        pass

profile = Prebuilt(**vars(get_profile("mini", runs_dir=Path(sys.argv[2]), scale="tiny")))
plan = RunPlan(Point(), config, Arch("lm", 2, 32, 32, 0))
spec = parse_spec("name: logged\\naxes: {seed: [0]}\\n")
report = run_sweep(spec, profile, plans=[plan], progress=False)
raise SystemExit(0 if report.ok and len(report.done) == 1 else 1)
"""


@pytest.mark.slow
def test_sigkill_while_logging_to_mlflow_reuses_the_finished_folder(straight, tmp_path):
    """result.json is written, the MLflow run is still RUNNING: the rerun must not train again and
    must leave exactly one FINISHED run."""
    from mlflow import MlflowClient

    cfg, _, straight_result = straight
    config = tmp_path / "config.json"
    config.write_text(cfg.canonical_json())
    runs = tmp_path / "runs"
    args = ["-c", _SWEEP_DRIVER, str(config), str(runs)]
    assert _kill_at(args, "mlflow.log_result@1", tmp_path) == "mlflow.log_result@1"
    result = runs / "points" / cfg.digest() / "result.json"
    stamp = (result.read_bytes(), result.stat().st_mtime_ns)

    from bench.mini.profile import MiniProfile
    from bench.sweep.plan import Arch, RunPlan
    from bench.sweep.profiles import get_profile
    from bench.sweep.spec import Point, parse_spec

    class Prebuilt(MiniProfile):  # the config names the template's assets: nothing to build
        def prepare(self, plans=(), *, progress=True):
            pass

    profile = Prebuilt(**vars(get_profile("mini", runs_dir=runs, scale="tiny")))
    plan = RunPlan(Point(), cfg, Arch("lm", 2, 32, 32, 0))
    spec = parse_spec("name: logged\naxes: {seed: [0]}\n")
    report = sweep.run_sweep(spec, profile, plans=[plan], progress=False, log=lambda line: None)
    assert report.ok and report.done == [cfg.digest()]
    assert (result.read_bytes(), result.stat().st_mtime_ns) == stamp  # not trained again
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mini-tiny")
    found = {r.info.status: r for r in client.search_runs([exp.experiment_id])}
    assert sorted(found) == ["FINISHED", "KILLED"]
    assert found["FINISHED"].data.tags["reused_result"] == "True"
    logged = found["FINISHED"].data.metrics
    assert {k: logged.get(k) for k in _untimed(straight_result.metrics)} == _untimed(
        straight_result.metrics
    )
    states = {s for _, s in stores.trial_states(runs, stores.profile_store())}
    assert "RUNNING" not in states and "WAITING" not in states


def test_a_partial_rerun_replaces_only_its_rows_in_the_report(tmp_path):
    from bench.faults.report import report, updated
    from bench.faults.trials import FaultRow, RowResult

    def result(row_id: str, trials: int, passed: int, note: str, failures=()) -> RowResult:
        row = FaultRow(row_id, f"fault {row_id}", "holds", "test_x.py", lambda h, r: None)
        return RowResult(row, trials, passed, 0, 1.0, list(failures), [note])

    full = [result("R1", 2, 2, "first"), result("R2", 3, 1, "second", ["boom"])]
    old = report(full, command="python -m bench.faults", seconds=60, work=tmp_path)
    new = updated(
        old, [result("R2", 3, 3, "again"), result("R9", 1, 1, "new")],
        command="python -m bench.faults --rows R2,R9 --update", seconds=30, work=tmp_path,
    )  # fmt: skip
    lines = new.splitlines()
    assert "| R1 | fault R1 | holds | 2 | 2 | 0 | 1 s |" in lines  # untouched
    assert "| R2 | fault R2 | holds | 3 | 3 | 0 | 1 s |" in lines
    assert not [x for x in lines if x.startswith("| R2 |") and "| 1 |" in x]
    assert "FAILED: boom" not in new and "again" in new and "second" not in new
    assert (
        lines.index("| R9 | fault R9 | holds | 1 | 1 | 0 | 1 s |")
        == lines.index("| R2 | fault R2 | holds | 3 | 3 | 0 | 1 s |") + 1
    )
    assert lines[-1].startswith("- **R9**")
    assert "Rows R2, R9 rerun by `python -m bench.faults --rows R2,R9 --update`" in new
    assert "4 of 4 trials passed" in new and new.startswith(old.splitlines()[0])
