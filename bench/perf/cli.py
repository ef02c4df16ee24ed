"""``python -m bench.perf``: parse the flags, run, print the table, write the report and its plot.

Exit codes: 0 done, 1 when the decoding arms produced different token ids (a correctness bug),
2 for a configuration error (one ``error: ...`` line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from bench.perf.decoding_arms import CAPTIONS_DIFFER
from bench.perf.plot import render_plot
from bench.perf.render import render_markdown, render_table
from bench.perf.results import ROW_IDS
from bench.perf.runner import run
from bench.perf.settings import Sizes, quick_sizes, select_mode
from ituning.errors import ConfigError, cli_main

DESCRIPTION = "Performance benchmark: I-Tuning against its baselines, side by side in one process."


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="tiny configs, fewer repetitions")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--out", type=Path, default=None, help="reports/perf.md (CPU) or reports/perf-cuda.md"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU: 1)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per arm")
    parser.add_argument("--mfu", action="store_true", help="MFU rows on CPU too")
    parser.add_argument(
        "--images",
        type=int,
        default=None,
        help="images per train step (default 8; 5 captions each)",
    )
    parser.add_argument(
        "--decode-images", type=int, default=None, help="images per beam search (default 8)"
    )
    parser.add_argument(
        "--rows", default=",".join(ROW_IDS), help="comma-separated subset of " + ",".join(ROW_IDS)
    )
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROW_IDS]
    if unknown or not rows:
        raise ConfigError(f"--rows: unknown ids {unknown}; choose from {','.join(ROW_IDS)}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError("--threads must be at least 1")
    mode = select_mode(args.device, threads=args.threads, mfu=args.mfu)
    sizes = quick_sizes() if args.quick else Sizes().for_mode(mode)
    if args.reps is not None:
        if args.reps < 1:
            raise ConfigError("--reps must be at least 1")
        sizes = replace(sizes, reps=args.reps, decode_reps=args.reps)
    for flag, name in (("--images", "images"), ("--decode-images", "decode_images")):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise ConfigError(f"{flag} must be at least 1, got {value}")
            sizes = replace(sizes, **{name: value})
    report = run(sizes, mode, quick=args.quick, rows=rows)
    print(render_table(report))
    out: Path = args.out or Path("reports", "perf-cuda.md" if mode.device == "cuda" else "perf.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    plot = out.with_suffix(".png")
    render_plot(report, plot)
    command = "python -m bench.perf " + " ".join(argv if argv is not None else sys.argv[1:])
    out.write_text(render_markdown(report, plot.name, command.strip()))
    print(f"wrote {out} and {plot}")
    differ = [r.id for r in report.rows if CAPTIONS_DIFFER in r.note]
    if differ:
        print(f"error: {', '.join(differ)}: the decoding arms produced different token ids")
        return 1
    return 0
