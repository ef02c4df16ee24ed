"""Markdown text for the report: the prose template, tables, cells, labels and footnotes.

Everything here is a pure function of its arguments, so equal runs give byte-identical text. Table
cells are made safe (one line, ``|`` escaped, no machine paths) by :func:`clean`, because captions,
failure messages and tags come from outside and could otherwise break a table.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import re
from collections.abc import Sequence
from pathlib import Path
from string import Template

from bench import REPO_ROOT
from bench.report.results import Group, epochs_text

TEMPLATE_FILE = "report_template.md"
_PART = re.compile(r"^<!-- part: (\w+) -->\n", re.MULTILINE)


@functools.cache
def template_parts() -> dict[str, Template]:
    """The parts of ``report_template.md``: ``report`` (the document) and the paragraphs it uses
    conditionally, each introduced by a ``<!-- part: NAME -->`` line."""
    text = importlib.resources.files("bench.report").joinpath(TEMPLATE_FILE).read_text("utf-8")
    pieces = _PART.split(text)[1:]  # [name, body, name, body, ...]: the preamble comment dropped
    return {
        name: Template(body.strip("\n"))
        for name, body in zip(pieces[::2], pieces[1::2], strict=True)
    }


def fill(part: str, **values: object) -> str:
    """One template part with its ``${name}`` fields filled; blocks left empty disappear."""
    text = template_parts()[part].substitute({k: str(v).strip("\n") for k, v in values.items()})
    return re.sub(r"\n{3,}", "\n\n", text)


def clean(text: str) -> str:
    """One line, machine paths made relative, safe inside a Markdown table."""
    text = " ".join(str(text).split())
    for root in (Path.cwd().resolve(), REPO_ROOT):
        text = text.replace(str(root) + os.sep, "")
    home = str(Path.home())
    if home not in ("", "/"):
        text = text.replace(home + os.sep, "~" + os.sep)
    return text.replace("|", "\\|")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table; a cell's line breaks become ``<br>``, an empty cell a space."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _cell(value: str) -> str:
    return value.replace("\n", "<br>") if value else " "


def count(n: float | None) -> str:
    """A parameter count as the tables print it: 1.2M, 56.0k, 808; ``–`` when unknown."""
    if n is None:
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def seed_count(group: Group) -> str:
    """``1 seed``, ``3 seeds``."""
    n = len(group.runs)
    return f"{n} seed{'s' if n != 1 else ''}"


def point_label(group: Group) -> str:
    """A setting's short name (``mini-large+VLP drop 4/8``): only what differs from the paper's
    module is named."""
    r = group.first
    label = (
        r.lm_name + ("+VLP" if r.vlp else "") + ("" if r.at_budget else f" {epochs_text(r.epochs)}")
    )
    if r.method != "itune":
        return f"{r.method} {label}"
    if r.drop:
        label += f" drop {r.drop}/{r.n_layers}"
    if not r.default_lambda:
        label += f" λ={r.lam:g}"
    if not r.paper_bottleneck:
        label += f" r={r.bottleneck}"
    return label


def csv_link(name: str) -> str:
    """The line under a table that points to its numbers."""
    return f"Numbers: [{name}]({name})"


class Notes:
    """Lettered notes explaining missing cells, lettered by first use (deterministic)."""

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}

    def mark(self, text: str) -> str:
        if text not in self._ids:
            self._ids[text] = _letter(len(self._ids))
        return f"— ({self._ids[text]})"

    def lines(self) -> list[str]:
        return (
            ["", *(f"- ({k}) {clean(text)}" for text, k in self._ids.items())] if self._ids else []
        )


def _letter(i: int) -> str:
    return chr(ord("a") + i) if i < 26 else f"z{i - 25}"
