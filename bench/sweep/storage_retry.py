"""Calls to the optuna storage that outlive a busy or restarting database.

Several local workers share one SQLite file ("database is locked": retried with backoff); across
machines the storage is a database server that may restart: its lost connections are retried for up
to :data:`RECONNECT_S`, after one warning line, and :data:`OUTAGES` remembers when this process last
saw one (heartbeats could not be recorded then, so stale ones are not a dead worker's doing). A full
disk and a server that stays away end in one :class:`QueueError` line.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from bench.sweep.disk_full import disk_full
from ituning.errors import ITuningError, first_line

RECONNECT_S = 120.0  # a database server restarting: how long queue calls keep retrying
RECONNECT_EVERY_S = 2.0

T = TypeVar("T")


class QueueError(ITuningError):
    """The optuna storage is unreachable or unusable."""


class Outages:
    """When this process last failed to reach its database server. Nobody's heartbeat could be
    recorded then: until a grace period has passed since, a stale heartbeat is the outage's doing,
    not a dead worker's, and reaping on it would run a live worker's point a second time."""

    def __init__(self) -> None:
        self.last = float("-inf")

    def note(self) -> None:
        self.last = time.monotonic()

    def within(self, seconds: float) -> bool:
        return time.monotonic() - self.last < seconds


OUTAGES = Outages()


def retry(fn: Callable[[], T], attempts: int = 8) -> T:
    """Retry SQLite 'database is locked' (several local workers), and a lost database server
    (PostgreSQL or MySQL restarting) for up to ``RECONNECT_S``: then one line names the storage.
    A full disk is one line too; anything else propagates."""
    delay = 0.2
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if server_lost(exc):
                return reconnect(fn, exc, time.monotonic())
            if disk_full(exc):
                raise QueueError(
                    f"optuna storage: disk full ({reason(exc)}); free space on its filesystem "
                    "and rerun"
                ) from None
            if i == attempts - 1 or "locked" not in str(exc).lower():
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def reconnect(fn: Callable[[], T], exc: Exception, since: float) -> T:
    """``fn`` again every few seconds while the database server stays unreachable."""
    warned = False
    while time.monotonic() - since < RECONNECT_S:
        if not warned:
            print(
                f"warning: optuna storage unreachable ({reason(exc)}); retrying for "
                f"up to {RECONNECT_S:.0f} s",
                file=sys.stderr,
            )
            warned = True
        OUTAGES.note()
        time.sleep(RECONNECT_EVERY_S)
        try:
            result = fn()
        except Exception as again:
            if not server_lost(again):
                raise
            exc = again
        else:
            OUTAGES.note()  # its end, as this process saw it
            return result
    raise QueueError(f"optuna storage unreachable for {RECONNECT_S:.0f} s: {reason(exc)}") from None


def reason(exc: BaseException) -> str:
    """The database driver's own words, if the chain holds them (optuna's wrapper blames the
    commit's data)."""
    from sqlalchemy.exc import DBAPIError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DBAPIError) and seen.orig is not None:
            return first_line(seen.orig)
        seen = seen.__cause__ or seen.__context__
    return first_line(exc)


def server_lost(exc: BaseException) -> bool:
    """A database *server* connection failed or was cut (never SQLite: its errors are local and
    immediate, and 'locked' has its own retry)."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    seen: BaseException | None = exc
    while seen is not None:
        lost = isinstance(seen, OperationalError | InterfaceError) or (
            isinstance(seen, DBAPIError) and seen.connection_invalidated
        )
        if lost and not isinstance(getattr(seen, "orig", None), sqlite3.Error):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
