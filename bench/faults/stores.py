"""What the stores and run folders say after a fault: MLflow runs, optuna trials, ``result.json``.

Every row that verifies an outcome ("one FINISHED MLflow run per point", "none RUNNING", "the
finished folder was not rewritten") reads it through these functions and nothing else, so a change
of how the sweep names its experiments and studies, or of which runs it logs, is adapted here once.
The stores are read with SQLite directly, a fresh read-only look each time: no client-side cache
can hide what a rerun changed.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ituning.files import sha256_file
from ituning.phase_clock import is_timing_metric

#: The profile and scale every sweep of the suite runs on.
PROFILE = "mini"
SCALE = "tiny"
#: Metrics that measure the machine, not the result: left out of every comparison.


@dataclass
class MlRun:
    """One MLflow run: its status and the tags the checks look at."""

    run_id: str
    status: str
    tags: dict[str, str]

    @property
    def point(self) -> str | None:
        """The run folder digest (``config_hash`` tag) of the point it tracked."""
        return self.tags.get("config_hash")

    @property
    def failure_reason(self) -> str:
        return self.tags.get("failure_reason", "")


# ---------------------------------------------------------------------- names


def profile_store(profile: str = PROFILE) -> str:
    """The MLflow experiment and optuna study of a profile's sweeps: ``mini-tiny`` (one of each
    per profile; a point that several specs ask for is one run and one trial)."""
    return f"{profile}-{SCALE}"


# ---------------------------------------------------------------------- MLflow


def mlflow_runs(runs: Path, experiment: str, spec: str | None = None) -> list[MlRun]:
    """The active runs of ``experiment`` in ``runs/mlflow.db`` (tables ``experiments``, ``runs``,
    ``tags`` of MLflow's SQL schema), only those tagged ``spec.<spec>`` when a spec is given;
    [] if there is no store yet."""
    db = runs / "mlflow.db"
    if not db.exists():
        return []
    con = sqlite3.connect(db, timeout=60)
    try:
        rows = con.execute(
            "SELECT r.run_uuid, r.status, t.key, t.value FROM runs r "
            "JOIN experiments e ON e.experiment_id = r.experiment_id "
            "LEFT JOIN tags t ON t.run_uuid = r.run_uuid "
            "AND t.key IN ('config_hash', 'failure_reason', 'reused_result', 'resumed', ?) "
            "WHERE e.name = ? AND r.lifecycle_stage = 'active'",
            (f"spec.{spec}", experiment),
        ).fetchall()
    finally:
        con.close()
    found: dict[str, MlRun] = {}
    for run_id, status, key, value in rows:
        run = found.setdefault(run_id, MlRun(run_id, status, {}))
        if key is not None:
            run.tags[key] = value
    runs_found = list(found.values())
    return [r for r in runs_found if spec is None or r.tags.get(f"spec.{spec}") == "true"]


def sweep_mlflow_runs(runs: Path, spec: str, profile: str = PROFILE) -> list[MlRun]:
    """The MLflow runs of the points of spec ``spec`` on ``profile`` in the runs folder ``runs``."""
    return mlflow_runs(runs, profile_store(profile), spec)


def runs_of_point(mlruns: list[MlRun], run_id: str) -> list[MlRun]:
    """The MLflow runs (of those given) that tracked the point whose run folder is ``run_id``."""
    return [r for r in mlruns if r.point == run_id]


def run_by_point(mlruns: list[MlRun]) -> dict[str | None, MlRun]:
    """Each point's MLflow run, by run folder digest (the last one if a point has several)."""
    return {r.point: r for r in mlruns}


# ---------------------------------------------------------------------- optuna


def trial_states(runs: Path, study: str, spec: str | None = None) -> list[tuple[str, str]]:
    """(digest, state) of every optuna trial of ``study`` in ``runs/optuna.db`` (only those a
    ``spec`` asked for, when given; read-only; [] if none)."""
    db = runs / "optuna.db"
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT t.state, a.value_json, s2.value_json FROM trials t JOIN studies s USING (study_id) "
            "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'digest' "
            "LEFT JOIN trial_user_attributes s2 ON s2.trial_id = t.trial_id AND s2.key = 'specs' "
            "WHERE s.study_name = ?",
            (study,),
        ).fetchall()
    finally:
        con.close()
    return [
        (json.loads(v) if v else "", state)
        for state, v, specs in rows
        if spec is None or spec in json.loads(specs or "[]")
    ]


def sweep_trial_states(runs: Path, spec: str) -> list[tuple[str, str]]:
    """(digest, state) of the optuna trials of the points of spec ``spec``."""
    return trial_states(runs, profile_store(), spec)


def unfinished_trials(runs: Path, spec: str) -> list[str]:
    """Digests of the sweep's optuna trials left RUNNING or WAITING (a claim nobody released)."""
    return [d for d, s in sweep_trial_states(runs, spec) if s in ("RUNNING", "WAITING")]


