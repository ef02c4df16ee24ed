"""``python -m bench.tune [--methods M ...] [--lm base] [--seed 0]``: choose each method's learning
rate (and I-Tuning's λ) by the same search on the validation split and record it for the profile
(how: ``bench.tune.search``)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from bench.sweep import learning_rates, tracking
from bench.sweep import queue as work_queue
from bench.sweep.axes import LM_NAMES, RANDOM_WEIGHT_TWINS
from bench.sweep.coordinator import check_workers, default_workers
from bench.sweep.profiles import PROFILES, SCALES, add_paper_arguments, profile_from_args
from bench.sweep.worker import DEFAULT_EXECUTOR
from bench.tune.search import LAMBDA_GRID, LR_GRID, METRIC, Search, run_search
from ituning.errors import ArgumentParser, ConfigError, cli_main
from ituning.methods.registry import METHODS


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.tune", description=__doc__.splitlines()[0])
    p.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=METHODS, help="default: all"
    )
    p.add_argument(
        "--lm",
        default="base",
        help=f"the LM searched at, a value of a spec's lm axis ({', '.join(LM_NAMES)}; "
        "default: base)",
    )
    p.add_argument("--seed", type=int, default=0, help="default: 0")
    p.add_argument(
        "--grid",
        nargs="+",
        type=float,
        default=list(LR_GRID),
        help=f"learning rates to try (default: {' '.join(f'{lr:g}' for lr in LR_GRID)})",
    )
    p.add_argument(
        "--lambdas",
        nargs="+",
        type=float,
        default=list(LAMBDA_GRID),
        help="λ (eq. 5) tried with every rate by the methods that have one; 1 alone: the rate "
        f"only (default: {' '.join(f'{lam:g}' for lam in LAMBDA_GRID)})",
    )
    p.add_argument("--profile", default="mini", choices=PROFILES, help="default: mini")
    p.add_argument("--scale", default="full", choices=SCALES, help="tiny: shrink everything")
    p.add_argument("--workers", type=int, help="worker processes (default: mini one per core)")
    p.add_argument("--storage", help="optuna storage URL (default sqlite:///RUNS/optuna.db)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///RUNS/mlflow.db)")
    p.add_argument("--runs-dir", default="runs", type=Path, help="run folders, stores, mini assets")
    add_paper_arguments(p)
    p.add_argument(
        "--record",
        type=Path,
        default=learning_rates.LEARNING_RATES_FILE,
        help="where the chosen rates are written (default: the file the profiles read)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--executor", default=DEFAULT_EXECUTOR, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_workers(args.workers, minimum=1)
    profile = profile_from_args(args)
    try:
        profile.lm(args.lm)
    except ConfigError as exc:  # not the profile's, or not available here: why, one line
        p.error(f"--{exc}")
    source = RANDOM_WEIGHT_TWINS.get(args.lm)
    if source is not None:
        p.error(
            f"--lm {args.lm} trains at the learning rate searched for {source} (a control that "
            f"differs from it in one thing only): search --lm {source}"
        )
    if any(not 0 < lr < 1 for lr in args.grid):
        p.error(f"--grid {' '.join(map(str, args.grid))}: learning rates lie between 0 and 1")
    if any(not 1 <= lam <= 1e3 for lam in args.lambdas):
        p.error(
            f"--lambdas {' '.join(map(str, args.lambdas))}: the paper requires λ >= 1 (give "
            "values from 1 to 1000)"
        )
    search = Search(
        methods=tuple(dict.fromkeys(args.methods)),
        lm=args.lm,
        seed=args.seed,
        grid=tuple(sorted(set(args.grid))),
        lambdas=tuple(sorted(set(args.lambdas))),
    )
    trials = sum(len(search.cells(m)) for m in search.methods)
    workers = args.workers or default_workers(profile, trials)
    started = time.perf_counter()
    records = run_search(
        search,
        profile,
        workers=workers,
        storage_url=args.storage or work_queue.default_storage_url(profile.runs_dir),
        tracking_uri=args.tracking_uri or tracking.default_tracking_uri(profile.runs_dir),
        executor=args.executor,
        progress=not args.quiet,
    )
    rates = learning_rates.read(args.record)
    for method, record in records.items():
        rates = rates.with_record(profile.label, method, search.lm, record)
    learning_rates.write(rates, args.record)
    print(
        f"learning-rate search ({METRIC}, {search.lm}, seed {search.seed}): "
        f"{time.perf_counter() - started:.0f} s; chosen rates written to {args.record}"
    )
    for method, record in records.items():
        scores = "  ".join(f"{lr:g}: {v:.1f}" for lr, v in record.scores.items())
        edge = " (at the grid's edge)" if record.at_edge() else ""
        lam = "" if record.lambda_ is None else f" λ {record.lambda_:g}"
        print(f"  {method:<20} {record.chosen:g}{lam}{edge}   [{scores}]")
        if record.lambda_scores:
            at = "  ".join(f"λ {k:g}: {v:.1f}" for k, v in record.lambda_scores.items())
            print(f"  {'':<20} at {record.chosen:g}: [{at}]")
    return 0
