"""The learning-rate search: the same small search for every method, on the validation split.

One optuna study per method (``<profile>-lr-<method>-<lm>-s<seed>[-lambda]-<point>``, in the
sweep's optuna storage) with optuna's :class:`~optuna.samplers.GridSampler` over :data:`LR_GRID`,
crossed, for I-Tuning's methods, with :data:`LAMBDA_GRID` (eq. 5's λ, which the paper leaves open
and which decides how loudly the modules speak over the frozen LM's own prior). ``<point>`` is the
digest of everything else the trials train with (backbones, data, budget): a search after the
backbones change is a new study, not the old one found finished. Each trial trains the method's
point at one LM size and seed with the profile's budget, decodes the validation split the way
every run decodes the test split, and returns its CIDEr; the test and NoCaps-style splits are
never scored. Every trial is an MLflow run in the experiment ``<profile>-lr-search`` (params,
metrics, the study and trial number as tags).

Each study's ``optimize`` runs in a thread of this process and hands its trials to a pool of
worker processes (one single-threaded worker per core at ``mini``), so the methods' grids share the
workers. An interrupted search resumes: finished trials stay in their study, a trial left RUNNING
is failed and its rate asked for again by name, and a trial whose run folder already holds its
result is logged without training again.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bench.sweep import folders, processes, tracking
from bench.sweep import queue as work_queue
from bench.sweep.axes import AXES
from bench.sweep.coordinator import worker_threads
from bench.sweep.learning_rates import SearchRecord
from bench.sweep.preflight import preflight
from bench.sweep.profile import Profile
from bench.sweep.spec import validate_spec
from bench.sweep.worker import (
    DEFAULT_EXECUTOR,
    SharedScorerExecutor,
    config_params,
    failure_reason,
    load_executor,
)
from ituning.errors import RunFailed
from ituning.files import file_lock

#: Log-spaced, wide enough for a frozen-LM adapter and for fine-tuning every LM weight, and holding
#: the mini budget's 6e-3. 2e-2 was added when the first search (up to 1e-2) put the best rate of
#: two methods at its top edge.
LR_GRID: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 6e-3, 1e-2, 2e-2)
SPLIT = "val"
METRIC = f"{SPLIT}/cider"
#: Score the validation split only: no test, NoCaps-style or control decoding.
SEARCH_SETTINGS: dict[str, Any] = {
    "eval.splits": [SPLIT],
    "eval.nocaps": False,
    "eval.blank_control": False,
    "eval.grounding": False,
}
RUN_FOLDER = "lr-search"
#: λ >= 1 (the paper's rule), doubling: on mini-large (4 epochs, seed 0) the three-object recall
#: went 0.75 / 0.79 / 0.84 / 0.83 at λ = 1 / 2 / 4 / 8, so 1 alone is not a safe default.
LAMBDA_GRID: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
#: The rate and λ a study's point is identified at (any fixed values: only the rest matters).
_STUDY_KEY_AT = {"optim.lr": 1e-3, "itune.scale": 1.0}


@dataclass(frozen=True)
class Search:
    """What to search: the methods, at which LM size and seed, over which grid (rates, and λ for
    the methods that have one)."""

    methods: tuple[str, ...]
    lm: str = "base"
    seed: int = 0
    grid: tuple[float, ...] = LR_GRID
    lambdas: tuple[float, ...] = LAMBDA_GRID

    def searches_lambda(self, method: str) -> bool:
        """λ is searched with the rate: the method has one and the grid is more than λ = 1."""
        return AXES["lambda"].applies(method) and self.lambdas != (1.0,)

    def space(self, method: str) -> dict[str, list[float]]:
        """The grid sampler's search space for ``method``."""
        lam = {"lambda": list(self.lambdas)} if self.searches_lambda(method) else {}
        return {"lr": list(self.grid), **lam}

    def cells(self, method: str) -> list[tuple[float, float | None]]:
        """Every (rate, λ) of ``method``'s grid (λ ``None`` where it is not searched)."""
        lams = self.lambdas if self.searches_lambda(method) else (None,)
        return [(lr, lam) for lr in self.grid for lam in lams]

    def study_name(self, profile: Profile, method: str, key: str) -> str:
        lam = "-lambda" if self.searches_lambda(method) else ""
        return f"{profile.label}-lr-{method}-{self.lm}-s{self.seed}{lam}-{key}"

    def experiment(self, profile: Profile) -> str:
        return f"{profile.label}-lr-search"


@dataclass(frozen=True)
class TrialJob:
    """One trial for a worker process (picklable)."""

    config_json: str
    out_dir: str
    tracking_uri: str
    experiment: str
    run_name: str
    params: dict[str, Any]
    tags: dict[str, Any]
    executor: str
    progress: bool


