"""The sweep's work queue: an optuna study whose WAITING trials are the grid points still to run.

Why optuna: it already gives an RDB-backed study that many processes on many machines can share
(SQLite locally, PostgreSQL/MySQL across machines), an atomic WAITING -> RUNNING claim, and
heartbeats. We use none of its samplers: each point is enqueued once with ``enqueue_trial`` and a
worker claims it (optuna's ``GridSampler`` re-runs a still-running grid point once every point has
started, so it can duplicate work).

One study per profile (``mini``, ``mini-tiny``, ``paper``), like the MLflow experiment: a point that
several specs contain is queued once. Each trial carries its point in ``user_attrs``: ``digest``
(the run id), ``config`` (the resolved TrainConfig as canonical JSON), ``label``, ``axes`` and
``arch`` (what MLflow logs), and ``specs`` (which specs asked for it). A worker runs exactly that
configuration, so machines need the same relative data paths but not the same spec file. A trial
records who works on a point; it is not the record that the point is done (its MLflow run is).

A worker that dies leaves its trial RUNNING. :meth:`WorkQueue.reap` turns such trials into FAIL and
enqueues the point again, exactly once (the FAIL transition is a row-locked update: one process
wins), when

* the worker ran on this machine (same host name, boot id and pid namespace) and its process is
  gone (checked by pid *and* start time, so a recycled pid is not mistaken for it): immediately; or
* its heartbeat (recorded by the database's clock, so machines' clocks may differ) is older than
  ``grace_s``: any machine, after the grace period.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from bench.sweep import storage_retry
from bench.sweep.storage_retry import QueueError, retry
from bench.sweep.store_urls import mask_url, sqlite_problem
from bench.sweep.worker_identity import identity, process_alive, same_machine
from ituning.errors import first_line
from ituning.files import file_lock

HEARTBEAT_S = 10
GRACE_S = 60
LOCK_WAIT_S = 10  # opening a SQLite storage that another process keeps locked fails after this


@dataclass(frozen=True)
class Claim:
    """A grid point this worker now owns (its trial is RUNNING under our identity)."""

    trial_id: int
    number: int
    digest: str
    config_json: str
    label: str
    attrs: dict[str, Any]


def default_storage_url(runs_dir: Path) -> str:
    return f"sqlite:///{Path(runs_dir) / 'optuna.db'}"


@contextmanager
def creation_lock(url: str) -> Iterator[None]:
    """Serialise the first use of a SQLite database (``<db>.lock``, ``flock``) across processes.

    Creating or migrating a SQLite store from several processes at once corrupts it: three sweeps
    started together on a fresh runs folder left MLflow's alembic tables half-migrated (every later
    sweep refused the store) and optuna's racing on ``alembic_version``. Servers (PostgreSQL,
    MySQL, an MLflow server) serialise this themselves: a no-op for them.
    """
    if not url.startswith("sqlite:///"):
        yield
        return
    path = Path(url.removeprefix("sqlite:///"))
    with file_lock(path.with_name(path.name + ".lock")):
        yield


def open_storage(
    url: str,
    *,
    heartbeat_s: int = HEARTBEAT_S,
    grace_s: int = GRACE_S,
    study_name: str | None = None,
) -> RDBStorage:
    """Connect (creating tables if needed); QueueError naming the URL if that fails."""
    problem = sqlite_problem(url, "sqlite:///runs/optuna.db")
    if problem:
        raise QueueError(f"optuna storage {mask_url(url)}: {problem}")
    if url.startswith("sqlite:///"):
        try:
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QueueError(
                f"optuna storage {mask_url(url)} is unreachable or unusable: {exc.strerror}"
            ) from None
        _check_not_locked(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            with creation_lock(url):
                storage = RDBStorage(
                    url,
                    heartbeat_interval=heartbeat_s,
                    grace_period=grace_s,
                    heartbeat_stale_trial_callback=_requeue,
                    engine_kwargs=_engine_kwargs(url),
                )
            if url.startswith("sqlite"):
                _serialise_sqlite(storage.engine)
            return storage
        except ImportError as exc:
            raise QueueError(
                f"optuna storage {mask_url(url)}: database driver missing ({exc.name or exc}); "
                "install it (e.g. psycopg2-binary for PostgreSQL, PyMySQL for MySQL)"
            ) from None
        except Exception as exc:  # sqlalchemy/optuna errors: report the URL, not a traceback
            raise QueueError(
                f"optuna storage {mask_url(url)} is unreachable or unusable: {first_line(exc)}"
            ) from None


def _check_not_locked(url: str) -> None:
    """Fail in seconds, not after the workers' 60 s lock timeout (and optuna's retries), when
    another process holds an existing SQLite storage locked; workers hold it for milliseconds."""
    path = Path(url.removeprefix("sqlite:///"))
    if not path.is_file():
        return
    try:
        con = sqlite3.connect(path, timeout=LOCK_WAIT_S, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
        finally:
            con.close()
    except sqlite3.Error as exc:
        if "locked" in str(exc):
            raise QueueError(
                f"optuna storage {mask_url(url)} is locked by another process (no write access "
                f"within {LOCK_WAIT_S} s); stop that process or pass another --storage"
            ) from None
        raise QueueError(
            f"optuna storage {mask_url(url)} is unreachable or unusable: {first_line(exc)}"
        ) from None


def _serialise_sqlite(engine) -> None:
    """Make every SQLite transaction ``BEGIN IMMEDIATE``.

    Python's sqlite3 driver runs a SELECT outside any transaction and opens one only at the first
    write, so optuna's read-check-write claim (``SELECT ... FOR UPDATE`` on other databases) is not
    atomic on SQLite: two workers can both read WAITING and both claim the point (measured: 4 of
    60 points claimed twice by 3 workers). Taking the write lock at BEGIN serialises claims.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # pooled connections predate the listeners


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Several local workers write (claims, heartbeats): wait for the lock instead of failing.
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}


