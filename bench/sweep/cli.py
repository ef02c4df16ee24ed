"""``python -m bench.sweep SPEC [--profile mini|paper] [--dry-run] [--workers N] ...``: run a sweep
(how: ``bench.sweep.coordinator``)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import SPECS_DIR
from bench.sweep import queue as work_queue
from bench.sweep.coordinator import check_workers, run_sweep
from bench.sweep.dry_run import describe
from bench.sweep.preflight import preflight
from bench.sweep.profiles import PROFILES, SCALES, add_paper_arguments, profile_from_args
from bench.sweep.spec import find_spec, load_spec
from bench.sweep.worker import DEFAULT_EXECUTOR
from ituning.errors import ArgumentParser, cli_main


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.sweep", description="Run a sweep spec's grid of runs.")
    p.add_argument("spec", help="a YAML file or the name of one in sweeps/ (e.g. table1)")
    p.add_argument("--profile", default="mini", choices=PROFILES, help="default: mini")
    p.add_argument(
        "--scale", default="full", choices=SCALES, help="tiny: shrink everything (tests)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the resolved runs and stop")
    p.add_argument(
        "--no-estimate",
        action="store_true",
        help="dry run without the cost estimate (it times each architecture once per machine)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="train every point with seeds 0..N-1 (replaces the spec's seed axis)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="local worker processes; 0 = only enqueue (default: mini one per core, paper 1)",
    )
    p.add_argument("--storage", help="optuna storage URL (default sqlite:///RUNS/optuna.db)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///RUNS/mlflow.db)")
    p.add_argument("--runs-dir", default="runs", type=Path, help="run folders, stores, mini assets")
    add_paper_arguments(p)
    p.add_argument(
        "--heartbeat",
        type=int,
        default=work_queue.HEARTBEAT_S,
        help="seconds between heartbeats",
    )
    p.add_argument(
        "--grace", type=int, default=work_queue.GRACE_S, help="seconds without heartbeat = dead"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--executor", default=DEFAULT_EXECUTOR, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_workers(args.workers)
    if args.heartbeat < 1:
        p.error("--heartbeat must be >= 1")
    if args.grace <= args.heartbeat:  # a live worker would be declared dead between heartbeats
        p.error("--grace must be longer than --heartbeat")

    spec = load_spec(_shown(find_spec(args.spec, SPECS_DIR)))
    if args.seeds is not None:
        spec = spec.with_seeds(args.seeds)
    profile = profile_from_args(args)
    plans = profile.plan(spec)
    if args.dry_run:  # the plan first, so it shows even while the data is not in place
        print(describe(spec, profile, plans, args.tracking_uri, estimate=not args.no_estimate))
        preflight(profile, plans, progress=not args.quiet)
        return 0
    started = time.perf_counter()
    report = run_sweep(
        spec,
        profile,
        workers=args.workers,
        storage_url=args.storage,
        tracking_uri=args.tracking_uri,
        executor=args.executor,
        progress=not args.quiet,
        heartbeat_s=args.heartbeat,
        grace_s=args.grace,
        plans=plans,
    )
    print(f"sweep {spec.name}: {time.perf_counter() - started:.0f} s")
    if not report.ok:
        dead = f"; {len(report.dead_workers)} worker(s) died" if report.dead_workers else ""
        print(
            f"error: {len(report.failed)} of {report.points} points failed{dead} (listed above)",
            file=sys.stderr,
        )
        return 1
    return 0


def _shown(path: Path) -> Path:
    """A path relative to the working directory when it lies below it (messages, tags)."""
    rel = os.path.relpath(path)
    return Path(rel) if not rel.startswith("..") else path
