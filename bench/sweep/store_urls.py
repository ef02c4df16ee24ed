"""Store URLs (the optuna queue's ``--storage``, MLflow's ``--tracking-uri``): how they are shown,
and the SQLite ones checked before any library opens them.

Why check SQLite ourselves: handed a URL whose file is a folder or not a database, MLflow retries
its connection for minutes and optuna ends in a traceback; an in-memory database (``sqlite://``)
is opened happily but is invisible to the worker processes and gone when the sweep ends. Each of
these is one line here, in milliseconds.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SQLITE_FILE_PREFIX = "sqlite:///"


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        cred, _, host = rest.rpartition("@")
        if ":" in cred:
            cred = cred.split(":", 1)[0] + ":***"
        return f"{scheme}://{cred}@{host}"
    return url


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///FILE`` URL (``None`` for any other URL)."""
    return (
        Path(url.removeprefix(SQLITE_FILE_PREFIX)) if url.startswith(SQLITE_FILE_PREFIX) else None
    )


def sqlite_problem(url: str, example: str) -> str | None:
    """Why a SQLite URL cannot be a store shared by the sweep's processes, or ``None``.

    ``example`` is a good URL to suggest (``sqlite:///runs/optuna.db``). Non-SQLite URLs pass.
    """
    if not url.startswith("sqlite:"):
        return None
    path = sqlite_path(url)
    if path is None or str(path) in ("", ":memory:") or "mode=memory" in url:
        return (
            "an in-memory SQLite database is invisible to the worker processes and lost when the "
            f"sweep ends; give a file, e.g. {example}"
        )
    if not path.exists():
        return None  # created on first use (the caller checks that its folder is writable)
    if not path.is_file():
        return f"{path} is not a database file (it is a folder or a device); name a file, e.g. {example}"
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            con.execute("PRAGMA schema_version").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        if "locked" in str(exc):
            return None  # busy, not broken: the caller waits for its lock
        return f"{path} is not a SQLite database ({exc}); name another file, e.g. {example}"
    return None
