"""A persistent METEOR 1.5 process, reusable across evaluations.

Runs pycocoevalcap's own ``meteor-1.5.jar`` with pycocoevalcap's own flags and line protocol, so the
numbers are the official ones. It replaces pycocoevalcap's ``Meteor`` wrapper because that wrapper
(1) never reads the JVM's stderr pipe, which can fill and hang the process, (2) leaves its lock held
when a read fails, deadlocking every later call, (3) turns a dead JVM into an opaque
``ValueError: could not convert string to float: ''``. Exposing the per-image statistics
(``stats_many``) separately from their aggregation (``evaluate``) also lets a domain breakdown
re-aggregate subsets without matching every caption again.

The JVM loads METEOR's paraphrase table at start-up (~15 s on 2 cores); start one per scorer.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from pycocoevalcap.meteor import meteor as _pycoco_meteor

from ituning.errors import ITuningError
from ituning.metrics.jvm import JVM_QUIET

METEOR_DIR = Path(_pycoco_meteor.__file__).resolve().parent
METEOR_JAR = _pycoco_meteor.METEOR_JAR


def _clean_segment(text: str) -> str:
    """Keep one caption from breaking METEOR's ``|||``-separated, newline-terminated protocol."""
    return " ".join(text.replace("|||", " ").split())


class MeteorProcess:
    """One METEOR JVM speaking the ``SCORE``/``EVAL`` stdio protocol; thread-safe."""

    def __init__(self, java: str = "java") -> None:
        self._lock = threading.Lock()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the JVM)
        cmd = [java, *JVM_QUIET, "-Dfile.encoding=UTF-8", "-jar", "-Xmx2G", METEOR_JAR]
        cmd += ["-", "-", "-stdio", "-l", "en", "-norm"]
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            cmd,
            cwd=METEOR_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.pid = self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stats(self, hypothesis: str, references: Sequence[str]) -> str:
        """METEOR's sufficient statistics for one hypothesis against its references."""
        return self.stats_many([(hypothesis, references)])[0]

    def stats_many(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
        """Sufficient statistics for many (hypothesis, references) pairs, in order.

        The requests are streamed from a writer thread while replies are read, instead of one round
        trip per image (~20% faster on 5,000 images); METEOR answers strictly line by line.
        """
        payload = b"".join(
            f"SCORE ||| {' ||| '.join(_clean_segment(r) for r in refs)} ||| "
            f"{_clean_segment(hyp)}\n".encode()
            for hyp, refs in items
        )
        with self._lock:
            proc = self._require_running()
            write_errors: list[OSError] = []

            def feed() -> None:
                try:
                    assert proc.stdin is not None
                    proc.stdin.write(payload)
                    proc.stdin.flush()
                except OSError as exc:
                    write_errors.append(exc)

            writer = threading.Thread(target=feed, name="meteor-feed", daemon=True)
            writer.start()
            try:
                return [self._readline() for _ in items]
            finally:
                writer.join()
                if write_errors and self._proc is not None:
                    self._fail(f"could not write to it ({write_errors[0]})")

    def evaluate(self, stats: Sequence[str]) -> tuple[float, list[float]]:
        """Aggregate statistics into (corpus METEOR, per-item METEOR), as pycocoevalcap reports."""
        if not stats:
            raise ValueError("METEOR needs at least one item to evaluate")
        with self._lock:
            self._write("EVAL ||| " + " ||| ".join(stats))
            per_item = [float(self._readline()) for _ in stats]
            return float(self._readline()), per_item

    def _write(self, line: str) -> None:
        proc = self._require_running()
        try:
            assert proc.stdin is not None
            proc.stdin.write(line.encode("utf-8") + b"\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            self._fail(f"could not write to it ({exc})")

    def _readline(self) -> str:
        proc = self._require_running()
        assert proc.stdout is not None
        line = proc.stdout.readline().decode("utf-8").strip()
        if not line:
            self._fail("it closed its output")
        return line

    def _require_running(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise ITuningError("the METEOR process was closed; create a new CaptionScorer")
        if self._proc.poll() is not None:
            self._fail(f"it exited with code {self._proc.returncode}")
        return self._proc

    def _fail(self, what: str) -> None:
        tail = self._stderr_tail()
        self.close()
        raise ITuningError(
            f"METEOR ({METEOR_DIR / METEOR_JAR}) failed: {what}"
            + (f"; stderr: {tail}" if tail else "")
            + "; check that Java runs and has 2 GB of heap"
        )

    def _stderr_tail(self, limit: int = 300) -> str:
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        return " ".join(text.split())[-limit:]

    def close(self) -> None:
        """End the JVM (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, self._stderr):
            if stream is not None:
                stream.close()

    def __del__(self) -> None:
        # Never take the lock here: a finaliser must not block.
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
