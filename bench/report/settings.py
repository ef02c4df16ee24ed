"""What a report is built from: the CLI's settings and, once read, the runs and the paper's tables.

Every section takes one :class:`ReportInputs`, so a section can be rendered (and tested) from
hand-built runs without MLflow. Paths are printed as the user gave them (:func:`shown`) so that a
report never carries one machine's absolute paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.report.paper import PaperTables
from bench.report.results import RunSet
from bench.sweep import tracking


def shown(path: Path | str) -> str:
    """A path relative to the working directory when below it (no machine paths in reports)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(path)


def shown_uri(uri: str) -> str:
    """A tracking URI with its SQLite path shown as :func:`shown` does."""
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + shown(uri.removeprefix("sqlite:///"))
    return uri


@dataclass(frozen=True)
class ReportSettings:
    """Where the runs are and where the report goes (CLI flags, in one place)."""

    profile: str = "mini"
    scale: str = "full"
    runs_dir: Path = Path("runs")
    out_dir: Path | None = None
    tracking_uri: str | None = None
    attention: bool = True  # False: skip Figure 3

    @property
    def out(self) -> Path:
        if self.out_dir is not None:
            return Path(self.out_dir)
        suffix = "" if self.scale == "full" else f"-{self.scale}"
        return Path("reports") / f"{self.profile}{suffix}"

    @property
    def uri(self) -> str:
        return self.tracking_uri or tracking.default_tracking_uri(self.runs_dir)

    @property
    def cache(self) -> Path:
        """Where derived numbers of finished runs are kept (test-set resamples): beside the
        tracking store when it is a SQLite file, else under the runs folder."""
        if self.uri.startswith("sqlite:///"):
            return Path(self.uri.removeprefix("sqlite:///")).parent / "cache"
        return self.runs_dir / "cache"

    def command(self) -> str:
        """The command that rebuilds this report (paths as the user gave them)."""
        parts = ["python -m bench.report", f"--profile {self.profile}"]
        if self.scale != "full":
            parts.append(f"--scale {self.scale}")
        if self.tracking_uri:
            parts.append(f"--tracking-uri {shown_uri(self.tracking_uri)}")
        else:
            parts.append(f"--runs-dir {shown(self.runs_dir)}")
        parts.append(f"--out {shown(self.out)}")
        if not self.attention:
            parts.append("--no-attention")
        return " ".join(parts)


@dataclass
class ReportInputs:
    """Everything a section reads (settings, runs, the paper's tables) and where it writes files.

    ``out`` receives the README, its figures and CSVs; ``scratch`` is a temporary folder for
    artifacts downloaded from MLflow, removed when the report is written.
    """

    settings: ReportSettings
    runs: RunSet
    paper: PaperTables
    out: Path
    scratch: Path

    @property
    def mini(self) -> bool:
        """Another task than the paper's (the mini profile), so no differences to its numbers."""
        return not self.runs.paper_task