def run_search(
    search: Search,
    profile: Profile,
    *,
    workers: int,
    storage_url: str,
    tracking_uri: str,
    executor: str = DEFAULT_EXECUTOR,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, SearchRecord]:
    """Run every method's grid to the end; each method's record (raises if a trial failed)."""
    points = {m: _point(search, m) for m in search.methods}
    # resolved at fixed values: the record's rate (and λ) for this LM size is what is searched
    at = {**SEARCH_SETTINGS, **_STUDY_KEY_AT}
    plans = {m: profile.resolve(p, at, source="learning-rate search") for m, p in points.items()}
    keys = {m: plan.run_id[:10] for m, plan in plans.items()}
    preflight(profile, list(plans.values()), progress=progress)
    profile.prepare(list(plans.values()), progress=progress)
    storage = work_queue.open_storage(storage_url)
    tracking.check_reachable(tracking_uri)
    tracker = tracking.Tracker(tracking_uri, search.experiment(profile), runs_dir=profile.runs_dir)
    with file_lock(profile.runs_dir / f"{RUN_FOLDER}.lock"):  # one search per runs folder
        studies = {m: _open_study(storage, search, profile, m, keys[m]) for m in search.methods}
        todo = {m: _still_to_run(s, search.cells(m)) for m, s in studies.items()}
        total = sum(todo.values())
        lams = f" x {len(search.lambdas)} λ for I-Tuning" if search.lambdas != (1.0,) else ""
        log(
            f"learning-rate search: {total} trial(s) to run ({len(search.grid)} rates per "
            f"method{lams})"
        )
        threads = worker_threads(profile, workers)
        failed: list[str] = []
        with (
            ProcessPoolExecutor(
                workers,
                mp_context=processes.worker_processes(),
                initializer=_init,
                initargs=(threads, processes.Inherited()),
            ) as pool,
            ThreadPoolExecutor(len(search.methods) * workers) as methods,
        ):

            def objective(trial: optuna.Trial, method: str) -> float:
                # log-scaled floats rather than categoricals: a study can gain grid values later
                lr = trial.suggest_float("lr", min(search.grid), max(search.grid), log=True)
                lam = (
                    trial.suggest_float(
                        "lambda", min(search.lambdas), max(search.lambdas), log=True
                    )
                    if search.searches_lambda(method)
                    else None
                )
                job = _job(
                    search, profile, tracker, points[method], trial, lr, lam, executor, progress
                )
                name = f"{method} {_cell_text(lr, lam)}"
                log(f"  {name}: trial {trial.number} queued")
                try:
                    value = pool.submit(run_trial, job).result()
                except RunFailed as exc:
                    failed.append(f"{name}: {exc}")
                    log(f"  {name}: FAILED: {exc}")
                    raise
                log(f"  {name}: {METRIC} {value:.1f}")
                return value

            remaining, counting = dict(todo), threading.Lock()

            def optimise(method: str) -> None:
                # One trial per call: the grid sampler stops a study once every cell has been
                # tried (a failed one included), which would strand the second of two failed cells
                # asked for again by name. Up to `workers` of these loops share a method's study,
                # so one method's grid fills every worker: a fresh study's first trials take grid
                # cells by trial number, a resumed one's missing cells are enqueued by name, and
                # both are claimed atomically by the storage.
                while True:
                    with counting:
                        if not remaining[method]:
                            return
                        remaining[method] -= 1
                    studies[method].optimize(
                        functools.partial(objective, method=method),
                        n_trials=1,
                        catch=(RunFailed,),
                    )

            loops = [methods.submit(optimise, m) for m in search.methods for _ in range(workers)]
            for future in loops:
                future.result()
        if failed:
            raise RunFailed(
                f"{len(failed)} trial(s) failed ({'; '.join(failed)}); rerun the same command to "
                "run them again"
            )
        left = {m: _still_to_run(s, search.cells(m)) for m, s in studies.items()}
        if any(left.values()):  # never a record from part of the grid
            raise RunFailed(
                f"{sum(left.values())} cell(s) of the grid have no score yet; rerun the same "
                "command to run them"
            )
        return {m: _record(search, profile, m, s) for m, s in studies.items()}


def _cell_text(lr: float, lam: float | None) -> str:
    return f"lr {lr:g}" + ("" if lam is None else f" λ {lam:g}")


def _point(search: Search, method: str):
    spec = validate_spec(
        {
            "name": "lr-search",
            "axes": {"method": [method], "lm": [search.lm], "seed": [search.seed]},
        },
        source="learning-rate search",
    )
    return spec.points()[0]


def _open_study(storage, search: Search, profile: Profile, method: str, key: str) -> optuna.Study:
    study = optuna.create_study(
        study_name=search.study_name(profile, method, key),
        storage=storage,
        sampler=optuna.samplers.GridSampler(search.space(method), seed=search.seed),
        direction="maximize",
        load_if_exists=True,
    )
    trials = study.get_trials(deepcopy=False)
    cells = set(search.cells(method))
    for trial in trials:
        if trial.state == TrialState.RUNNING:  # the lock above says no search runs: it died
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        stray = _cell(trial.system_attrs.get("fixed_params", {})) not in cells
        if trial.state == TrialState.WAITING and stray:  # asked for by a search over another grid
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    finished = _scores(trials)
    waiting = {
        _cell(t.system_attrs.get("fixed_params", {}))
        for t in trials
        if t.state == TrialState.WAITING
    }
    if trials:  # resumed: a cell that failed, or one the grid gained, is asked for by name
        for lr, lam in search.cells(method):  # (the grid sampler counts a failed cell as done)
            if (lr, lam) not in finished and (lr, lam) not in waiting:
                study.enqueue_trial({"lr": lr} | ({} if lam is None else {"lambda": lam}))
    return study


