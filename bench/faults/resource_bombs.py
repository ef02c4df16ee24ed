"""R11, inputs built to exhaust the machine or to validate and then fail in training: YAML alias
bombs, grids of millions of points, a FIFO or ``/dev/zero`` as the spec, 100,000-deep nesting,
unhashable keys, seeds past 64 bits, absurd widths and beams, ``epochs: true``, a feature cache
outside the runs folder, a name with a trailing newline, and stores that are folders or in memory.

Each must be refused like any malformed input (exit 2, one ``error:`` line, no traceback, nothing
written), and quickly: within :data:`TIME_LIMIT_S`, with :data:`MEMORY_BYTES` of address space
beyond what the program's imports map (a bomb that expands in memory fails with a MemoryError
there, instead of taking the machine). The imports are measured, not assumed: the CUDA build of
torch alone maps more than 1 GiB.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from bench.faults.harness import FaultHarness
from bench.faults.trials import RowResult, Trial, expect, refused_cleanly, run_trial

TIME_LIMIT_S = 30.0
MEMORY_BYTES = 1 << 30
#: What ``python -m bench.sweep`` imports before it reads a spec.
_STARTUP = "import bench.sweep.cli, bench.sweep.plan, bench.sweep.profiles"


def startup_address_space(h: FaultHarness) -> int:
    """Bytes of address space (VmPeak) of a process that has imported what the sweep imports."""
    code = f"{_STARTUP}\nprint(next(line for line in open('/proc/self/status') if line.startswith('VmPeak')).split()[1])"
    proc = h.run(["-c", code])
    expect(proc.rc == 0, f"could not measure the imports' address space: {proc.tail()}")
    return int(proc.out.split()[-1]) * 1024


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Mappings of anchors each naming the previous one ``width`` times: ``width**levels`` leaves
    (387 million for 9 x 9) in a few hundred bytes."""
    lines = ["name: bomb", "axes: {seed: [0]}", "overrides:"]
    lines.append("  l0: &l0 {" + ", ".join(f"k{i}: 1" for i in range(width)) + "}")
    for level in range(1, levels):
        items = ", ".join(f"k{i}: *l{level - 1}" for i in range(width))
        lines.append(f"  l{level}: &l{level} {{{items}}}")
    return "\n".join(lines) + "\n"


