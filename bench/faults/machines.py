"""R13, several machines for real: the README's commands against a PostgreSQL queue and an
``mlflow server`` backed by PostgreSQL, three "machines" draining ``sweeps/smoke.yaml``.

A machine is a worker process in a pid namespace of its own (``unshare``): the other workers cannot
see its pid, so, as across real machines, only its heartbeats tell them it lives. Each has its own
working folder and ``runs/`` (nothing shared on disk but the data and backbones), and runs the
README's command in it. The faults injected into such a fleet, and what must hold after them, are
``bench.faults.several_machines``'s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.faults import stores
from bench.faults.servers import MlflowServer, PostgresServer, missing_postgres
from bench.faults.trials import TrialFailed, expect, one_line

SPEC = "smoke"
HEARTBEAT_S = 1
GRACE_S = 6
MACHINES = 3
RUN_TIMEOUT_S = 420.0
UNSHARE = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"]


def missing_pieces() -> str | None:
    """Why the scenario cannot run here (PostgreSQL, the driver, pid namespaces), or None."""
    problem = missing_postgres()
    if problem:
        return problem
    if shutil.which("unshare") is None:
        return "util-linux's unshare is missing (it gives each worker a machine's pid namespace)"
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a pid namespace (unshare, as root): {one_line(probe.stderr)[:200]}"
    return None


@dataclass
class Cluster:
    """The shared services: the optuna queue's database and the tracking server."""

    pg: PostgresServer
    tracking: MlflowServer
    storage_url: str

    @property
    def tracking_uri(self) -> str:
        return self.tracking.url


@contextmanager
def cluster(folder: Path) -> Iterator[Cluster]:
    """PostgreSQL with databases ``optuna`` and ``mlflow``, and ``mlflow server`` on the latter
    (artifacts under ``folder``); both stopped by their process ids at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    pg = PostgresServer()
    try:
        pg.start()
        storage_url = pg.create_database("optuna")
        tracking = MlflowServer(
            pg.create_database("mlflow"), folder / "mlartifacts", folder / "mlflow-server.log"
        ).start()
        try:
            yield Cluster(pg, tracking, storage_url)
        finally:
            tracking.stop()
    finally:
        pg.close()


def sweep_command(c: Cluster, workers: int) -> list[str]:
    """The README's "Several machines" command at test size (``--workers 0``: enqueue only)."""
    return [
        "-m", "bench.sweep", SPEC, "--scale", stores.SCALE, "--runs-dir", "runs",
        "--workers", str(workers), "--storage", c.storage_url, "--tracking-uri", c.tracking_uri,
        "--heartbeat", str(HEARTBEAT_S), "--grace", str(GRACE_S), "--quiet",
    ]  # fmt: skip


@dataclass
class Machine:
    name: str
    folder: Path
    proc: subprocess.Popen | None = None
    killed_at: float | None = None

    @property
    def log(self) -> Path:
        return self.folder / "sweep.log"

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """The machine dies: SIGKILL to every process of its namespace."""
        assert self.proc is not None
        self.killed_at = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def wait(self, deadline: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise TrialFailed(
                f"{self.name} ran over {RUN_TIMEOUT_S:.0f} s: {self.tail()}"
            ) from None

    def tail(self) -> str:
        return one_line(self.output()[-500:])


@dataclass
class Fleet:
    """Machines of one scenario, over the assets (tiny backbones and world) in ``assets``."""

    work: Path
    assets: Path
    env: dict[str, str]
    cluster: Cluster
    machines: list[Machine] = field(default_factory=list)

    def machine(self, name: str) -> Machine:
        folder = self.work / name
        runs = folder / "runs"
        runs.mkdir(parents=True)
        for shared in ("backbones", "data"):
            (runs / shared).symlink_to(self.assets / shared, target_is_directory=True)
        m = Machine(name, folder)
        self.machines.append(m)
        return m

    def enqueue(self) -> None:
        """Once, from the first machine's folder: the grid into the queue, nothing trained."""
        m = self.machines[0]
        proc = subprocess.run(
            [sys.executable, *sweep_command(self.cluster, 0)], cwd=m.folder, env=self.env,
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        )  # fmt: skip
        expect(
            proc.returncode == 0, f"enqueue failed: {one_line((proc.stdout + proc.stderr)[-500:])}"
        )

    def start(self, m: Machine, extra_env: dict[str, str] | None = None) -> None:
        with open(m.log, "w") as log:
            m.proc = subprocess.Popen(
                [*UNSHARE, sys.executable, *sweep_command(self.cluster, 1)],
                cwd=m.folder, env={**self.env, **(extra_env or {})}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def wait_all(self) -> dict[str, int]:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        return {m.name: m.wait(deadline) for m in self.machines if m.killed_at is None}

    def stop_all(self) -> None:
        for m in self.machines:
            if m.proc is not None and m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(m.proc.pid, signal.SIGKILL)
                m.proc.wait()


@contextmanager
def fleet(work: Path, assets: Path, env: dict[str, str]) -> Iterator[Fleet]:
    """A cluster and ``MACHINES`` machine folders; every process stopped at the end."""
    with cluster(work / "services") as c:
        f = Fleet(work, assets, env, c)
        for i in range(MACHINES):
            f.machine(f"machine{i}")
        try:
            yield f
        finally:
            f.stop_all()


def wait_for(what: str, cond: Callable[[], bool], fleet_: Fleet, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        dead = [m.name for m in fleet_.machines if m.proc is not None and m.proc.poll() is not None]
        expect(time.monotonic() < deadline, f"never saw {what}")
        expect(not dead or what.startswith("the end"), f"{dead} ended before {what}: "
               + "; ".join(m.tail() for m in fleet_.machines if m.name in dead))  # fmt: skip
        time.sleep(0.1)