def _cell(params: dict[str, Any]) -> tuple[float | None, float | None]:
    return params.get("lr"), params.get("lambda")


def _scores(trials: Sequence[optuna.trial.FrozenTrial]) -> dict[tuple, float]:
    """(learning rate, λ or ``None``) -> validation score of the finished trials."""
    return {
        _cell(t.params): float(t.value)
        for t in trials
        if t.state == TrialState.COMPLETE and t.value is not None
    }


def _still_to_run(study: optuna.Study, cells: Sequence[tuple]) -> int:
    done = _scores(study.get_trials(deepcopy=False))
    return sum(1 for cell in cells if cell not in done)


def _job(
    search: Search,
    profile: Profile,
    tracker: tracking.Tracker,
    point,
    trial: optuna.Trial,
    lr: float,
    lam: float | None,
    executor: str,
    progress: bool,
) -> TrialJob:
    method = point["method"]
    settings = {**SEARCH_SETTINGS, "optim.lr": lr} | ({} if lam is None else {"itune.scale": lam})
    plan = profile.resolve(point, settings, source="learning-rate search")
    out_dir = folders.run_dir(profile.runs_dir / RUN_FOLDER, plan.run_id)
    params = config_params(
        plan.config,
        plan.axis_params(),
        plan.arch.as_params(),
        profile=profile.name,
        scale=profile.scale,
    )
    tags = {
        **tracking.environment_tags(),
        "config_hash": plan.run_id,
        "point": point.label(),
        "method": method,
        "lr": lr,
        **({} if lam is None else {"lambda": lam}),
        "run_folder": str(out_dir),
        "optuna.study": trial.study.study_name,
        "optuna.trial": trial.number,
        "selection": f"{METRIC}, {SPLIT} split",
    }
    return TrialJob(
        config_json=plan.config.model_dump_json(),
        out_dir=str(out_dir),
        tracking_uri=tracker.uri,
        experiment=tracker.experiment_name,
        run_name=f"{point.label()} {_cell_text(lr, lam)} [{plan.run_id}]",
        params=params,
        tags=tags,
        executor=executor,
        progress=progress,
    )


def _record(search: Search, profile: Profile, method: str, study: optuna.Study) -> SearchRecord:
    """The best cell of the grid (ties: the budget's rate, then the smaller λ), the rates' scores
    at its λ and the λs' scores at its rate."""
    cells = set(search.cells(method))
    scores = {c: v for c, v in _scores(study.get_trials(deepcopy=False)).items() if c in cells}
    lr, lam = max(
        scores, key=lambda c: (scores[c], c[0] == profile.budget.lr, -(c[1] or 1.0), -c[0])
    )
    return SearchRecord(
        chosen=lr,
        lambda_=lam,
        seed=search.seed,
        metric=METRIC,
        study=study.study_name,
        scores=dict(sorted((r, v) for (r, m), v in scores.items() if m == lam)),
        lambda_scores=(
            {} if lam is None else dict(sorted((m, v) for (r, m), v in scores.items() if r == lr))
        ),
    )


# ------------------------------------------------------------------ in the worker processes

_EXECUTOR: SharedScorerExecutor | None = None


def _init(threads: int | None, inherited: processes.Inherited) -> None:
    inherited.adopt()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if threads:  # for the life of this worker process, as a sweep worker does
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def run_trial(job: TrialJob) -> float:
    """Train and score one trial in its run folder, tracked as one MLflow run; its score."""
    global _EXECUTOR
    from ituning.run_config import TrainConfig

    if _EXECUTOR is None or _EXECUTOR.fn is not load_executor(job.executor):
        _EXECUTOR = SharedScorerExecutor(load_executor(job.executor))
    tracker = tracking.Tracker(job.tracking_uri, job.experiment)
    tracker.close_orphans(job.tags["config_hash"])  # a run of this trial left by a dead search
    out_dir = Path(job.out_dir)
    run = tracker.start(run_name=job.run_name, params=job.params, tags=job.tags)
    config = TrainConfig.model_validate_json(job.config_json)
    try:
        with folders.run_lock(out_dir):
            result = _EXECUTOR(config, out_dir, run, progress=job.progress)
            run.log_result(result, out_dir)
    except BaseException as exc:
        reason = failure_reason(exc, out_dir)[0] if isinstance(exc, Exception) else "interrupted"
        run.end("FAILED", reason)
        raise RunFailed(reason) from None
    if METRIC not in result.metrics:
        run.end("FAILED", f"no {METRIC} in the result")
        raise RunFailed(f"no {METRIC} in the result")
    run.end("FINISHED")
    return float(result.metrics[METRIC])
