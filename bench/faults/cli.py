"""``python -m bench.faults``: pick the rows, run them in a scratch folder, print the table and
write the report. Exit 0 when every trial passed, 1 otherwise, 2 for bad flags."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.faults.report import report, scrub, table, updated
from bench.faults.rows import ROWS, run_rows
from ituning.errors import ArgumentParser, cli_main
from ituning.files import atomic_write

DESCRIPTION = (
    "Fault injection, for real: ``python -m bench.faults [--quick] [--trials N] [--out FILE]``."
)


@contextlib.contextmanager
def work_folder(keep: Path | None) -> Iterator[Path]:
    """``keep`` (created, and left for a look after a failure), else a temporary folder."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="ituning-faults-") as tmp:
        yield Path(tmp)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.faults", description=DESCRIPTION)
    p.add_argument("--quick", action="store_true", help="fewer trials (one per required case)")
    p.add_argument("--trials", type=int, default=3, help="random-moment kills per row (default 3)")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated row ids (default all)")
    p.add_argument("--seed", type=int, default=0, help="for the kill points and moments")
    p.add_argument("--out", type=Path, default=Path("reports/reliability.md"))
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp)")
    p.add_argument(
        "--update",
        action="store_true",
        help="replace only the rows run now in the existing --out report (a partial rerun)",
    )
    args = p.parse_args(argv)
    rows = [r.strip().upper() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or args.trials < 0:
        p.error(f"--rows: unknown {unknown}" if unknown else "--trials must be >= 0")
    if args.update and not args.out.is_file():
        p.error(f"--update: {args.out} does not exist; run without --update first")
    started = time.perf_counter()
    with work_folder(args.keep) as work:
        results = run_rows(work, quick=args.quick, trials=args.trials, seed=args.seed, rows=rows)
        seconds = time.perf_counter() - started
        command = "python -m bench.faults" + (" --quick" if args.quick else "")
        if args.trials != 3:
            command += f" --trials {args.trials}"
        if args.rows != ",".join(ROWS):
            command += f" --rows {','.join(rows)}"
        if args.update:
            command += " --update"
            text = updated(
                args.out.read_text(), results, command=command, seconds=seconds, work=work
            )
        else:
            text = report(results, command=command, seconds=seconds, work=work)
    print()
    print("\n".join(table(results)))
    for r in results:
        for failure in r.failures:
            print(f"FAILED {r.id}: {scrub(failure, work)}")
    atomic_write(args.out, text)
    print(f"\nreport: {args.out} ({seconds / 60:.1f} min)")
    return 0 if all(r.passed == r.trials for r in results) else 1
