"""The fault harness: a scratch work folder, the real programs run and killed as subprocesses at
pause points or moments, and the tiny assets, sweeps and training runs the rows start from.

Why subprocesses: a SIGKILL is only a SIGKILL, and an exit code only an exit code, when the program
runs on its own. Kills at exact moments use the library's pause points (``ituning.faultpoints``):
the process pauses there, announces it in a marker file, and is killed from here with SIGKILL (its
whole process group, so the METEOR JVM dies with it).
"""

from __future__ import annotations

import logging
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import REPO_ROOT, SPECS_DIR
from bench.faults import stores
from bench.faults.trials import TrialFailed, one_line
from ituning.faultpoints import MARKER_ENV, PAUSE_ENV
from ituning.files import atomic_write_json

#: How long a process may take to reach the moment it is to be killed at.
KILL_TIMEOUT_S = 300.0


# ---------------------------------------------------------------------- processes and logs


@dataclass
class Proc:
    """A finished subprocess: exit code, output and duration."""

    rc: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err

    def tail(self, n: int = 600) -> str:
        return one_line(self.text[-n:])


@dataclass
class Killed:
    """How a kill went: ``killed`` is False if the process exited first."""

    killed: bool
    where: str
    seconds: float


def log_tail(path: Path) -> str:
    """The end of a log file on one line ("" if unreadable)."""
    try:
        return one_line(path.read_text()[-400:])
    except OSError:
        return ""


