"""A sweep worker: claim a queued point, train it in its run folder, track it in MLflow, repeat.

With nothing left to claim, a worker waits while points of its sweep run on other machines: if one
of those machines dies, its point is re-queued after the grace period and this worker runs it.

A claim is skipped when the point already has a FINISHED MLflow run (the record of "done"; see
``bench.sweep.tracking``). A run folder with a ``result.json`` but no FINISHED run (say, the worker
was killed between writing the result and logging it) is logged again without training again,
once its checkpoint passes its digest (else both are set aside and rebuilt from the saved state).

A point never ends FINISHED without its result recorded: a failure in training or in logging ends
its run FAILED with a one-line reason (a full disk named as such, not as a bug), and when even that
cannot be written, the worker stops with one line naming the point (:func:`record_failure`).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.sweep import axes, folders, processes, tracking
from bench.sweep import queue as work_queue
from bench.sweep.disk_full import disk_full
from bench.sweep.worker_identity import identity
from ituning.errors import ITuningError, RunFailed, first_line
from ituning.faultpoints import fault_point

DEFAULT_EXECUTOR = "ituning.train:run_experiment"
Executor = Callable[..., Any]


@dataclass(frozen=True)
class WorkerContext:
    """Everything a worker process needs (picklable: workers are separate processes)."""

    storage_url: str
    study_name: str
    tracking_uri: str
    experiment: str
    runs_dir: str
    profile: str
    scale: str
    digests: frozenset[str]  # the points this invocation asked for (the queue may hold others)
    executor: Executor | str = DEFAULT_EXECUTOR
    threads: int | None = None
    progress: bool = True
    heartbeat_s: int = work_queue.HEARTBEAT_S
    grace_s: int = work_queue.GRACE_S
    name: str = "w0"
    inherited: processes.Inherited | None = None  # the coordinator's, for a worker process


@contextlib.contextmanager
def torch_threads(n: int | None):
    """``n`` torch threads inside the block (unchanged for ``None``)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def worker_entry(ctx: WorkerContext) -> None:
    """A worker process: its coordinator's environment and output, line-buffered, its thread
    count, then :func:`work`."""
    if ctx.inherited is not None:
        ctx.inherited.adopt()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # lines as they happen
    if ctx.threads:
        os.environ["OMP_NUM_THREADS"] = str(ctx.threads)
    with torch_threads(ctx.threads):
        try:
            work(ctx)
        except ITuningError as exc:  # one line; the coordinator sees the exit code
            print(f"error: [{ctx.name}] {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)


def work(ctx: WorkerContext, log: Callable[[str], None] = print) -> list[str]:
    """Claim and run points until none of ours is queued; returns the run ids this worker ran."""
    storage = work_queue.open_storage(
        ctx.storage_url, heartbeat_s=ctx.heartbeat_s, grace_s=ctx.grace_s
    )
    queue = work_queue.WorkQueue(storage, ctx.study_name)
    tracker = tracking.Tracker(ctx.tracking_uri, ctx.experiment)
    executor = SharedScorerExecutor(load_executor(ctx.executor))
    ran: list[str] = []
    waiting = False
    try:
        while True:
            queue.reap()
            claim = queue.claim(ctx.digests)
            if claim is None:
                elsewhere = queue.running_elsewhere(ctx.digests)
                if not elsewhere:
                    return ran
                if not waiting:
                    log(
                        f"[{ctx.name}] nothing left to claim; waiting for {len(elsewhere)} "
                        f"point(s) running on other machines (re-run here if one stops sending "
                        f"heartbeats for {ctx.grace_s} s)"
                    )
                waiting = True
                time.sleep(ctx.heartbeat_s)
                continue
            waiting = False
            with queue.heartbeat(claim):
                outcome = run_point(ctx, queue, tracker, claim, executor, log)
            log(f"[{ctx.name}] {claim.digest} {claim.label}: {outcome}")
            ran.append(claim.digest)
    finally:
        executor.close()


def run_point(
    ctx: WorkerContext,
    queue: work_queue.WorkQueue,
    tracker: tracking.Tracker,
    claim: work_queue.Claim,
    executor: SharedScorerExecutor,
    log: Callable[[str], None],
) -> str:
    from ituning.run_config import TrainConfig

    specs = list(claim.attrs.get("specs", []))
    done = tracker.runs(status="FINISHED", digest=claim.digest)
    if done:
        tracker.tag_specs(done[0].info.run_id, specs)
        queue.complete(claim)
        return "already finished"
    tracker.close_orphans(claim.digest)
    config = TrainConfig.model_validate_json(claim.config_json)
    out_dir = folders.run_dir(Path(ctx.runs_dir), claim.digest)
    log(f"[{ctx.name}] {claim.digest} {claim.label}: running in {out_dir}")
    with folders.run_lock(out_dir):
        damaged = folders.damaged_parts(out_dir) if folders.has_result(out_dir) else {}
        if damaged:  # a result without its intact checkpoint: rebuild both
            folders.set_aside(out_dir, {*damaged, folders.RESULT_FILE})
            log(f"[{ctx.name}] {claim.digest}: {'; '.join(damaged.values())}; rebuilding it")
        reused = folders.has_result(out_dir)
        resumed = not reused and folders.has_checkpoint(out_dir)
        params = run_params(ctx, claim, config)
        tags = run_tags(ctx, claim, out_dir, params, reused=reused, resumed=resumed)
        run = tracker.start(run_name=f"{claim.label} [{claim.digest}]", params=params, tags=tags)
        queue.set_attr(claim, "mlflow_run_id", run.run_id)
        try:
            result = executor(config, out_dir, run, progress=ctx.progress)
        except KeyboardInterrupt:
            run.end("KILLED", "interrupted by the user")
            queue.fail(claim, "interrupted by the user")
            raise
        except Exception as exc:
            reason, bug = failure_reason(exc, out_dir)
            if bug:
                _log_traceback(run, out_dir)
            record_failure(run, queue, claim, reason)
            if bug:
                return f"FAILED (bug, traceback in the MLflow run): {reason.splitlines()[0]}"
            return f"FAILED: {reason}"
        try:
            run.log_result(result, out_dir)
            tracker.tag_specs(run.run_id, queue.specs_of(claim))  # specs that asked meanwhile too
            run.end("FINISHED")
        except Exception as exc:  # not FINISHED without its result: the next sweep logs it again
            reason = (
                f"its result could not be recorded in MLflow: {failure_reason(exc, out_dir)[0]}"
            )
            record_failure(run, queue, claim, reason)
            return f"FAILED: {reason}"
        fault_point("sweep.finished")
    score = result.metrics.get("test/cider", 0.0)
    queue.complete(claim, score)
    cider = f", test CIDEr {score:.3f}" if "test/cider" in result.metrics else ""
    return ("reused the finished run folder" if reused else "finished") + cider


def failure_reason(exc: BaseException, out_dir: Path | None = None) -> tuple[str, bool]:
    """``(one-line reason, is it a bug)`` of a point's failure. A full disk is the machine's
    state, not a bug: its reason says so and what to do. It is recognised by its errno or message
    anywhere in the exception's chain, or, since some writers (``torch.save``) report it as a
    bare ``RuntimeError``, by the run folder's filesystem having almost no space left."""
    if isinstance(exc, ITuningError):
        return str(exc), False
    if disk_full(exc, out_dir):
        return (
            f"disk full ({first_line(exc)}); free space on the run folder's filesystem and "
            "rerun (the point resumes from its last saved state)",
            False,
        )
    return f"{type(exc).__name__}: {exc}".strip(), True


def record_failure(
    run: tracking.TrackedRun, queue: work_queue.WorkQueue, claim: work_queue.Claim, reason: str
) -> None:
    """The MLflow run FAILED and the trial FAIL, both with ``reason``. When a store refuses even
    that (its disk is full too), :class:`RunFailed` stops this worker, naming the point: the
    coordinator reports it, and the next sweep closes the run and re-queues the point."""
    refused = []
    try:
        run.end("FAILED", reason)
    except Exception as exc:
        refused.append(f"MLflow ({first_line(exc)})")
    try:
        queue.fail(claim, reason)
    except Exception as exc:
        refused.append(f"the optuna queue ({first_line(exc)})")
    if refused:
        raise RunFailed(
            f"point {claim.digest} [{claim.label}] failed: {reason}; and the failure could not be "
            f"recorded in {' or '.join(refused)}"
        )


def run_params(ctx: WorkerContext, claim: work_queue.Claim, config) -> dict[str, Any]:
    """The MLflow params of a claimed point (see :func:`config_params`)."""
    return config_params(
        config,
        claim.attrs.get("axes", {}),
        claim.attrs.get("arch", {}),
        profile=ctx.profile,
        scale=ctx.scale,
    )


def config_params(
    config, axis_params: dict[str, Any], arch: dict[str, Any], *, profile: str, scale: str
) -> dict[str, Any]:
    """Each axis once under its own name, every other config setting flattened, the LM's
    architecture, the profile: each value logged once."""
    owned = axes.settings()
    settings = tracking.flatten(config.model_dump(mode="json"))
    return {
        **axis_params,
        **{k: v for k, v in settings.items() if k not in owned},
        **arch,
        "profile": profile,
        "scale": scale,
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def run_tags(
    ctx: WorkerContext,
    claim: work_queue.Claim,
    out_dir: Path,
    params: dict[str, Any],
    *,
    reused: bool,
    resumed: bool,
) -> dict[str, Any]:
    return {
        **tracking.environment_tags(),
        **{tracking.spec_tag(s): "true" for s in claim.attrs.get("specs", [])},
        "config_hash": claim.digest,
        "point": claim.label,
        # a setting's seeds share it: MLflow's group-by, and the report's grouping digest
        "setting": f"{claim.attrs.get('setting_label', claim.label)} · "
        f"{tracking.setting_digest(params)}",
        "run_folder": str(out_dir),
        "optuna.study": ctx.study_name,
        "optuna.trial": claim.number,
        "worker": f"{identity()['host']}:{os.getpid()}",
        "hardware.threads": _torch_threads(),
        "stage": "queued",
        "reused_result": reused,
        "resumed": resumed,
    }


class SharedScorerExecutor:
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
                print(f"warning: MLflow metric not logged ({first_line(exc)})", file=sys.stderr)

        def on_stage(name: str) -> None:
            try:
                run.stage(name)
            except Exception as exc:
                print(f"warning: MLflow stage not logged ({first_line(exc)})", file=sys.stderr)

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


def load_executor(executor: Executor | str) -> Executor:
    if callable(executor):
        return executor
    module, _, name = executor.partition(":")
    try:
        return getattr(importlib.import_module(module), name or "run_experiment")
    except (ImportError, AttributeError) as exc:
        raise ITuningError(f"executor {executor!r} cannot be imported ({exc})") from None
