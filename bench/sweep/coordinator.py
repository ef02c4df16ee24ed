"""Run a sweep: ``python -m bench.sweep SPEC [--profile mini|paper] [--dry-run] [--workers N] ...``.

One invocation is a *coordinator* followed by *workers*:

1. load and validate the spec, resolve every point under the profile (every error, e.g. dropping
   all layers, surfaces here, before anything runs); ``--dry-run`` stops after printing the plan;
   read the paper profile's dataset files as the runs will (a bad file: exit 2, nothing written);
2. check that the MLflow store/server and the optuna storage answer (fail fast, URL in the message);
3. build or check the profile's assets (mini backbones and Shapes world; the paper's data root);
4. create the study and the experiment (before any worker: concurrent SQLite creation races),
   re-queue points whose worker died, close their orphaned MLflow runs, and enqueue every point
   that has no FINISHED MLflow run and is neither queued nor running;
5. start ``--workers N`` worker processes (default: one single-threaded worker per core under
   ``mini``, one under ``paper``; in-process for N = 1; none for N = 0, "enqueue only") that
   claim points, heaviest first, until the queue is empty; each point runs ``run_experiment`` in
   its run folder ``<runs>/points/<run id>`` (which resumes from a checkpoint after a kill);
6. summarise: exit 0 when every point has a FINISHED run (or is still running elsewhere), 1 when
   any point failed (listed), 2 for a user error before anything ran.

Several machines share one sweep by pointing ``--storage`` at one PostgreSQL/MySQL database and
``--tracking-uri`` at one MLflow server: each invocation drains the same queue.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import SPECS_DIR
from bench.sweep import folders as runs
from bench.sweep import queue as q
from bench.sweep import tracking
from bench.sweep.folders import RunPlan
from bench.sweep.profiles import PROFILES, SCALES, Profile, get_profile
from bench.sweep.spec import SweepSpec, find_spec, load_spec
from ituning.errors import ArgumentParser, ITuningError, cli_main
from ituning.faultpoints import fault_point

DEFAULT_EXECUTOR = "ituning.train:run_experiment"
Executor = Callable[..., Any]


@dataclass(frozen=True)
class WorkerContext:
    """Everything a worker process needs (picklable: workers are spawned)."""

    storage_url: str
    study_name: str
    tracking_uri: str
    experiment: str
    runs_dir: str
    spec_name: str
    spec_source: str
    profile: str
    scale: str
    executor: Executor | str = DEFAULT_EXECUTOR
    threads: int | None = None
    progress: bool = True
    heartbeat_s: int = q.HEARTBEAT_S
    grace_s: int = q.GRACE_S
    name: str = "w0"


@dataclass
class SweepReport:
    points: int
    done: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def study_name(spec: SweepSpec, profile: Profile) -> str:
    suffix = "" if profile.scale == "full" else f"-{profile.scale}"
    return f"{spec.name}@{profile.name}{suffix}"


def experiment_name(spec: SweepSpec, profile: Profile) -> str:
    """One experiment per spec; tiny-scale test runs are kept apart from real results."""
    return spec.name if profile.scale == "full" else f"{spec.name}-{profile.scale}"


# ---------------------------------------------------------------------- coordinator


def default_workers(profile: Profile, todo: int) -> int:
    """``mini``: one single-threaded worker per core (small matrices gain little from threads, so
    two one-thread trainings finish sooner than one two-thread training), at most one per point.
    ``paper``: one worker (one accelerator)."""
    if profile.name != "mini":
        return 1
    return max(1, min(os.cpu_count() or 1, todo))


def worker_threads(profile: Profile, workers: int) -> int:
    """Torch threads per worker. ``mini``: one, whatever the number of workers, because float
    sums split over threads round differently: a point's numbers must not depend on how many
    workers a sweep had (a rerun that finds one point left runs one worker, and must equal the
    uninterrupted sweep). ``paper``: the cores shared out (the work is on the accelerator)."""
    if profile.name == "mini":
        return 1
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_sweep(
    spec: SweepSpec,
    profile: Profile,
    *,
    plans: list[RunPlan] | None = None,
    **kwargs: Any,
) -> SweepReport:
    """Coordinate one invocation (steps 2-6 of the module docstring)."""
    plans = plans if plans is not None else profile.plan(spec)
    return run_sweeps([spec], profile, plans={spec.name: plans}, **kwargs)[spec.name]


@dataclass
class _Sweep:
    """One spec made ready to run: its plans, queue, experiment and worker context."""

    spec: SweepSpec
    plans: list[RunPlan]
    queue: q.WorkQueue
    tracker: tracking.Tracker
    ctx: WorkerContext


def run_sweeps(
    specs: Sequence[SweepSpec],
    profile: Profile,
    *,
    workers: int = 1,
    storage_url: str | None = None,
    tracking_uri: str | None = None,
    executor: Executor | str = DEFAULT_EXECUTOR,
    progress: bool = True,
    heartbeat_s: int = q.HEARTBEAT_S,
    grace_s: int = q.GRACE_S,
    plans: dict[str, list[RunPlan]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, SweepReport]:
    """Several specs under one coordinator: every spec's points are queued first, then each
    worker drains the specs' queues in order, so a worker that finds one spec's queue empty
    moves on to the next instead of idling while another worker finishes that spec's last
    point. Returns a report per spec name."""
    plans = dict(plans or {})
    for spec in specs:
        plans.setdefault(spec.name, profile.plan(spec))
    storage_url = storage_url or q.default_storage_url(profile.runs_dir)
    tracking_uri = tracking_uri or tracking.default_tracking_uri(profile.runs_dir)

    distinct = list({p.run_id: p for spec in specs for p in plans[spec.name]}.values())
    profile.check(distinct)  # a bad user file stops here, before any store is touched
    tracking.check_reachable(tracking_uri)
    storage = q.open_storage(storage_url, heartbeat_s=heartbeat_s, grace_s=grace_s)
    profile.prepare(distinct, progress=progress, checked=True)

    sweeps = []
    for spec in specs:
        queue, tracker = _enqueue(spec, profile, plans[spec.name], storage, tracking_uri, log)
        ctx = WorkerContext(
            storage_url=storage_url,
            study_name=queue.study_name,
            tracking_uri=tracking_uri,
            experiment=tracker.experiment_name,
            runs_dir=str(profile.runs_dir),
            spec_name=spec.name,
            spec_source=spec.source,
            profile=profile.name,
            scale=profile.scale,
            executor=executor,
            threads=worker_threads(profile, workers),
            progress=progress and workers <= 1,
            heartbeat_s=heartbeat_s,
            grace_s=grace_s,
        )
        sweeps.append(_Sweep(spec, plans[spec.name], queue, tracker, ctx))
    contexts = [s.ctx for s in sweeps]
    if workers == 1:
        with _torch_threads(contexts[0].threads):
            for ctx in contexts:
                work(ctx, log=log)
    elif workers > 1:
        _run_workers(contexts, workers, sweeps if progress else [], log)
    return {s.spec.name: summarise(s.plans, s.queue, s.tracker, log) for s in sweeps}


def _enqueue(
    spec: SweepSpec,
    profile: Profile,
    plans: list[RunPlan],
    storage,
    tracking_uri: str,
    log: Callable[[str], None],
) -> tuple[q.WorkQueue, tracking.Tracker]:
    """Step 4 for one spec: study and experiment, re-queue points of dead workers, close their
    orphaned runs, enqueue what is left, heaviest first (see :attr:`RunPlan.relative_cost`)."""
    queue = q.WorkQueue(storage, study_name(spec, profile))
    tracker = tracking.Tracker(
        tracking_uri,
        experiment_name(spec, profile),
        runs_dir=profile.runs_dir,
        description=spec.description,
    )
    requeued = queue.reap()
    live = {t.user_attrs.get("digest") for t in queue.trials((q.TrialState.RUNNING,))}
    tracker.close_orphans(keep=live, study=queue.study_name)
    finished = tracker.finished()
    todo = [p for p in plans if p.run_id not in finished]
    todo.sort(key=lambda p: -p.relative_cost)  # stable: equal costs keep the spec's order
    added = queue.enqueue(p.queue_attrs() for p in todo)
    mine = {p.run_id for p in todo}
    waiting = len(
        mine & {t.user_attrs.get("digest") for t in queue.trials((q.TrialState.WAITING,))}
    )
    running = len(mine & live)
    scale = "" if profile.scale == "full" else f", {profile.scale}"
    log(
        f"sweep {spec.name} (profile {profile.name}{scale}): {len(plans)} points, "
        f"{len(plans) - len(todo)} already finished, {added} queued now"
        + (f", {waiting - added} queued before" if waiting > added else "")
        + (f", {running} running elsewhere" if running else "")
        + (f", {len(requeued)} re-queued after a dead worker" if requeued else "")
    )
    return queue, tracker


def _run_workers(
    contexts: list[WorkerContext], n: int, shown: list[_Sweep], log: Callable[[str], None]
) -> None:
    """``n`` spawned workers, each draining ``contexts`` in order; with ``shown``, a progress
    bar of finished points (a worker's own bars would garble each other)."""
    mp = multiprocessing.get_context("spawn")
    procs = []
    for i in range(n):
        mine = [WorkerContext(**{**c.__dict__, "name": f"w{i}"}) for c in contexts]
        proc = mp.Process(target=_worker_entry, args=(mine,), name=f"sweep-worker-{i}")
        proc.start()
        procs.append(proc)
    try:
        _watch(procs, shown)
    except KeyboardInterrupt:
        # The workers got the same SIGINT; give them time to mark their runs KILLED.
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
        raise
    bad = [p for p in procs if p.exitcode not in (0, None)]
    for proc in bad:
        log(f"worker {proc.name} (pid {proc.pid}) exited with code {proc.exitcode}")


def _watch(procs: list, shown: list[_Sweep], every_s: float = 5.0) -> None:
    """Wait for the workers, showing points finished (FINISHED MLflow runs) per spec."""
    if not shown:
        for proc in procs:
            proc.join()
        return
    from tqdm import tqdm

    def done() -> dict[str, int]:
        return {
            s.spec.name: len({p.run_id for p in s.plans} & set(s.tracker.finished())) for s in shown
        }

    total = sum(len({p.run_id for p in s.plans}) for s in shown)
    with tqdm(total=total, desc="points finished", unit="pt", dynamic_ncols=True) as bar:
        while True:
            alive = any(p.is_alive() for p in procs)
            with contextlib.suppress(Exception):  # a busy store must not stop the wait
                counts = done()
                bar.n = sum(counts.values())
                bar.set_postfix_str(", ".join(f"{k} {v}" for k, v in counts.items()))
            if not alive:
                break
            for proc in procs:
                proc.join(timeout=every_s / len(procs))
    for proc in procs:
        proc.join()


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """``n`` torch threads inside the block (unchanged for ``None``)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _worker_entry(contexts: list[WorkerContext]) -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # lines as they happen
    threads = contexts[0].threads
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    with _torch_threads(threads):
        for ctx in contexts:
            work(ctx)


def summarise(
    plans: list[RunPlan], queue: q.WorkQueue, tracker: tracking.Tracker, log
) -> SweepReport:
    report = SweepReport(points=len(plans))
    finished = tracker.finished()
    trials = queue.by_digest()
    for plan in plans:
        digest = plan.run_id
        history = sorted(trials.get(digest, []), key=lambda t: t.number)
        if digest in finished:
            report.done.append(digest)
            continue
        last = history[-1] if history else None
        if last is not None and last.state == q.TrialState.FAIL and "failure" in last.user_attrs:
            report.failed[digest] = f"[{plan.point.label()}] {last.user_attrs['failure']}"
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


# ---------------------------------------------------------------------- worker


def work(ctx: WorkerContext, log: Callable[[str], None] = print) -> list[str]:
    """Claim and run points until the queue is empty; returns the run ids this worker ran."""
    storage = q.open_storage(ctx.storage_url, heartbeat_s=ctx.heartbeat_s, grace_s=ctx.grace_s)
    queue = q.WorkQueue(storage, ctx.study_name)
    tracker = tracking.Tracker(ctx.tracking_uri, ctx.experiment)
    executor = _Executor(_load_executor(ctx.executor))
    ran: list[str] = []
    try:
        while True:
            queue.reap()
            claim = queue.claim()
            if claim is None:
                return ran
            with queue.heartbeat(claim):
                outcome = run_point(ctx, queue, tracker, claim, executor, log)
            log(f"[{ctx.name}] {claim.digest} {claim.label}: {outcome}")
            ran.append(claim.digest)
    finally:
        executor.close()


def run_point(
    ctx, queue: q.WorkQueue, tracker: tracking.Tracker, claim: q.Claim, executor, log
) -> str:
    from ituning.train_config import TrainConfig

    if tracker.runs(status="FINISHED", digest=claim.digest):
        queue.complete(claim)
        return "already finished"
    tracker.close_orphans(claim.digest)
    config = TrainConfig.model_validate_json(claim.config_json)
    out_dir = runs.run_dir(Path(ctx.runs_dir), claim.digest)
    log(f"[{ctx.name}] {claim.digest} {claim.label}: running in {out_dir}")
    with runs.run_lock(out_dir):
        reused = runs.is_finished(out_dir)
        resumed = not reused and runs.has_checkpoint(out_dir)
        run = tracker.start(
            run_name=f"{claim.label} [{claim.digest}]",
            params=_params(ctx, claim, config),
            tags=_tags(ctx, claim, config, out_dir, reused=reused, resumed=resumed),
        )
        queue.set_attr(claim, "mlflow_run_id", run.run_id)
        try:
            result = executor(config, out_dir, run, progress=ctx.progress)
        except KeyboardInterrupt:
            run.end("KILLED", "interrupted by the user")
            queue.fail(claim, "interrupted by the user")
            raise
        except ITuningError as exc:
            reason = str(exc)
            run.end("FAILED", reason)
            queue.fail(claim, reason)
            return f"FAILED: {reason}"
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".strip()
            _log_traceback(run, out_dir)
            run.end("FAILED", reason)
            queue.fail(claim, reason)
            return f"FAILED (bug, traceback in the MLflow run): {reason.splitlines()[0]}"
        run.log_result(result, out_dir)
        run.end("FINISHED")
        fault_point("sweep.finished")
    score = result.metrics.get("test/cider", 0.0)
    queue.complete(claim, score)
    cider = f", test CIDEr {score:.3f}" if "test/cider" in result.metrics else ""
    return ("reused the finished run folder" if reused else "finished") + cider


class _Executor:
    """The executor plus what it may share across points: one caption scorer per worker (METEOR's
    JVM starts once), if the executor takes a ``scorer``; ``progress`` if it takes that."""

    def __init__(self, fn: Executor) -> None:
        self.fn = fn
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        self.takes_progress = "progress" in params
        self.takes_scorer = "scorer" in params
        self._scorer = None

    def __call__(self, config, out_dir: Path, run: tracking.TrackedRun, *, progress: bool):
        def on_metric(name: str, value: float, step: int) -> None:
            try:
                run.metric(name, value, step)
            except Exception as exc:  # tracking trouble must not kill a long training run
                print(f"warning: MLflow metric not logged ({exc})", file=sys.stderr)

        def on_stage(name: str) -> None:
            try:
                run.stage(name)
            except Exception as exc:
                print(f"warning: MLflow stage not logged ({exc})", file=sys.stderr)

        kwargs: dict[str, Any] = {"on_metric": on_metric, "on_stage": on_stage}
        if self.takes_progress:
            kwargs["progress"] = progress
        if self.takes_scorer:
            kwargs["scorer"] = self._shared_scorer()
        try:
            return self.fn(config, out_dir, **kwargs)
        except BaseException:
            self.close()  # a run that failed mid-evaluation may leave the scorer unusable
            raise

    def _shared_scorer(self):
        if self._scorer is None:
            from ituning.metrics import CaptionScorer

            try:
                self._scorer = CaptionScorer()
            except ITuningError:
                return None  # let the executor make its own and report the problem itself
        return self._scorer

    def close(self) -> None:
        if self._scorer is not None:
            with contextlib.suppress(Exception):
                self._scorer.close()
            self._scorer = None


def _log_traceback(run: tracking.TrackedRun, out_dir: Path) -> None:
    path = Path(out_dir) / "traceback.txt"
    try:
        path.write_text(traceback.format_exc())
        run.client.log_artifact(run.run_id, str(path))
    except Exception:
        pass


def _params(ctx: WorkerContext, claim: q.Claim, config) -> dict[str, Any]:
    params = tracking.flatten(config.model_dump(mode="json"))
    params.update(tracking.flatten(claim.attrs.get("point", {}), "point."))
    params.update(tracking.flatten(claim.attrs.get("resolved", {}), "resolved."))
    params.update({"profile": ctx.profile, "scale": ctx.scale, "spec": ctx.spec_name})
    return params


def _tags(
    ctx: WorkerContext, claim: q.Claim, config, out_dir: Path, *, reused: bool, resumed: bool
):
    point = claim.attrs.get("point", {})
    return {
        **tracking.environment_tags(),
        "spec": ctx.spec_name,
        "spec_file": ctx.spec_source,
        "profile": ctx.profile,
        "scale": ctx.scale,
        "config_hash": claim.digest,
        "point": claim.label,
        "lm_size": point.get("lm", ""),
        "seed": config.seed,
        "run_folder": str(out_dir),
        "optuna.study": ctx.study_name,
        "optuna.trial": claim.number,
        "worker": f"{q.identity()['host']}:{os.getpid()}",
        "stage": "queued",
        "reused_result": reused,
        "resumed": resumed,
    }


def _load_executor(executor: Executor | str) -> Executor:
    if callable(executor):
        return executor
    module, _, name = executor.partition(":")
    try:
        return getattr(importlib.import_module(module), name or "run_experiment")
    except (ImportError, AttributeError) as exc:
        raise ITuningError(f"executor {executor!r} cannot be imported ({exc})") from None


# ---------------------------------------------------------------------- dry run


def describe(spec: SweepSpec, profile: Profile, plans: list[RunPlan]) -> str:
    lines = [
        f"sweep {spec.name} ({spec.source}) under profile {profile.name}"
        + ("" if profile.scale == "full" else f" ({profile.scale})"),
    ]
    if spec.description:
        lines.append(f"  {spec.description.splitlines()[0]}")
    b = profile.budget
    lines.append(
        f"  budget: {b.epochs} epochs (VLP {b.vlp_epochs}), batch {b.batch_captions} captions "
        f"(micro {b.micro_batch_images} images), lr {b.lr:g}, beam {b.beam}"
    )
    header = ("run id", "LM", "layers", "λ", "r", "drop", "vlp", "seed", "trainable", "state")
    rows = []
    for plan in plans:
        r = plan.resolved
        out = runs.run_dir(profile.runs_dir, plan.run_id)
        state = (
            "finished"
            if runs.is_finished(out)
            else "partial"
            if runs.has_checkpoint(out)
            else "new"
        )
        rows.append(
            (
                plan.run_id,
                f"{plan.point.lm} ({Path(r.lm_name).name})",
                str(r.n_layers),
                f"{plan.point.lam:g}",
                str(r.bottleneck),
                f"{plan.point.drop} -> {r.drop_first}",
                "yes" if plan.point.vlp else "no",
                str(plan.point.seed),
                _count(r.trainable_params),
                state,
            )
        )
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        lines.append(
            "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        )
    lines.append(f"  {len(plans)} runs")
    return "\n".join(lines)


def _shown(path: Path) -> Path:
    """A path relative to the working directory when it lies below it (messages, tags)."""
    rel = os.path.relpath(path)
    return Path(rel) if not rel.startswith("..") else path


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M ({n:,})" if n >= 100_000 else f"{n:,}"


# ---------------------------------------------------------------------- CLI


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.sweep", description=__doc__.splitlines()[0])
    p.add_argument("spec", help="a YAML file or the name of one in sweeps/ (e.g. table1)")
    p.add_argument("--profile", default="mini", choices=PROFILES, help="default: mini")
    p.add_argument(
        "--scale", default="full", choices=SCALES, help="tiny: shrink everything (tests)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved runs and stop")
    p.add_argument(
        "--workers",
        type=int,
        help="local worker processes; 0 = only enqueue (default: mini one per core, paper 1)",
    )
    p.add_argument("--storage", help="optuna storage URL (default sqlite:///RUNS/optuna.db)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///RUNS/mlflow.db)")
    p.add_argument("--runs-dir", default="runs", type=Path, help="run folders, stores, mini assets")
    p.add_argument(
        "--data-root", type=Path, help="the paper profile's datasets (see bench/profiles.py)"
    )
    p.add_argument(
        "--heartbeat", type=int, default=q.HEARTBEAT_S, help="seconds between heartbeats"
    )
    p.add_argument("--grace", type=int, default=q.GRACE_S, help="seconds without heartbeat = dead")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--executor", default=DEFAULT_EXECUTOR, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.workers is not None and args.workers < 0:
        p.error("--workers must be >= 0")

    spec = load_spec(_shown(find_spec(args.spec, SPECS_DIR)))
    profile = get_profile(
        args.profile, runs_dir=args.runs_dir, data_root=args.data_root, scale=args.scale
    )
    plans = profile.plan(spec)
    if args.dry_run:
        print(describe(spec, profile, plans))
        return 0
    started = time.perf_counter()
    todo = [p for p in plans if not runs.is_finished(runs.run_dir(profile.runs_dir, p.run_id))]
    report = run_sweep(
        spec,
        profile,
        workers=default_workers(profile, len(todo)) if args.workers is None else args.workers,
        storage_url=args.storage,
        tracking_uri=args.tracking_uri,
        executor=args.executor,
        progress=not args.quiet,
        heartbeat_s=args.heartbeat,
        grace_s=args.grace,
        plans=plans,
    )
    print(f"sweep {spec.name}: {time.perf_counter() - started:.0f} s")
    if report.failed:
        print(f"error: {len(report.failed)} of {report.points} points failed", file=sys.stderr)
        return 1
    return 0
