"""Who holds a claimed point, told well enough to decide from another process whether it lives.

A worker records its host name, boot id, pid namespace, pid and process start time with its claim.
Only a process on the same machine (same host, boot and pid namespace: containers on one host can
share the first two) can check the pid, and the start time keeps a recycled pid from passing for
the dead worker. Anywhere else, the heartbeat's age decides (``bench.sweep.queue``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str | None:
    """Process start time (clock ticks since boot), or None if no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if not Path("/proc").is_dir():  # not Linux: fall back to a signal-0 probe
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                return "?"
            return "?"
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_namespace() -> str:
    """Containers on one host can share host name and boot id; pids mean nothing across them."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def identity(pid: int | None = None) -> dict[str, Any]:
    pid = os.getpid() if pid is None else pid
    return {
        "host": socket.gethostname(),
        "boot": _boot_id(),
        "pidns": _pid_namespace(),
        "pid": pid,
        "start": _start_ticks(pid),
    }


def same_machine(worker: dict[str, Any]) -> bool:
    """Same host, boot and pid namespace: only then can we tell from here whether it lives."""
    return (
        worker.get("host") == socket.gethostname()
        and worker.get("boot") == _boot_id()
        and worker.get("pidns", "") == _pid_namespace()
    )


def process_alive(worker: dict[str, Any]) -> bool:
    now = _start_ticks(int(worker.get("pid", -1)))
    return now is not None and (now == "?" or now == worker.get("start"))
