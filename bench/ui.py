"""The MLflow UI on the project's run store: ``python -m bench.ui [--port N]`` (``nox -s ui``).

Bound to loopback unless ``--host`` says otherwise: the UI can delete runs and read artefacts,
so it is not offered to the network by default. One worker and no job runner (measured: the
defaults cost ~3 GB of memory, these ~0.5 GB).

The server's output goes to ``RUNS/mlflow-server.log``. ``--screenshot FILE --spec NAME`` starts
the server, opens MLflow's run comparison of the spec's FINISHED runs in headless Chromium, saves
the page as a PNG and stops the server (how the README's picture of the ``dropping`` runs is made;
Debian: ``apt install chromium``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench import SPECS_DIR
from bench.sweep import tracking
from bench.sweep.axes import AXES
from bench.sweep.spec import find_spec, load_spec
from ituning.errors import ArgumentParser, ConfigError, cli_main
from ituning.files import atomic_path, canonical_json, sha256_text

READY_TIMEOUT_S = 60
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


#: The environment ``mlflow server`` runs in (no job runner: it would start its own workers).
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def tracking_server_argv(
    backend_uri: str, artifacts: Path, host: str = "127.0.0.1", port: int = 5000
) -> list[str]:
    """The README's ``mlflow server`` command line (one worker; run it with :data:`SERVER_ENV`)."""
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts),
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip


def server_command(
    runs_dir: Path, host: str = "127.0.0.1", port: int = 5000
) -> tuple[list[str], dict[str, str]]:
    """The ``mlflow server`` command line over a runs folder's store, and its extra environment."""
    runs_dir = Path(runs_dir).resolve()
    backend = tracking.default_tracking_uri(runs_dir)
    return tracking_server_argv(backend, runs_dir / "mlartifacts", host, port), dict(SERVER_ENV)


@contextlib.contextmanager
def serve(runs_dir: Path, host: str = "127.0.0.1", port: int = 5000) -> Iterator[str]:
    """A running server until the block exits (stopped by its process group); yields its URL."""
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    argv, env = server_command(runs_dir, host, port)
    log = Path(runs_dir) / "mlflow-server.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: the server's workers stop with it
        )
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    try:
        wait_ready(proc, url, log)
        yield url
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, timeout_s: float = 15) -> None:
    """Stop a process started with ``start_new_session=True`` and its children: SIGTERM to its
    group, SIGKILL after ``timeout_s``, then SIGKILL to what is left of the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived their parent


def wait_ready(
    proc: subprocess.Popen,
    url: str,
    log: Path,
    timeout_s: float = READY_TIMEOUT_S,
    hint: str = "is the port taken? try --port",
) -> None:
    """Until the server at ``url`` answers ``/health``; one-line ConfigError if it exits (with the
    last line of its ``log``) or stays silent past ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = log.read_text(errors="replace").strip().splitlines()
            raise ConfigError(
                f"mlflow server on {url} exited with code {proc.returncode}: "
                f"{err[-1] if err else 'no message'} ({hint}; log: {log})"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/health", timeout=2) as reply,
        ):
            if reply.status == 200:
                return
        time.sleep(0.5)
    raise ConfigError(f"mlflow server on {url} did not answer within {timeout_s:.0f} s")


