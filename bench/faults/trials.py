"""Trial bookkeeping: a row is a series of trials, each passes or fails with a one-line reason.

A failed check raises :class:`TrialFailed`; anything else a trial raises is a crash of the suite's
own code, still counted as a failed trial (with the file and line) so that one broken case never
hides the others.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.faults.harness import FaultHarness, Proc

_PACKAGE = Path(__file__).resolve().parent


class TrialFailed(Exception):
    """A check of a trial did not hold."""


def expect(condition: object, message: str) -> None:
    """Fail the trial with ``message`` unless ``condition`` holds."""
    if not condition:
        raise TrialFailed(message)


def error_line(proc: Proc, *names: str) -> str:
    """Exit 2, no traceback, exactly one ``error:`` line on stderr naming ``names`` (progress
    bars of the work done before the failure may precede it); returns that line."""
    lines = [line for line in proc.err.splitlines() if line.startswith("error: ")]
    expect(proc.rc == 2, f"exit {proc.rc}: {proc.tail()}")
    expect("Traceback" not in proc.text, f"traceback: {proc.tail()}")
    expect(len(lines) == 1, f"{len(lines)} error lines: {proc.tail()}")
    missing = [n for n in names if n not in lines[0]]
    expect(not missing, f"error line lacks {missing}: {lines[0]}")
    return lines[0]


def refused_cleanly(proc: Proc, names: Sequence[str], untouched: Sequence[Path], cwd: Path) -> str:
    """The bad-input contract: exit 2, stderr exactly one ``error:`` line naming ``names``, no
    traceback, and nothing written: no path of ``untouched`` exists and ``cwd`` stays empty.
    Returns the line."""
    lines = [line for line in proc.err.splitlines() if line.strip()]
    expect(proc.rc == 2, f"exit {proc.rc}: {proc.tail()}")
    expect("Traceback" not in proc.text, f"traceback: {proc.tail()}")
    expect(len(lines) == 1 and lines[0].startswith("error: "), f"stderr: {proc.tail()}")
    missing = [n for n in names if n not in lines[0]]
    expect(not missing, f"error line lacks {missing}: {lines[0]}")
    for path in untouched:
        expect(not path.exists(), f"{path.name} was created")
    expect(not any(cwd.iterdir()), f"wrote into the working folder: {list(cwd.iterdir())}")
    return lines[0]


@dataclass
class Trial:
    """One case of a row: the results it lost and what it noted."""

    name: str
    lost: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FaultRow:
    """A row of the reliability table: the fault, what must hold, the unit tests that also cover
    it, and the function that injects it and checks the outcome."""

    id: str
    fault: str
    holds: str
    tests: str
    check: Callable[[FaultHarness, RowResult], None]


@dataclass
class RowResult:
    """A row's tally: trials run and passed, results lost, time, failures and notes."""

    row: FaultRow
    trials: int = 0
    passed: int = 0
    lost: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def fault(self) -> str:
        return self.row.fault

    @property
    def holds(self) -> str:
        return self.row.holds


def run_trial(row: RowResult, name: str, fn: Callable[[Trial], None]) -> None:
    """Run one trial, count it on ``row`` and print its line."""
    t = Trial(name)
    row.trials += 1
    started = time.perf_counter()
    status = "FAILED"
    try:
        fn(t)
    except TrialFailed as exc:
        row.failures.append(f"{name}: {exc}")
    except Exception as exc:  # a crash of the suite itself is a failed trial, with its place
        ours = [f for f in traceback.extract_tb(exc.__traceback__) if _in_package(f.filename)]
        where = f" ({Path(ours[-1].filename).name}:{ours[-1].lineno})" if ours else ""
        row.failures.append(f"{name}: {type(exc).__name__}: {exc}{where}")
    else:
        row.passed += 1
        status = "ok"
    row.lost += t.lost
    took = time.perf_counter() - started
    detail = f" - {one_line('; '.join(t.notes))}" if t.notes else ""
    print(f"  [{row.id}] {status:6} {name} ({took:.0f} s){detail}", flush=True)


def _in_package(filename: str) -> bool:
    return Path(filename).resolve().parent == _PACKAGE


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) made one space."""
    return " ".join(text.split())
