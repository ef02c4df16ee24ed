"""The paper's published numbers (Tables 1-3), as typed rows the report and the claims compare with.

They live in ``bench/report/paper_tables.yaml`` (package data; its header names the source: arXiv
2202.06574 v3, ICASSP 2023). A row of the paper's own method carries ``lm``, ``vlp`` and
``drop_first``: that is how a reproduced run is matched to it (see :func:`PaperRow.drop_fraction`).
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ituning.errors import ConfigError

SOURCE = "Luo et al., I-Tuning, ICASSP 2023 (arXiv 2202.06574 v3)"
DATA_FILE = "paper_tables.yaml"
#: The paper's GPT-2 names -> the harness's LM sizes (``bench.sweep.axes.LM_SIZES``).
LM_SIZE = {"gpt2": "base", "gpt2-medium": "medium", "gpt2-large": "large"}
LM_LAYERS = {"gpt2": 12, "gpt2-medium": 24, "gpt2-large": 36}
_PARAMS_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kKMB]?)$")
_UNIT = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9}


@dataclass(frozen=True)
class PaperRow:
    model: str
    group: str
    params: str  # as printed ("14M")
    values: dict[str, float | None]
    images: int | None = None
    lm: str | None = None  # the paper's LM name for I-Tuning rows, else None (a baseline)
    vlp: bool | None = None
    drop_first: int | None = None

    @property
    def ours(self) -> bool:
        return self.lm is not None

    @property
    def lm_size(self) -> str | None:
        return LM_SIZE.get(self.lm) if self.lm else None

    @property
    def params_count(self) -> float:
        return parse_params(self.params)

    @property
    def drop_fraction(self) -> float:
        """Dropped layers as a fraction of depth (18 of 36 -> 0.5), the spec's ``drop`` axis."""
        if not self.lm or not self.drop_first:
            return 0.0
        return self.drop_first / LM_LAYERS[self.lm]


@dataclass(frozen=True)
class PaperTable:
    name: str
    columns: tuple[str, ...]
    rows: tuple[PaperRow, ...]

    def ours(self) -> list[PaperRow]:
        return [r for r in self.rows if r.ours]

    def baselines(self) -> list[PaperRow]:
        return [r for r in self.rows if not r.ours]


@dataclass(frozen=True)
class CaptionExample:
    """One row of Table 3: references and the captions printed for each system."""

    golden: tuple[str, ...]
    clipcap: str
    oscar: str
    ituning_large: str


@dataclass(frozen=True)
class PaperTables:
    table1: PaperTable
    table2: PaperTable
    table3: tuple[CaptionExample, ...]


def parse_params(text: str) -> float:
    """``"14M"`` -> 14e6."""
    match = _PARAMS_RE.match(str(text).strip())
    if not match:
        raise ConfigError(f"paper tables: params {text!r}: expected a number and unit such as 14M")
    return float(match.group(1)) * _UNIT[match.group(2)]


def load_paper_tables(path: Path | str | None = None) -> PaperTables:
    """Read and check the package's transcription (or another file of the same layout)."""
    if path is None:
        resource = importlib.resources.files("bench.report").joinpath(DATA_FILE)
        text, where = resource.read_text(), f"bench/report/{DATA_FILE}"
    else:
        text, where = Path(path).read_text(), str(path)
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with table1, table2, table3")
    try:
        return PaperTables(
            table1=_table("table1", raw["table1"], where),
            table2=_table("table2", raw["table2"], where),
            table3=tuple(
                CaptionExample(
                    golden=tuple(item["golden"]),
                    clipcap=item["clipcap"],
                    oscar=item["oscar"],
                    ituning_large=item["ituning_large"],
                )
                for item in raw["table3"]
            ),
        )
    except KeyError as exc:
        raise ConfigError(f"{where}: missing key {exc.args[0]!r}") from None


def _table(name: str, raw: dict[str, Any], where: str) -> PaperTable:
    columns = tuple(raw["columns"])
    rows = []
    for i, row in enumerate(raw["rows"]):
        values = row["values"]
        if len(values) != len(columns):
            raise ConfigError(
                f"{where}: {name}.rows[{i}] ({row.get('model')}): {len(values)} values for "
                f"{len(columns)} columns"
            )
        lm = row.get("lm")
        if lm is not None and lm not in LM_SIZE:
            raise ConfigError(f"{where}: {name}.rows[{i}].lm: unknown LM {lm!r}")
        rows.append(
            PaperRow(
                model=row["model"],
                group=row["group"],
                params=str(row["params"]),
                values={
                    c: (None if v is None else float(v))
                    for c, v in zip(columns, values, strict=True)
                },
                images=row.get("images"),
                lm=lm,
                vlp=row.get("vlp"),
                drop_first=row.get("drop_first"),
            )
        )
    return PaperTable(name=name, columns=columns, rows=tuple(rows))
