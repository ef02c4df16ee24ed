"""Real servers for the several-machines scenario: a PostgreSQL cluster and an ``mlflow server``.

Both run on loopback ports in throwaway folders and are stopped by their own process ids, so a test
or a fault trial can stop and restart them mid-sweep. PostgreSQL refuses to run as root: as root,
the cluster belongs to the ``postgres`` account (which Debian's package creates) and lives in a
folder of its own under the system's temporary folder (pytest's folders are private to root).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.faults.harness import free_port, log_tail
from bench.ui import SERVER_ENV, stop_group, tracking_server_argv, wait_ready
from ituning.errors import ITuningError

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
INSTALL_HINT = (
    "install PostgreSQL's server (Debian/Ubuntu: apt-get install postgresql; `nox -s tests` does "
    "it as root)"
)


class ServerError(ITuningError):
    """A server would not start or stop."""


def postgres_bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``postgres``: on PATH, else Debian's versioned folder."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return versions[0].parent if versions else None


def missing_postgres() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None."""
    if postgres_bin_dir() is None:
        return f"PostgreSQL's initdb is not installed: {INSTALL_HINT}"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return (
                f"running as root without a 'postgres' account to own the cluster: {INSTALL_HINT}"
            )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the PostgreSQL driver is missing: pip install 'psycopg[binary]'"
    return None


@dataclass
class PostgresServer:
    """One cluster: ``start()`` creates it (first call) and starts ``postgres``; ``stop()`` sends
    the server process a fast shutdown (SIGINT) and waits; ``start()`` again restarts it."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ituning-pg-")))
    proc: subprocess.Popen | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_owner(self) -> dict:
        return (
            {"user": "postgres", "group": "postgres", "extra_groups": []}
            if os.geteuid() == 0
            else {}
        )

    def start(self) -> PostgresServer:
        problem = missing_postgres()
        if problem:
            raise ServerError(problem)
        bindir = postgres_bin_dir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        if not self.data_dir.exists():
            subprocess.run(
                [bindir / "initdb", "-D", self.data_dir, "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--no-sync"],
                check=True, capture_output=True, **self._as_owner(),
            )  # fmt: skip
        log = open(self.log_file, "ab")  # noqa: SIM115 - the server writes it while it runs
        if os.geteuid() == 0:
            shutil.chown(self.log_file, "postgres", "postgres")
        self.proc = subprocess.Popen(
            [bindir / "postgres", "-D", self.data_dir, "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
             "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=log, stderr=log, start_new_session=True, **self._as_owner(),
        )  # fmt: skip
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(
                    f"postgres exited {self.proc.returncode}: {log_tail(self.log_file)}"
                )
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise ServerError(f"postgres not ready after {START_TIMEOUT_S:.0f} s") from None
                time.sleep(0.2)

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast shutdown": clients are disconnected
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        """Stop the server and delete its cluster."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class MlflowServer:
    """``mlflow server`` with the README's flags, its runs in ``backend_uri`` (PostgreSQL) and its
    artifacts in ``artifacts`` (served by the server itself)."""

    backend_uri: str
    artifacts: Path
    log_file: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        argv = tracking_server_argv(self.backend_uri, self.artifacts, "127.0.0.1", self.port)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=log, env={**os.environ, **SERVER_ENV},
                start_new_session=True,
            )  # fmt: skip
        try:
            wait_ready(self.proc, self.url, self.log_file, START_TIMEOUT_S, "is the port taken?")
        except ITuningError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM to the server's process group (its uvicorn workers too), SIGKILL if it lingers."""
        if self.proc is not None:
            stop_group(self.proc, STOP_TIMEOUT_S)
            self.proc = None