# ---------------------------------------------------------------------- run folders


def outcome(folder: Path) -> dict | None:
    """What a finished run folder says: metrics without timings, and the weights' digest (None
    if it has no readable ``result.json``)."""
    try:
        raw = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return None
    weights = folder / "checkpoint" / "modules.safetensors"
    return {
        "metrics": {k: v for k, v in raw["metrics"].items() if not is_timing_metric(k)},
        "weights": sha256_file(weights) if weights.is_file() else None,
    }


def sweep_outcomes(runs: Path, plans: list) -> dict[str, dict | None]:
    """Each planned point's outcome, by point label."""
    from bench.sweep.folders import run_dir

    return {p.point.label(): outcome(run_dir(runs, p.run_id)) for p in plans}


def outcome_differences(got: dict[str, dict | None], want: dict[str, dict]) -> list[str]:
    """Labels whose outcome differs from ``want`` (missing, other metrics or weights)."""
    wrong = []
    for label, ref in want.items():
        mine = got.get(label)
        if mine is None:
            wrong.append(f"{label}: no result")
        elif mine["weights"] != ref["weights"]:
            wrong.append(f"{label}: other module weights")
        elif mine["metrics"] != ref["metrics"]:
            diff = sorted(k for k in ref["metrics"] if mine["metrics"].get(k) != ref["metrics"][k])
            wrong.append(f"{label}: other metrics ({', '.join(diff[:3])})")
    return wrong


def folder_state(folder: Path) -> str:
    """What a run folder holds, for the notes: ``nothing``, ``state``, ``checkpoint``, ..."""
    parts = [
        name
        for name, path in [
            ("config", folder / "config.json"),
            ("state", folder / "state" / "train_state.pt"),
            ("checkpoint", folder / "checkpoint" / "ituning.json"),
            ("predictions", folder / "predictions_test.json"),
            ("result", folder / "result.json"),
        ]
        if path.exists()
    ]
    return "+".join(parts) or "nothing"


def point_folder_state(runs: Path, run_id: str) -> str:
    """:func:`folder_state` of the run folder of point ``run_id`` in ``runs``."""
    from bench.sweep.folders import run_dir

    return folder_state(run_dir(runs, run_id))


# ---------------------------------------------------------------------- before and after a rerun


def snapshot(runs: Path, plans: list, spec: str) -> dict:
    """Per point: its ``result.json`` (bytes and mtime), its MLflow runs and the FINISHED ones;
    and ``running``, how many of the sweep's MLflow runs are RUNNING. Two snapshots, before and
    after a rerun, show what the rerun touched."""
    from bench.sweep.folders import run_dir

    mlruns = sweep_mlflow_runs(runs, spec)
    out: dict[str, Any] = {"running": sum(r.status == "RUNNING" for r in mlruns)}
    for plan in plans:
        result = run_dir(runs, plan.run_id) / "result.json"
        mine = runs_of_point(mlruns, plan.run_id)
        out[plan.run_id] = {
            "result": (result.read_bytes(), result.stat().st_mtime_ns)
            if result.is_file()
            else None,
            "runs": {r.run_id: r.status for r in mine},
            "finished": sorted(r.run_id for r in mine if r.status == "FINISHED"),
        }
    return out


def finished_points(shot: dict, plans: list) -> int:
    """How many points of ``plans`` have a FINISHED MLflow run in the snapshot."""
    return sum(1 for p in plans if shot[p.run_id]["finished"])


def finished_runs(shot: dict, run_id: str) -> list[str]:
    """The FINISHED MLflow runs of point ``run_id`` in the snapshot."""
    return shot[run_id]["finished"]


def run_statuses(shot: dict, run_id: str) -> dict[str, str]:
    """MLflow run id -> status, for the runs of point ``run_id`` in the snapshot."""
    return shot[run_id]["runs"]


def running_runs(shot: dict) -> int:
    """How many of the sweep's MLflow runs the snapshot found RUNNING."""
    return shot["running"]


def result_rewritten(before: dict, after: dict, run_id: str) -> bool:
    """The point's ``result.json`` changed or disappeared between the snapshots."""
    return after[run_id]["result"] != before[run_id]["result"]


def lost_points(before: dict, after: dict, plans: list) -> int:
    """Finished points the rerun lost: a ``result.json`` that existed and was rewritten or
    removed, or a FINISHED MLflow run replaced, or the point run again."""
    lost = 0
    for plan in plans:
        b, a = before[plan.run_id], after[plan.run_id]
        if b["result"] is not None and a["result"] != b["result"]:
            lost += 1  # a finished folder was rewritten: rerun or lost
            continue
        if b["finished"] and (a["finished"] != b["finished"] or len(a["runs"]) != len(b["runs"])):
            lost += 1  # a FINISHED MLflow run was replaced, or the point ran again
    return lost
