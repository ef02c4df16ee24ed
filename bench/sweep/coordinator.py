"""The coordinator of ``python -m bench.sweep``: one invocation for one or several specs.

1. every spec's points are resolved under the profile (``bench.sweep.cli`` does this, so every
   error, e.g. dropping all layers, surfaces before anything runs);
2. the profile checks what the user supplied (the paper's dataset files; a bad file: exit 2,
   nothing written), the MLflow store/server and the optuna storage must answer (URL in the
   message), then the profile builds its assets (mini backbones and Shapes world);
3. the profile's study and experiment are created (before any worker: concurrent SQLite creation
   races); points whose worker died are re-queued and their orphaned MLflow runs closed; the run
   folders of finished points are checked (``bench.sweep.integrity``: a lost or corrupt result or
   checkpoint is restored from MLflow, or the point trains again); every distinct point without a
   FINISHED MLflow run is enqueued once, heaviest first, whichever spec asked for it;
4. ``--workers N`` worker processes (``bench.sweep.worker``; in-process for N = 1, none for N = 0,
   "enqueue only") claim this invocation's points until none is queued;
5. one summary per spec: exit 0 when every point has a FINISHED run (or is still running on a
   live worker elsewhere), 1 when any point failed or a worker died (each listed: a point whose
   worker died, or that no worker was left to run, is failed, never "pending"), 2 for a user
   error before anything ran.

Several machines share one sweep by pointing ``--storage`` at one PostgreSQL/MySQL database and
``--tracking-uri`` at one MLflow server: each invocation drains the same queue.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bench.sweep import processes, tracking
from bench.sweep import queue as work_queue
from bench.sweep.integrity import check_finished
from bench.sweep.plan import RunPlan
from bench.sweep.preflight import preflight
from bench.sweep.profile import Profile
from bench.sweep.spec import SweepSpec
from bench.sweep.worker import (
    DEFAULT_EXECUTOR,
    Executor,
    WorkerContext,
    torch_threads,
    work,
    worker_entry,
)
from bench.sweep.worker_identity import process_alive, same_machine
from ituning.errors import ConfigError, ITuningError


@dataclass
class SweepReport:
    points: int
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)  # running on a live worker elsewhere
    dead_workers: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.dead_workers


#: More worker processes than this per core is a typo (each loads the backbones).
MAX_WORKERS_PER_CORE = 8


def check_workers(workers: int | None, *, minimum: int = 0) -> None:
    """``--workers``: at least ``minimum``, at most :data:`MAX_WORKERS_PER_CORE` per core."""
    cores = os.cpu_count() or 1
    if workers is not None and not minimum <= workers <= MAX_WORKERS_PER_CORE * cores:
        raise ConfigError(
            f"--workers {workers}: expected {minimum} to {MAX_WORKERS_PER_CORE * cores} "
            f"({MAX_WORKERS_PER_CORE} per core on this machine's {cores})"
        )


def default_workers(profile: Profile, todo: int) -> int:
    """CPU profiles: one single-threaded worker per core (small matrices gain little from threads,
    so two one-thread trainings finish sooner than one two-thread training), at most one per
    point. Otherwise one worker (one accelerator)."""
    if not profile.cpu_workers:
        return 1
    return max(1, min(os.cpu_count() or 1, todo))


def worker_threads(profile: Profile, workers: int) -> int:
    """Torch threads per worker. CPU profiles: one, whatever the number of workers, because float
    sums split over threads round differently: a point's numbers must not depend on how many
    workers a sweep had (a rerun that finds one point left runs one worker, and must equal the
    uninterrupted sweep). Otherwise the cores shared out (the work is on the accelerator)."""
    if profile.cpu_workers:
        return 1
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_sweep(
    spec: SweepSpec, profile: Profile, *, plans: list[RunPlan] | None = None, **kwargs: Any
) -> SweepReport:
    """Coordinate one spec (steps 2-5 of the module docstring)."""
    plans = plans if plans is not None else profile.plan(spec)
    return run_sweeps([spec], profile, plans={spec.name: plans}, **kwargs)[spec.name]


def run_sweeps(
    specs: Sequence[SweepSpec],
    profile: Profile,
    *,
    workers: int | None = 1,
    storage_url: str | None = None,
    tracking_uri: str | None = None,
    executor: Executor | str = DEFAULT_EXECUTOR,
    progress: bool = True,
    heartbeat_s: int = work_queue.HEARTBEAT_S,
    grace_s: int = work_queue.GRACE_S,
    plans: dict[str, list[RunPlan]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, SweepReport]:
    """Several specs under one coordinator; returns a report per spec name. ``workers=None``:
    :func:`default_workers` for the points left to train."""
    plans = dict(plans or {})
    for spec in specs:
        plans.setdefault(spec.name, profile.plan(spec))
    storage_url = storage_url or work_queue.default_storage_url(profile.runs_dir)
    tracking_uri = tracking_uri or tracking.default_tracking_uri(profile.runs_dir)

    asked: dict[str, list[str]] = {}  # run id -> the specs that contain it
    distinct: dict[str, RunPlan] = {}
    for spec in specs:
        for plan in plans[spec.name]:
            distinct.setdefault(plan.run_id, plan)
            asked.setdefault(plan.run_id, []).append(spec.name)
    preflight(profile, list(distinct.values()), progress=progress)  # before any store
    tracking.check_reachable(tracking_uri)
    storage = work_queue.open_storage(storage_url, heartbeat_s=heartbeat_s, grace_s=grace_s)
    profile.prepare(list(distinct.values()), progress=progress)

    queue = work_queue.WorkQueue(storage, profile.label)
    tracker = tracking.Tracker(tracking_uri, profile.label, runs_dir=profile.runs_dir)
    for spec in specs:
        tracker.describe_spec(spec.name, spec.description)
    finished_before = tracker.finished_runs()
    todo = _enqueue(specs, plans, distinct, asked, finished_before, queue, tracker, profile, log)
    if workers is None:
        workers = default_workers(profile, todo)

    ctx = WorkerContext(
        storage_url=storage_url,
        study_name=queue.study_name,
        tracking_uri=tracking_uri,
        experiment=tracker.experiment_name,
        runs_dir=str(profile.runs_dir),
        profile=profile.name,
        scale=profile.scale,
        digests=frozenset(distinct),
        executor=executor,
        threads=worker_threads(profile, workers),
        progress=progress and workers <= 1,
        heartbeat_s=heartbeat_s,
        grace_s=grace_s,
    )
    dead: list[str] = []
    if workers == 1:
        with torch_threads(ctx.threads):
            try:
                work(ctx, log=log)
            except ITuningError as exc:
                dead.append(f"worker {ctx.name}: {exc}")
    elif workers > 1:
        dead = _run_workers(ctx, workers, tracker, len(distinct) if progress else 0)

    finished = tracker.finished()
    for digest in distinct.keys() & finished.keys() - finished_before.keys():  # it may have run
        tracker.tag_specs(finished[digest], asked[digest])  # elsewhere, queued by another spec
    trials = queue.by_digest()
    reports = {
        spec.name: summarise(
            plans[spec.name], finished, trials, log, dead=dead, drained=workers > 0
        )
        for spec in specs
    }
    for line in dead:
        log(f"  {line}")
    return reports


def _enqueue(
    specs: Sequence[SweepSpec],
    plans: dict[str, list[RunPlan]],
    distinct: dict[str, RunPlan],
    asked: dict[str, list[str]],
    finished: dict[str, Any],
    queue: work_queue.WorkQueue,
    tracker: tracking.Tracker,
    profile: Profile,
    log: Callable[[str], None],
) -> int:
    """Re-queue points of dead workers, close their orphaned runs, check the ``finished`` points'
    folders (dropping from ``finished`` those to train again), tag the rest with the specs that
    ask for them, enqueue what is not finished, heaviest first (see
    :attr:`RunPlan.relative_cost`); returns how many points are left."""
    requeued = queue.reap()
    running = {t.user_attrs.get("digest") for t in queue.trials((work_queue.TrialState.RUNNING,))}
    tracker.close_orphans(keep=running, study=queue.study_name)
    for digest in check_finished(tracker, finished, distinct.keys(), profile.runs_dir, log):
        del finished[digest]
    for digest in distinct.keys() & finished.keys():
        tracker.tag_specs(finished[digest].info.run_id, asked[digest])
    todo = [p for p in distinct.values() if p.run_id not in finished]
    todo.sort(key=lambda p: -p.relative_cost)  # stable: equal costs keep the specs' order
    added = queue.enqueue(p.queue_attrs(asked[p.run_id]) for p in todo)
    waiting = {t.user_attrs.get("digest") for t in queue.trials((work_queue.TrialState.WAITING,))}
    mine = {p.run_id for p in todo}
    for spec in specs:
        ids = {p.run_id for p in plans[spec.name]}
        log(
            f"sweep {spec.name} (profile {profile.label}): {len(ids)} points, "
            f"{len(ids & finished.keys())} already finished"
        )
    before = len(mine & waiting) - added
    elsewhere = len(mine & running)
    log(
        f"queued {added} of {len(distinct)} distinct points"
        + (f", {before} queued before" if before > 0 else "")
        + (f", {elsewhere} running elsewhere" if elsewhere else "")
        + (f", {len(requeued)} re-queued after a dead worker" if requeued else "")
    )
    return len(todo)


def _run_workers(ctx: WorkerContext, n: int, tracker: tracking.Tracker, shown: int) -> list[str]:
    """``n`` worker processes; with ``shown`` points, a progress bar of finished points (the
    workers' own bars would garble each other). Returns a line for each worker that died."""
    mp = processes.worker_processes()
    procs = []
    for i in range(n):
        worker = replace(ctx, name=f"w{i}", inherited=processes.Inherited())
        proc = mp.Process(target=worker_entry, args=(worker,), name=f"sweep-worker-{i}")
        proc.start()
        procs.append(proc)
    try:
        _watch(procs, tracker, ctx.digests, shown)
    except KeyboardInterrupt:
        # The workers got the same SIGINT; give them time to mark their runs KILLED.
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
        raise
    return [
        f"worker {proc.name} (pid {proc.pid}) died: exit code {proc.exitcode}"
        for proc in procs
        if proc.exitcode != 0
    ]


def _watch(
    procs: list, tracker: tracking.Tracker, digests: frozenset[str], shown: int, every_s=5.0
) -> None:
    """Wait for the workers, showing this invocation's points with a FINISHED MLflow run."""
    if not shown:
        for proc in procs:
            proc.join()
        return
    from tqdm import tqdm

    with tqdm(total=shown, desc="points finished", unit="pt", dynamic_ncols=True) as bar:
        while True:
            alive = any(p.is_alive() for p in procs)
            with contextlib.suppress(Exception):  # a busy store must not stop the wait
                bar.n = len(digests & tracker.finished().keys())
                bar.refresh()
            if not alive:
                break
            for proc in procs:
                proc.join(timeout=every_s / len(procs))
    for proc in procs:
        proc.join()


def summarise(
    plans: list[RunPlan],
    finished: dict[str, str],
    trials: dict[str, list],
    log: Callable[[str], None],
    *,
    dead: Sequence[str] = (),
    drained: bool = False,
) -> SweepReport:
    """Each point is done (a FINISHED run), failed (with its reason) or pending: pending only while
    a live worker elsewhere runs it, or when this invocation ran no worker (``--workers 0``).
    After our workers ``drained`` the queue, a point still queued, or running under a worker of
    this machine that is gone, failed: its worker died (``dead`` says how)."""
    report = SweepReport(points=len(plans), dead_workers=list(dead))
    why_dead = f" ({'; '.join(dead)})" if dead else ""
    for plan in plans:
        digest = plan.run_id
        if digest in finished:
            report.done.append(digest)
            continue
        history = sorted(trials.get(digest, []), key=lambda t: t.number)
        last = history[-1] if history else None
        state = last.state if last is not None else None
        name = f"[{plan.point.label()}]"
        if state == work_queue.TrialState.FAIL and "failure" in last.user_attrs:
            report.failed[digest] = f"{name} {last.user_attrs['failure']}"
        elif state == work_queue.TrialState.RUNNING and _worker_gone(last):
            report.failed[digest] = f"{name} its worker died while running it{why_dead}"
        elif drained and state != work_queue.TrialState.RUNNING:
            report.failed[digest] = f"{name} not run: no worker was left to run it{why_dead}"
        else:
            report.pending.append(digest)
    log(
        f"{len(report.done)}/{report.points} points finished"
        + (f", {len(report.pending)} still queued or running elsewhere" if report.pending else "")
        + (f", {len(report.failed)} failed" if report.failed else "")
    )
    for digest, reason in report.failed.items():
        log(f"  failed {digest} {reason}")
    return report


def _worker_gone(trial) -> bool:
    """A RUNNING trial's worker ran on this machine and is gone: its process died, or it was
    this process's own (in-process) worker, which has returned."""
    worker = trial.system_attrs.get("worker")
    if worker is None or not same_machine(worker):
        return False
    return worker.get("pid") == os.getpid() or not process_alive(worker)