class WorkQueue:
    """One study (``<spec>@<profile>``) in one storage; every method is safe to call concurrently."""

    def __init__(self, storage: RDBStorage, study_name: str) -> None:
        self.storage = storage
        self.study_name = study_name
        self.study = retry(
            lambda: optuna.create_study(
                storage=storage, study_name=study_name, direction="maximize", load_if_exists=True
            )
        )
        self.grace_s = storage.grace_period or 2 * (storage.heartbeat_interval or HEARTBEAT_S)

    # ------------------------------------------------------------------ inspection

    def trials(self, states: Iterable[TrialState] | None = None) -> list[FrozenTrial]:
        states = tuple(states) if states is not None else None
        return retry(lambda: self.study.get_trials(deepcopy=False, states=states))

    def by_digest(self) -> dict[str, list[FrozenTrial]]:
        out: dict[str, list[FrozenTrial]] = {}
        for t in self.trials():
            digest = t.user_attrs.get("digest")
            if digest:
                out.setdefault(digest, []).append(t)
        return out

    # ------------------------------------------------------------------ producer side

    def enqueue(self, items: Iterable[dict[str, Any]]) -> int:
        """Enqueue each item (user_attrs with a ``digest``) unless queued or running already; a
        live trial of the same point learns the item's ``specs`` instead. Returns how many were
        enqueued."""
        live = {
            t.user_attrs["digest"]: t
            for t in self.trials((TrialState.WAITING, TrialState.RUNNING))
            if "digest" in t.user_attrs
        }
        present: set[str] = set()
        n = 0
        for attrs in items:
            trial = live.get(attrs["digest"])
            if trial is not None:
                self._merge_specs(trial, attrs.get("specs", []))
                continue
            if attrs["digest"] in present:
                continue
            retry(lambda a=attrs: self.study.enqueue_trial({}, user_attrs=a))
            present.add(attrs["digest"])
            n += 1
        return n

    def _merge_specs(self, trial: FrozenTrial, specs: list[str]) -> None:
        merged = sorted({*trial.user_attrs.get("specs", []), *specs})
        if merged != trial.user_attrs.get("specs"):
            with contextlib.suppress(UpdateFinishedTrialError):  # it finished meanwhile
                retry(lambda: self.storage.set_trial_user_attr(trial._trial_id, "specs", merged))

    def specs_of(self, claim: Claim) -> list[str]:
        """The specs that asked for a claimed point, as the queue knows them now."""
        return list(self.storage.get_trial(claim.trial_id).user_attrs.get("specs", []))

    def reap(self) -> list[str]:
        """Fail and re-enqueue RUNNING trials whose worker is gone; returns their digests."""
        requeued: list[str] = []
        now = dt.datetime.now()
        for t in self.trials((TrialState.RUNNING,)):
            worker = t.system_attrs.get("worker")
            if worker is not None:
                dead = same_machine(worker) and not process_alive(worker)
            else:  # claimed but died before recording who it is
                started = t.datetime_start or now
                dead = (now - started).total_seconds() > self.grace_s
            if dead and self._fail_and_requeue(t, "worker process died"):
                requeued.append(t.user_attrs.get("digest", "?"))
        if storage_retry.OUTAGES.within(self.grace_s):
            return requeued  # heartbeats missed while the database was down prove nothing
        before = {t._trial_id for t in self.trials((TrialState.RUNNING,))}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry(lambda: optuna.storages.fail_stale_trials(self.study))
        after = {t._trial_id for t in self.trials((TrialState.RUNNING,))}
        for t in self.trials((TrialState.FAIL,)):
            if t._trial_id in before - after and "failure" not in t.user_attrs:
                requeued.append(t.user_attrs.get("digest", "?"))
        return requeued

    def _fail_and_requeue(self, trial: FrozenTrial, reason: str) -> bool:
        try:
            self.storage.set_trial_system_attr(trial._trial_id, "reaped", reason)
            won = retry(
                lambda: self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            )
        except UpdateFinishedTrialError:
            return False  # someone else reaped (or the worker finished) first
        if won:
            _requeue(self.study, trial)
        return won

    # ------------------------------------------------------------------ consumer side

    def claim(self, wanted: Iterable[str] | None = None) -> Claim | None:
        """Atomically take one WAITING point (of the ``wanted`` run ids, when given), or ``None``
        when none is left. Trials are taken in queue order (heaviest first)."""
        wanted = set(wanted) if wanted is not None else None
        for t in self.trials((TrialState.WAITING,)):
            if wanted is not None and t.user_attrs.get("digest") not in wanted:
                continue
            try:
                won = retry(
                    lambda t=t: self.storage.set_trial_state_values(t._trial_id, TrialState.RUNNING)
                )
            except UpdateFinishedTrialError:
                continue
            if not won:
                continue
            try:
                retry(lambda t=t: self.storage.record_heartbeat(t._trial_id))
                retry(
                    lambda t=t: self.storage.set_trial_system_attr(
                        t._trial_id, "worker", identity()
                    )
                )
            except UpdateFinishedTrialError:
                continue  # reaped between our claim and our first heartbeat
            digest = t.user_attrs.get("digest")
            if digest is None:  # not one of ours (someone ran a sampler on this study)
                self._finish(t.number, TrialState.FAIL)
                continue
            if self._held_elsewhere(digest, t._trial_id):
                self.storage.set_trial_user_attr(
                    t._trial_id, "skipped", "duplicate of a running point"
                )
                self._finish(t.number, TrialState.PRUNED)
                continue
            return Claim(
                trial_id=t._trial_id,
                number=t.number,
                digest=digest,
                config_json=t.user_attrs["config"],
                label=t.user_attrs.get("label", digest),
                attrs=dict(t.user_attrs),
            )
        return None

    def running_elsewhere(self, wanted: Iterable[str]) -> list[str]:
        """The ``wanted`` points that a worker of another machine runs now (or claimed without
        saying who it is). A worker with nothing left to claim waits for them: should that machine
        die, its point is re-queued after the grace period and someone must be left to run it."""
        wanted = set(wanted)
        return [
            t.user_attrs["digest"]
            for t in self.trials((TrialState.RUNNING,))
            if t.user_attrs.get("digest") in wanted
            and not same_machine(t.system_attrs.get("worker") or {})
        ]

    def _held_elsewhere(self, digest: str, trial_id: int) -> bool:
        return any(
            t._trial_id != trial_id and t.user_attrs.get("digest") == digest
            for t in self.trials((TrialState.RUNNING,))
        )

    def set_attr(self, claim: Claim, key: str, value: Any) -> None:
        retry(lambda: self.storage.set_trial_user_attr(claim.trial_id, key, value))

    def complete(self, claim: Claim, value: float = 0.0) -> None:
        self._finish(claim.number, TrialState.COMPLETE, value)

    def fail(self, claim: Claim, reason: str) -> None:
        self.set_attr(claim, "failure", reason[:2000])
        self._finish(claim.number, TrialState.FAIL)

    def _finish(self, number: int, state: TrialState, value: float | None = None) -> None:
        values = None if state != TrialState.COMPLETE else (value if _finite(value) else 0.0)
        retry(lambda: self.study.tell(number, values, state=state, skip_if_finished=True))

    @contextmanager
    def heartbeat(self, claim: Claim) -> Iterator[None]:
        """Record a heartbeat every ``heartbeat_interval`` s while the point runs."""
        stop = threading.Event()
        interval = self.storage.heartbeat_interval or HEARTBEAT_S

        def beat() -> None:
            while not stop.wait(interval):
                # A database blip must not kill training; the next beat retries.
                try:
                    self.storage.record_heartbeat(claim.trial_id)
                except Exception:
                    storage_retry.OUTAGES.note()

        thread = threading.Thread(target=beat, name=f"heartbeat-{claim.number}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _requeue(study: optuna.Study, trial: FrozenTrial) -> None:
    """Heartbeat-stale (or dead) trial -> a fresh WAITING trial for the same point."""
    if "digest" not in trial.user_attrs:
        return
    attrs = {
        k: v
        for k, v in trial.user_attrs.items()
        if k not in ("failure", "skipped", "mlflow_run_id")
    }
    attrs["retry_of"] = trial.number
    retry(lambda: study.enqueue_trial({}, user_attrs=attrs))


# ---------------------------------------------------------------------- helpers


def _finite(value: float | None) -> bool:
    return value is not None and value == value and abs(value) != float("inf")