def list_bomb(levels: int = 9, width: int = 9) -> str:
    """The same with lists, as the values of an axis."""
    lines = ["name: bomb", "anchors:", "  - &a0 [" + ", ".join(["0"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"  - &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    lines.append(f"axes: {{seed: *a{levels - 1}}}")
    return "\n".join(lines) + "\n"


def seeds(n: int) -> str:
    return "name: many\naxes:\n  seed: [" + ", ".join(map(str, range(n))) + "]\n"


SPECS: list[tuple[str, str | bytes, tuple[str, ...]]] = [
    ("alias bomb of mappings (9 levels x 9)", alias_bomb(), ("bomb.yaml",)),
    ("alias bomb of lists (9 levels x 9)", list_bomb(), ("bomb.yaml",)),
    ("a seed axis of 10^6 values (6.9 MB)", seeds(10**6), ("bomb.yaml",)),
    ("a seed axis of 20,000 values", seeds(20_000), ("bomb.yaml", "seed")),
    (
        "a grid of 10^6 points (1,000 seeds x 1,000 lambdas)",
        "name: grid\naxes:\n  seed: ["
        + ", ".join(map(str, range(1000)))
        + "]\n  lambda: ["
        + ", ".join(f"{1 + i / 1000:.3f}" for i in range(1000))
        + "]\n",
        ("bomb.yaml",),
    ),
    (
        "100,000-deep nesting",
        "name: deep\naxes: {seed: " + "[" * 100_000 + "]" * 100_000 + "}\n",
        ("bomb.yaml",),
    ),  # fmt: skip
    (
        "a 5 MB spec of comments",
        "# " + "x" * 5_000_000 + "\nname: big\naxes: {seed: [0]}\n",
        ("bomb.yaml",),
    ),  # fmt: skip
    (
        "an unhashable mapping key",
        "name: k\naxes: {seed: [0]}\nbase:\n  ? [a, b]\n  : 1\n",
        ("bomb.yaml",),
    ),  # fmt: skip
    ("a seed of 2^64", f"name: s\naxes: {{seed: [{2**64}]}}\n", ("bomb.yaml", "seed")),
    (
        "a bottleneck width of 10^9",
        "name: w\naxes: {bottleneck: [{width: 1000000000}]}\n",
        ("bottleneck",),
    ),  # fmt: skip
    (
        "a beam of 10^6",
        "name: b\naxes: {seed: [0]}\noverrides: {eval.beam: 1000000}\n",
        ("bomb.yaml", "beam"),
    ),  # fmt: skip
    (
        "epochs: true",
        "name: e\naxes: {seed: [0]}\noverrides: {epochs: true}\n",
        ("bomb.yaml", "epochs"),
    ),  # fmt: skip
    (
        "the feature cache pointed outside the runs folder",
        "name: f\naxes: {seed: [0]}\noverrides: {feature_cache: /tmp/elsewhere}\n",
        ("bomb.yaml", "feature_cache"),
    ),
    (
        "a name with a trailing newline",
        'name: "table1\\n"\naxes: {seed: [0]}\n',
        ("bomb.yaml", "name"),
    ),  # fmt: skip
]


def check_resource_bombs(h: FaultHarness, row: RowResult) -> None:
    memory = startup_address_space(h) + MEMORY_BYTES
    runs = h.work / "r11-runs"  # must never come into existence
    cwd = h.scratch("r11-cwd")
    cwd.mkdir()

    def refused(t: Trial, args: list[str], names: tuple[str, ...], memory: int | None) -> None:
        proc = h.run(args, cwd=cwd, timeout=TIME_LIMIT_S * 4, memory=memory)
        line = refused_cleanly(proc, names, [runs], cwd)
        expect(proc.seconds < TIME_LIMIT_S, f"took {proc.seconds:.0f} s: {line}")
        t.notes.append(f"{proc.seconds:.1f} s")

    def spec_case(text: str | bytes, names: tuple[str, ...]) -> Callable[[Trial], None]:
        def trial(t: Trial) -> None:
            spec = h.scratch("r11-spec") / "bomb.yaml"
            spec.parent.mkdir()
            spec.write_bytes(text if isinstance(text, bytes) else text.encode())
            refused(t, h.sweep_args(spec, runs), names, memory)

        return trial

    def special_file(make: Callable[[Path], Path], names: tuple[str, ...]):
        def trial(t: Trial) -> None:
            path = make(h.scratch("r11-special"))
            refused(t, h.sweep_args(path, runs), names, memory)

        return trial

    def fifo(folder: Path) -> Path:
        folder.mkdir()
        os.mkfifo(folder / "spec.yaml")  # opened for reading, it would block forever
        return folder / "spec.yaml"

    def flag_case(extra: Callable[[Path], list[str]], names: tuple[str, ...]):
        def trial(t: Trial) -> None:
            scratch = h.scratch("r11-flag")
            scratch.mkdir()
            refused(t, h.sweep_args("smoke", runs, *extra(scratch)), names, None)

        return trial

    def folder_db(scratch: Path) -> list[str]:
        (scratch / "store").mkdir()
        return ["--tracking-uri", f"sqlite:///{scratch / 'store'}"]

    for name, text, names in SPECS:
        run_trial(row, f"spec: {name}", spec_case(text, names))
    run_trial(row, "spec: a FIFO", special_file(fifo, ("spec.yaml", "not a regular file")))
    run_trial(row, "spec: /dev/zero", special_file(lambda _: Path("/dev/zero"), ("/dev/zero",)))
    run_trial(row, "flag: --seeds 10^7", flag_case(lambda _: ["--seeds", "10000000"], ("seeds",)))
    run_trial(
        row, "flag: --tracking-uri naming a folder", flag_case(folder_db, ("not a database",))
    )
    run_trial(
        row,
        "flag: --storage sqlite:// (in memory)",
        flag_case(lambda _: ["--storage", "sqlite://"], ("in-memory",)),
    )
    row.notes.append(
        f"{row.trials} inputs; checked: exit 2, one `error:` line, no traceback, nothing written, "
        f"refused within {TIME_LIMIT_S:.0f} s, specs with {MEMORY_BYTES >> 30} GiB of address space "
        f"beyond the imports' {(memory - MEMORY_BYTES) / (1 << 30):.1f} GiB"
    )