def free_port() -> int:
    """A local TCP port nobody listens on (at the moment of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sweep_started(log: Path) -> Callable[[], bool]:
    """A sweep's work started: its log names the first point's run folder."""
    return lambda: log.exists() and "running in" in log.read_text(errors="replace")


# ---------------------------------------------------------------------- the harness


class FaultHarness:
    """The work folder, subprocesses, scratch runs folders and reference results shared by the
    rows. ``trials`` is the number of random-moment kills (and crowd repeats) per row."""

    def __init__(self, work: Path, *, quick: bool, trials: int, seed: int, log: Callable):
        self.work = work
        self.quick = quick
        self.trials = trials
        self.rng = random.Random(seed)
        self.log = log
        self.reference_seconds = 0.0
        self.train_reference_seconds: dict[bool, float] = {}
        self._template: Path | None = None
        self._empty_store: Path | None = None
        self._reference: dict[str, dict] | None = None
        self._train_refs: dict[bool, dict] = {}
        self._counter = 0

    # ------------------------------------------------------------------ processes

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """This environment without pause points or injected faults, importing this checkout."""
        env = {k: v for k, v in os.environ.items() if k not in (PAUSE_ENV, MARKER_ENV)}
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env["PYTHONHASHSEED"] = "0"
        env.pop("ITUNING_INJECT_NONFINITE_AT_STEP", None)
        return {**env, **(extra or {})}

    def run(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 900,
        memory: int | None = None,
    ) -> Proc:
        """``python args`` to the end (killed, and the trial failed, past ``timeout``); with
        ``memory``, its address space is limited to that many bytes (a memory bomb then fails
        with a MemoryError instead of taking the machine)."""

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd or self.work,
            env=self.env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=limit if memory else None,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise TrialFailed(f"{' '.join(args[:3])} ran over {timeout:.0f} s") from None
        return Proc(proc.returncode, out, err, time.perf_counter() - started)

    def kill_at(
        self,
        args: Sequence[str],
        *,
        point: str | None = None,
        delay: float | None = None,
        after: Callable[[], bool] | None = None,
        env: dict[str, str] | None = None,
        log: Path,
    ) -> Killed:
        """Start ``args``; SIGKILL its process group once it pauses at ``point``, or ``delay``
        seconds after ``after()`` first holds (the work started; machine load then shifts the
        moment less than the start-up does). ``killed`` is False if it exited first."""
        marker = self.scratch("marker")
        extra = dict(env or {})
        if point:
            extra.update({PAUSE_ENV: point, MARKER_ENV: str(marker)})
        started = time.monotonic()
        clock = None if after is not None else started
        with open(log, "w") as handle:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=self.work,
                env=self.env(extra),
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            while True:
                if point and marker.exists():
                    where = marker.read_text().split()[0]
                    break
                if clock is None and after is not None and after():
                    clock = time.monotonic()
                if delay is not None and clock is not None and time.monotonic() - clock >= delay:
                    where = f"{delay:.1f} s into the work"
                    break
                if proc.poll() is not None:
                    return Killed(False, f"exited ({proc.returncode})", time.monotonic() - started)
                if time.monotonic() - started > KILL_TIMEOUT_S:
                    raise TrialFailed(f"never reached {point or delay} ({log_tail(log)})")
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return Killed(True, where, time.monotonic() - started)

    def timed(self, args: Sequence[str], *, log: Path, after: Callable[[], bool]) -> float:
        """Run ``args`` to the end; the seconds from ``after()`` first holding to its exit."""
        with open(log, "w") as handle:
            proc = subprocess.Popen(
                [sys.executable, *args], cwd=self.work, env=self.env(), stdout=handle,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        clock = None
        while proc.poll() is None:
            if clock is None and after():
                clock = time.monotonic()
            time.sleep(0.02)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:3])} failed: {log_tail(log)}")
        return time.monotonic() - (clock or time.monotonic())

    def scratch(self, name: str) -> Path:
        """A new path under the work folder (never one a kept earlier run left there)."""
        while True:
            self._counter += 1
            path = self.work / f"{name}-{self._counter:03d}"
            if not path.exists():
                return path

    # ------------------------------------------------------------------ sweeps

    def template(self) -> Path:
        """Tiny mini assets (quick backbones, Shapes world), built once for the suite."""
        if self._template is None:
            from bench.sweep.profiles import get_profile

            path = self.work / "template"
            self.log("  building the tiny mini backbones and Shapes world (once)")
            get_profile(stores.PROFILE, runs_dir=path, scale=stores.SCALE).prepare(progress=False)
            self._template = path
        return self._template

    def paper_weights(self) -> Path:
        """A ``--weights`` folder of the template's tiny backbones (paper-profile scenarios)."""
        from bench.faults.inputs import write_paper_weights

        path = self.work / "paper-weights"
        if not path.exists():
            write_paper_weights(path, self.template() / "backbones")
        return path

    def empty_store(self) -> Path:
        """An MLflow SQLite store with its tables created (migrations take seconds)."""
        if self._empty_store is None:
            from mlflow import MlflowClient

            logging.getLogger("mlflow").setLevel(logging.WARNING)  # after mlflow set its own
            path = self.scratch("store-template") / "mlflow.db"
            path.parent.mkdir(parents=True)
            MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)
            self._empty_store = path
        return self._empty_store

    def runs_dir(self, name: str, *, own: Sequence[str] = (), store: bool = True) -> Path:
        """A fresh runs folder sharing the template's assets (``own`` ones are copied)."""
        runs = self.scratch(name)
        runs.mkdir(parents=True)
        for sub in ("backbones", "data"):
            if sub in own:
                shutil.copytree(self.template() / sub, runs / sub)
            else:
                (runs / sub).symlink_to(self.template() / sub)
        if store:
            shutil.copy(self.empty_store(), runs / "mlflow.db")
        return runs

    @staticmethod
    def sweep_args(spec: Path | str, runs: Path, *extra: str) -> list[str]:
        """One worker unless ``extra`` says otherwise: pause points count per process, so
        "the 3rd evaluated split" means one sequence of events (R7 runs several workers)."""
        workers = [] if "--workers" in extra else ["--workers", "1"]
        return ["-m", "bench.sweep", str(spec), "--scale", stores.SCALE, "--runs-dir", str(runs),
                "--quiet", *workers, *extra]  # fmt: skip

    def spec_file(self, name: str, text: str) -> Path:
        """A spec file ``<name>.yaml`` of ``text`` in a scratch folder."""
        path = self.scratch("spec") / f"{name}.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(text)
        return path

    @staticmethod
    def plans(runs: Path, spec: Path) -> list:
        """The points a sweep of ``spec`` plans in ``runs`` (their run folder digests)."""
        from bench.sweep.profiles import get_profile
        from bench.sweep.spec import load_spec

        return get_profile(stores.PROFILE, runs_dir=runs, scale=stores.SCALE).plan(load_spec(spec))

    def reference(self) -> dict[str, dict]:
        """The ``smoke`` sweep, uninterrupted: what every interrupted sweep must end with."""
        if self._reference is None:
            spec = SPECS_DIR / "smoke.yaml"
            runs = self.runs_dir("reference")
            log = runs / "sweep.log"
            self.reference_seconds = self.timed(
                self.sweep_args(spec, runs), log=log, after=sweep_started(log)
            )
            self._reference = stores.sweep_outcomes(runs, self.plans(runs, spec))  # type: ignore[assignment]
        return self._reference  # type: ignore[return-value]

    # ------------------------------------------------------------------ training runs

    def train_config(self, *, vlp: bool, features: Path) -> Path:
        """The tiny profile's base point as a TrainConfig file, with its own feature cache."""
        from bench.sweep.profiles import get_profile
        from bench.sweep.spec import Point

        profile = get_profile(stores.PROFILE, runs_dir=self.template(), scale=stores.SCALE)
        raw = profile.resolve(Point().replace({"vlp": vlp}), {}).config.model_dump(mode="json")
        raw["feature_cache"] = str(features)
        path = self.scratch("config") / "config.json"
        return atomic_write_json(path, raw, indent=1)

    @staticmethod
    def train_args(config: Path, out: Path) -> list[str]:
        return ["-m", "ituning.train", "--config", str(config), "--out", str(out)]

    def train_reference(self, vlp: bool) -> dict:
        """An uninterrupted training run: its ``result`` (outcome) and its ``dir`` (with the
        feature cache and the run folder, for the rows that damage a copy)."""
        if vlp not in self._train_refs:
            base = self.scratch("train-reference")
            base.mkdir()
            config = self.train_config(vlp=vlp, features=base / "features")
            self.train_reference_seconds[vlp] = self.timed(
                self.train_args(config, base / "run"),
                log=base / "train.log",
                after=(base / "run" / "config.json").exists,
            )
            self._train_refs[vlp] = {"result": stores.outcome(base / "run"), "dir": base}
        return self._train_refs[vlp]