def compare_path(runs_dir: Path, spec: str, experiment: str = "mini") -> str:
    """Path (after the server's URL) of the profile's experiment page in its chart view, showing
    the FINISHED runs of ``spec`` and led by a section on the metric the sweeps are about: test
    CIDEr per run, and a parallel-coordinates plot of the axes the spec varies against it.

    The view is an MLflow *shared view* (what the UI's Share button stores): an experiment tag
    ``mlflow.sharedViewState.<key>`` holding the filter and the charts, named in the URL."""
    client = tracking.client(tracking.default_tracking_uri(Path(runs_dir).resolve()))
    exp = client.get_experiment_by_name(experiment)
    query = f"attributes.status = 'FINISHED' and {tracking.spec_filter(spec)}"
    rates = _spec_rates(spec, runs_dir, experiment)
    if len(rates) == 1:  # runs at a rate a later search replaced stay out of the view
        query += f" and params.`optim.lr` = '{rates.pop()}'"
    if exp is None or not client.search_runs([exp.experiment_id], query, max_results=1):
        raise ConfigError(
            f"--spec {spec}: no FINISHED run of it in experiment {experiment} of {runs_dir}; run "
            f"`python -m bench.sweep {spec}` first"
        )
    metric = tracking.UI_TAGS["mlflow.experiment.primaryMetric.name"]
    state = {
        "searchFilter": query,
        "orderByKey": "attributes.start_time",
        "orderByAsc": True,
        "isAccordionReordered": True,
        "compareRunSections": [
            {"uuid": "sweep", "name": f"{spec}: {metric}", "display": True, "isReordered": False}
        ],
        "compareRunCharts": [
            {**_CHART, "uuid": "metric", "type": "BAR", "metricKey": metric},
            {
                **_CHART,
                "uuid": "axes",
                "type": "PARALLEL",
                "selectedParams": _varied_axes(spec),
                "selectedMetrics": [metric],
                "showAllRuns": True,
            },
        ],
    }
    key = f"{spec}-{sha256_text(canonical_json(state), 8)}"
    client.set_experiment_tag(exp.experiment_id, f"mlflow.sharedViewState.{key}", json.dumps(state))
    query_string = urllib.parse.urlencode({"viewStateShareKey": key, "compareRunsMode": "CHART"})
    return f"/#/experiments/{exp.experiment_id}/runs?{query_string}"


_CHART = {"metricSectionId": "sweep", "isGenerated": False, "deleted": False}


def _spec_rates(spec: str, runs_dir: Path, experiment: str) -> set[str]:
    """The learning rates (as logged) that the spec's points train at now, under the profile the
    experiment is named after; empty when that cannot be resolved here."""
    from bench.sweep.profiles import PROFILES, get_profile

    name, _, scale = experiment.partition("-")
    if name not in PROFILES or name == "paper":  # the paper profile needs its data root
        return set()
    try:
        profile = get_profile(name, runs_dir=runs_dir, scale=scale or "full")
        plans = profile.plan(load_spec(find_spec(spec, SPECS_DIR)))
    except ConfigError:
        return set()
    return {str(plan.config.optim.lr) for plan in plans}


def _varied_axes(spec: str) -> list[str]:
    """The axes whose value differs between the spec's points (all axes for an unknown spec)."""
    try:
        points = load_spec(find_spec(spec, SPECS_DIR)).points()
    except ConfigError:
        return list(AXES)
    return [name for name in AXES if len({p[name] for p in points}) > 1]


def screenshot(page: str, out: Path, *, width: int = 1600, height: int = 1100) -> Path:
    """Headless Chromium's PNG of ``page`` after its scripts ran (virtual time budget)."""
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        raise ConfigError(
            "--screenshot needs Chromium on PATH (Debian/Ubuntu: apt install chromium)"
        )
    out = Path(out)
    with atomic_path(out, suffix=".tmp.png") as tmp:  # no half-written PNG under its name
        cmd = [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--disable-background-networking", "--no-first-run", "--disable-extensions",
            f"--window-size={width},{height}", "--virtual-time-budget=60000",
            f"--screenshot={tmp}", page,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if proc.returncode != 0 or not tmp.is_file():
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise ConfigError(f"{browser} could not take the screenshot: {last}")
    return out


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.ui", description=__doc__.splitlines()[0])
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="the run store's folder")
    p.add_argument("--host", default="127.0.0.1", help="default loopback only")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--screenshot", type=Path, metavar="FILE", help="save a comparison PNG, exit")
    p.add_argument("--spec", default="dropping", help="whose runs --screenshot compares")
    p.add_argument("--profile", default="mini", help="the experiment (profile) of those runs")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error(f"--port {args.port}: must be 1-65535")
    if args.screenshot:
        page = compare_path(
            args.runs_dir, args.spec, args.profile
        )  # fails before the server starts
        with _terminate_unwinds(), serve(args.runs_dir, args.host, args.port) as url:
            path = screenshot(url + page, args.screenshot)
        print(f"wrote {path}")
        return 0
    with _terminate_unwinds(), serve(args.runs_dir, args.host, args.port) as url:
        print(f"MLflow UI: {url} (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


@contextlib.contextmanager
def _terminate_unwinds() -> Iterator[None]:
    """SIGTERM (kill, nox, a test harness) unwinds like Ctrl-C, so the server is stopped too."""
    before = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":
    raise SystemExit(main())
