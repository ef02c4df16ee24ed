"""R6, a tracking server or optuna storage that is unreachable, hung, unusable or locked: exit 2
with the URL (password masked), before anything is built or trained. Finding out after an hour
of training that the results cannot be recorded would waste that hour."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.faults.harness import FaultHarness, free_port
from bench.faults.trials import RowResult, Trial, error_line, expect, run_trial


def check_unreachable_stores(h: FaultHarness, row: RowResult) -> None:
    def fails_fast(t: Trial, args: Sequence[str], url: str, runs: Path, *names: str) -> None:
        proc = h.run(args)
        error_line(proc, url, *names)
        trained = [p for p in ("backbones", "data", "points", "features") if (runs / p).exists()]
        expect(not trained, f"built or trained before failing: {trained}")
        t.notes.append(f"{proc.seconds:.1f} s")

    def server_down(t: Trial) -> None:
        runs = h.scratch("r6-runs")
        url = f"http://127.0.0.1:{free_port()}"
        fails_fast(t, h.sweep_args("smoke", runs, "--tracking-uri", url), url, runs, "unreachable")

    def server_hung(t: Trial) -> None:
        runs = h.scratch("r6-runs")
        with socket.socket() as sock:  # accepts connections, never answers
            sock.bind(("127.0.0.1", 0))
            sock.listen(8)
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            fails_fast(
                t, h.sweep_args("smoke", runs, "--tracking-uri", url), url, runs, "timed out"
            )

    def storage_unusable(t: Trial) -> None:
        runs = h.scratch("r6-runs")
        blocker = h.scratch("r6-file")
        blocker.write_text("")
        url = f"sqlite:///{blocker}/optuna.db"
        fails_fast(t, h.sweep_args("smoke", runs, "--storage", url), url, runs, "unreachable")

    def storage_server_down(t: Trial) -> None:
        runs = h.scratch("r6-runs")
        port = free_port()
        url = f"postgresql://sweep:secret@127.0.0.1:{port}/sweeps"
        shown = f"postgresql://sweep:***@127.0.0.1:{port}/sweeps"
        fails_fast(t, h.sweep_args("smoke", runs, "--storage", url), shown, runs)

    def storage_locked(t: Trial) -> None:
        runs = h.scratch("r6-runs")
        runs.mkdir()
        db = runs / "optuna.db"
        sqlite3.connect(db).execute("CREATE TABLE x (y)").connection.commit()
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sqlite3, sys, time\n"
             "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(300)\n",
             str(db)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            expect(holder.stdout.readline().strip() == "locked", "could not lock")
            url = f"sqlite:///{db}"
            fails_fast(t, h.sweep_args("smoke", runs), url, runs, "locked by another process")
        finally:
            holder.kill()
            holder.wait()

    run_trial(row, "MLflow tracking server down", server_down)
    run_trial(row, "MLflow tracking server accepts but never answers", server_hung)
    run_trial(row, "optuna storage unusable (SQLite under a file)", storage_unusable)
    run_trial(row, "optuna storage server unreachable (PostgreSQL URL)", storage_server_down)
    run_trial(row, "optuna storage locked by another process", storage_locked)
    row.notes.append("fresh runs folder: nothing built (no backbones, world, features, points)")
