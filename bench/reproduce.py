"""From a fresh machine to the report in one command: ``python -m bench.reproduce [options]``.

1. resolve the sweeps (default ``table1`` and ``table2``: every point a claim compares, at the
   specs' three seeds, and at ``mini`` also ``grounding``: the largest model trained longer, for
   the grounding claim and Table 3; ``--seeds N`` changes that) under the profile and show the
   plan: how many points, how many already finished;
2. build what the profile needs and lacks (``mini``: the pre-trained mini backbones and the Shapes
   world, once, cached under ``--runs-dir``; ``paper``: check the data root);
3. run the sweeps under one coordinator (``bench.sweep.coordinator.run_sweeps``, tracked in
   MLflow): the specs' distinct points are queued heaviest first and the workers (``mini``: one
   single-threaded worker per core) drain them; points with a FINISHED MLflow run are skipped, and
   a point shared by two sweeps is one run, so a second call trains nothing;
4. write the report (``bench.report``) to ``reports/<profile>/README.md`` and its PNGs.

``--tiny`` runs the same pipeline at test size (``--scale tiny`` of the sweeps: tiny backbones,
data and budget) into ``reports/<profile>-tiny``: a smoke test of every step, not a result.
``--profile paper --data-root DIR`` is the real reproduction (GPU machine, GPT-2 and CLIP weights
in the Hugging Face cache). The exit status is 1 when a point failed or a worker died (the report is still written,
saying which), 2 for a usage or configuration error before anything ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import SPECS_DIR
from bench.report.build import ReportSettings, build_report, shown
from bench.sweep import queue, tracking
from bench.sweep.coordinator import SweepReport, check_workers, default_workers, run_sweeps
from bench.sweep.plan import RunPlan
from bench.sweep.preflight import preflight
from bench.sweep.profile import Profile
from bench.sweep.profiles import PROFILES, add_paper_arguments, profile_from_args
from bench.sweep.spec import SweepSpec, find_spec, load_spec
from ituning.errors import ArgumentParser, cli_main

#: The sweeps a profile reproduces unless ``--sweeps`` names others: every point a claim compares.
#: The grounding spec is mini's only (it names the Shapes world's objects; its 12 epochs are
#: three times mini's budget and would be fewer than the paper's 30).
DEFAULT_SWEEPS = {"mini": ("table1", "table2", "grounding"), "paper": ("table1", "table2")}


@dataclass
class ReproduceResult:
    report: Path
    sweeps: dict[str, SweepReport] = field(default_factory=dict)
    trained: list[str] = field(default_factory=list)  # run ids that this call finished
    wall_s: float = 0.0

    @property
    def failed(self) -> dict[str, str]:
        return {k: v for rep in self.sweeps.values() for k, v in rep.failed.items()}

    @property
    def ok(self) -> bool:
        return all(rep.ok for rep in self.sweeps.values())


def reproduce(
    profile: Profile,
    specs: Sequence[SweepSpec],
    *,
    out: Path | None = None,
    workers: int | None = None,
    tracking_uri: str | None = None,
    storage_url: str | None = None,
    progress: bool = True,
    attention: bool = True,
    log: Callable[[str], None] = print,
) -> ReproduceResult:
    """Steps 1-4 of the module docstring; returns what ran and where the report is."""
    started = time.perf_counter()
    uri = tracking_uri or tracking.default_tracking_uri(profile.runs_dir)
    steps = 3

    def step(i: int, text: str) -> None:
        log(f"[{i}/{steps}] {text} ({time.perf_counter() - started:.0f} s elapsed)")

    plans: dict[str, list[RunPlan]] = {spec.name: profile.plan(spec) for spec in specs}
    distinct = {p.run_id: p for ps in plans.values() for p in ps}
    # Everything that can fail fast does so before the mini backbones are trained.
    preflight(profile, list(distinct.values()), progress=progress)
    tracking.check_reachable(uri)
    queue.open_storage(storage_url or queue.default_storage_url(profile.runs_dir))
    done_before = distinct.keys() & tracking.finished_if_stored(uri, profile.label).keys()
    todo = len(distinct) - len(done_before)
    scale = "" if profile.scale == "full" else f", {profile.scale} scale"
    log(
        f"reproduce (profile {profile.name}{scale}): sweeps {', '.join(plans)}; "
        f"{len(distinct)} distinct points, {len(done_before)} already finished"
    )
    step(1, f"backbones and data for profile {profile.name}")
    profile.prepare(list(distinct.values()), progress=progress)
    result = ReproduceResult(report=Path())
    workers = workers or default_workers(profile, todo)
    step(
        2,
        f"sweeps {', '.join(plans)}: {todo} points to train, {workers} worker{'s' * (workers > 1)}",
    )
    result.sweeps = run_sweeps(
        specs,
        profile,
        workers=workers,
        storage_url=storage_url,
        tracking_uri=uri,
        progress=progress,
        plans=plans,
        log=log,
    )
    finished = tracking.Tracker(uri, profile.label).finished()
    result.trained = sorted((distinct.keys() & finished.keys()) - done_before)
    step(steps, "report")
    settings = ReportSettings(
        profile=profile.name,
        scale=profile.scale,
        runs_dir=profile.runs_dir,
        out_dir=out,
        tracking_uri=tracking_uri,
        attention=attention,
    )
    result.report = build_report(settings, log=log)
    result.wall_s = time.perf_counter() - started
    log(
        f"reproduce: trained {len(result.trained)} new points, {len(result.failed)} failed; "
        f"{result.wall_s:.0f} s; report: {shown(result.report)}"
    )
    return result


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.reproduce", description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="mini", choices=PROFILES, help="default: mini")
    add_paper_arguments(p)
    p.add_argument(
        "--tiny", action="store_true", help="test size: tiny backbones, data and budget (seconds)"
    )
    p.add_argument(
        "--sweeps",
        nargs="+",
        metavar="SPEC",
        help="sweep names in sweeps/ or YAML paths (default: "
        + "; ".join(f"{k} {' '.join(v)}" for k, v in DEFAULT_SWEEPS.items())
        + ")",
    )
    p.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="train every point with seeds 0..N-1 (default: each spec's seed axis; the claims' "
        "specs have 3)",
    )
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="run folders and stores")
    p.add_argument("--out", type=Path, help="report folder (default reports/<profile>)")
    p.add_argument(
        "--workers",
        type=int,
        help="local worker processes (default: mini one per core, paper 1)",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default sqlite:///RUNS/mlflow.db)")
    p.add_argument("--storage", help="optuna storage URL (default sqlite:///RUNS/optuna.db)")
    p.add_argument("--no-attention", action="store_true", help="skip Figure 3 in the report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    check_workers(args.workers, minimum=1)
    names = args.sweeps or DEFAULT_SWEEPS[args.profile]
    specs = [load_spec(find_spec(name, SPECS_DIR)) for name in names]
    if args.seeds is not None:
        specs = [spec.with_seeds(args.seeds) for spec in specs]
    profile = profile_from_args(args, scale="tiny" if args.tiny else "full")
    result = reproduce(
        profile,
        specs,
        out=args.out,
        workers=args.workers,
        tracking_uri=args.tracking_uri,
        storage_url=args.storage,
        progress=not args.quiet,
        attention=not args.no_attention,
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
