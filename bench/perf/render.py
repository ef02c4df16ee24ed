"""The report as Markdown (``report_template.md`` filled with the run's tables) and as a plain
terminal table."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from string import Template

from bench.perf.explain import explain_misses
from bench.perf.results import Report

TEMPLATE_NAME = "report_template.md"


def report_template() -> Template:
    """The report's fixed prose with ``${...}`` slots (package data, so it ships with the code)."""
    text = resources.files("bench.perf").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8")
    return Template(text)


def gpu_time_tables(report: Report) -> list[str]:
    """Per arm, the operators whose kernels took the most GPU time (CUDA runs)."""
    arms = [(k, b) for k, b in report.busy.items() if b.top]
    if not arms:
        return []
    lines = ["## Where the GPU time goes", ""]
    for key, busy in arms:
        lines += [
            f"**{key}**: {1e3 * busy.kernel_s:.1f} ms of kernels in a {1e3 * busy.step_s:.1f} ms "
            "step; operators by the GPU time of the kernels they launched:",
            "",
            "| operator | calls | GPU ms | share of kernel time |",
            "|---|---|---|---|",
            *(
                f"| `{op}` | {calls:,} | {1e3 * sec:.2f} | {100 * sec / busy.kernel_s:.0f} % |"
                for op, sec, calls in busy.top
            ),
            "",
        ]
    return lines


def render_markdown(report: Report, plot_name: str | None, command: str) -> str:
    """The full report; ``plot_name`` is the plot's file name next to it (None: no plot)."""
    machine = [f"- {k}: {v}" for k, v in report.machine.items()]
    machine.append(
        f"- device: {report.mode.device}; precision: {report.mode.precision}; ratios from "
        f"{'process CPU time' if report.mode.clock == 'process' else 'wall time'}; memory: "
        f"{report.mode.memory}"
    )
    rows = []
    for r in report.rows:
        met = "—" if r.met is None else ("yes" if r.met else "**no**")
        what = r.what + (f" ({r.note})" if r.note else "")
        rows.append(
            f"| {r.id} | {what} | {r.ours} | {r.baseline} | {r.result} | {r.target} | {met} |"
        )
    details: list[str] = []  # the sections between the results and the method, if any
    if plot_name:
        details += [f"![ratios against targets]({plot_name})", ""]
    misses = explain_misses(report)
    if misses:
        details += ["## Missed targets", "", *misses, ""]
    details += gpu_time_tables(report)
    # ${rows} and ${details} take whole lines, each ending in a newline: an empty slot adds none.
    return report_template().substitute(
        command=command,
        date=dt.date.today().isoformat(),
        minutes=f"{report.wall_s / 60:.1f}",
        machine="\n".join(machine),
        rows="".join(line + "\n" for line in rows),
        details="".join(line + "\n" for line in details),
    )


def render_table(report: Report) -> str:
    """Plain-text table for the terminal."""
    head = ("id", "ours", "baseline", "ratio / result", "target", "met")
    marks = {None: "-", True: "yes", False: "NO"}
    body = [(r.id, r.ours, r.baseline, r.result, r.target, marks[r.met]) for r in report.rows]
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
    out += [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in body
    ]
    return "\n".join(out)
