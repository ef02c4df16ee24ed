"""Fault injection, for real: ``python -m bench.faults [--quick] [--trials N] [--out FILE]``.

A reproduction harness is trusted only if an interrupted, misconfigured or crowded run never
produces a wrong or missing result. Each row below is exercised on the tiny scale of the ``mini``
profile (quick backbones, a 48-image Shapes world) with the real command-line programs run as
subprocesses, so that a SIGKILL is a SIGKILL and an exit code is an exit code:

R1 malformed inputs (specs, flags, dataset files): exit 2, one ``error:`` line naming file and
   field, no traceback, nothing written (the runs folder is never created).
R2 SIGKILL of a sweep at named points (feature caching, training, checkpoint writing, evaluation,
   MLflow logging, between MLflow and the queue) and at random moments, then a rerun: the sweep
   completes, one FINISHED MLflow run per point, none RUNNING, finished points never rerun, results
   equal to an uninterrupted sweep.
R3 SIGKILL of ``python -m ituning.train`` then the same command again: module weights (bytes) and
   metrics equal to an uninterrupted run.
R4 a NaN loss in one point: that MLflow run FAILED with the reason, the others finish, exit 1 with
   the failure listed; a rerun finishes the point without rerunning the others.
R5 missing or corrupt artefacts: a clear one-line error naming the artefact and the fix, or a
   rebuild whose results equal the reference; never a silent wrong result.
R6 tracking server or optuna storage unreachable/locked: exit 2 with the URL before anything trains.
R7 three sweeps started at once on a fresh runs folder: every point trained exactly once.
R8 untrusted files (YAML tags, code-running pickles, path traversal): refused, nothing executed,
   nothing opened outside the data root; the MLflow UI session binds to loopback.

``--quick`` runs one trial per required case (about a third of the time), ``--trials N`` sets the
random-moment kills of R2 and R3 and the repeats of R7, ``--rows R2,R5`` picks rows, ``--keep DIR``
keeps the scratch folders (runs folders, logs) for a look after a failure.

Kills at exact moments use the library's pause points (``ituning.faultpoints``): the process
pauses there, announces it in a marker file, and is then killed from here with SIGKILL (its whole
process group: the METEOR JVM dies with it). "Lost results" counts finished points whose
``result.json`` changed or disappeared, or whose FINISHED MLflow run was replaced or duplicated.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ituning.errors import ArgumentParser, cli_main
from ituning.faultpoints import MARKER_ENV, PAUSE_ENV

ROOT = Path(__file__).resolve().parent.parent
SPECS_DIR = ROOT / "sweeps"
TIMING = frozenset({"train_time_s", "train_captions_per_s", "wall_time_s"})
SMOKE_EXPERIMENT = "smoke-tiny"
KILL_TIMEOUT_S = 300.0

ROWS = {
    "R1": (
        "malformed specs, CLI flags, dataset files",
        "exit 2, one error line naming file and field, no traceback, nothing written",
        "test_spec.py, test_data_loaders.py, test_train_cli.py, test_faults.py",
    ),
    "R2": (
        "SIGKILL of a sweep (5+ named points, random moments)",
        "rerun completes; 1 FINISHED MLflow run per point; none RUNNING; finished never rerun",
        "test_sweep.py (mid-training kill), test_faults.py (kill during MLflow logging)",
    ),
    "R3": (
        "SIGKILL of a training run, then resume",
        "module weights and metrics equal to an uninterrupted run",
        "test_training.py (exceptions), test_faults.py (SIGKILL mid state write)",
    ),
    "R4": (
        "non-finite loss in one point",
        "that run FAILED with the reason; others finish; exit 1 listing it",
        "test_training.py (library), test_faults.py (through the sweep)",
    ),
    "R5": (
        "missing/corrupt backbones, data root, image, feature shard, checkpoint",
        "clear error naming artefact and fix, or a rebuild equal to the reference",
        "test_features.py, test_checkpoint.py, test_training.py, test_faults.py",
    ),
    "R6": (
        "tracking server / optuna storage unreachable or locked",
        "exit 2 with the URL, before any training",
        "test_tracking.py, test_faults.py",
    ),
    "R7": (
        "3 sweeps on one study started at once",
        "each point trained exactly once; no store-creation race",
        "test_sweep.py (claims), test_faults.py (store creation)",
    ),
    "R8": (
        "untrusted files: YAML tags, pickles, path traversal; UI binding",
        "refused; nothing executed or opened outside the data root; UI on loopback",
        "test_spec.py, test_data_loaders.py, test_faults.py",
    ),
}


class TrialFailed(Exception):
    """A check of a trial did not hold."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise TrialFailed(message)


def error_line(proc: Proc, *names: str) -> str:
    """Exit 2, no traceback, exactly one ``error:`` line on stderr naming ``names`` (progress
    bars of the work done before the failure may precede it)."""
    lines = [line for line in proc.err.splitlines() if line.startswith("error: ")]
    expect(proc.rc == 2, f"exit {proc.rc}: {proc.tail()}")
    expect("Traceback" not in proc.text, f"traceback: {proc.tail()}")
    expect(len(lines) == 1, f"{len(lines)} error lines: {proc.tail()}")
    missing = [n for n in names if n not in lines[0]]
    expect(not missing, f"error line lacks {missing}: {lines[0]}")
    return lines[0]


@dataclass
class Trial:
    name: str
    lost: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class RowResult:
    id: str
    trials: int = 0
    passed: int = 0
    lost: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fault(self) -> str:
        return ROWS[self.id][0]

    @property
    def holds(self) -> str:
        return ROWS[self.id][1]


@dataclass
class Proc:
    rc: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err

    def tail(self, n: int = 600) -> str:
        return _one_line(self.text[-n:])


@dataclass
class MlRun:
    run_id: str
    status: str
    tags: dict[str, str]


@dataclass
class Killed:
    killed: bool
    where: str
    seconds: float


# ---------------------------------------------------------------------- the paper data root


def write_paper_root(root: Path, *, vlp: bool = True) -> Path:
    """A minimal valid ``--data-root`` for the paper profile: COCO Karpathy file, NoCaps, Visual
    Genome, each with a few real PNG files; the fault scenarios then damage one field."""
    from PIL import Image

    def png(path: Path, colour: tuple[int, int, int]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), colour).save(path)

    images = []
    for i, split in enumerate(["train", "train", "restval", "val", "test"]):
        folder = "train2014" if split in ("train", "restval") else "val2014"
        name = f"COCO_{folder}_{i:012d}.jpg"
        png(root / "coco" / "images" / folder / name, (10 * i, 20, 30))
        sentences = [{"raw": f"a picture number {i} of a thing", "tokens": [], "imgid": i}]
        images.append(
            {
                "filepath": folder,
                "filename": name,
                "imgid": i,
                "cocoid": 100 + i,
                "split": split,
                "sentids": [i],
                "sentences": sentences,
            }
        )
    _write_json(root / "coco" / "dataset_coco.json", {"dataset": "coco", "images": images})
    nocaps_images, annotations = [], []
    for i, domain in enumerate(["in-domain", "near-domain", "out-of-domain"]):
        png(root / "nocaps" / "images" / f"{i:04d}.jpg", (30, 10 * i, 30))
        nocaps_images.append({"id": i, "file_name": f"{i:04d}.jpg", "domain": domain})
        annotations.append({"image_id": i, "id": i, "caption": f"a {domain} thing"})
    _write_json(
        root / "nocaps" / "nocaps_val_4500_captions.json",
        {"images": nocaps_images, "annotations": annotations},
    )
    if vlp:
        vg = root / "visual_genome"
        data, regions = [], []
        for i in range(1, 3):
            png(vg / "VG_100K" / f"{i}.jpg", (5, 5, 10 * i))
            data.append({"image_id": i, "url": f"https://x/VG_100K/{i}.jpg", "coco_id": None})
            region = {"region_id": i, "image_id": i, "phrase": "a thing", "x": 0, "y": 0}
            regions.append({"id": i, "regions": [{**region, "width": 4, "height": 4}]})
        _write_json(vg / "image_data.json", data)
        _write_json(vg / "region_descriptions.json", regions)
    return root


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))


def _edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    """Rewrite a JSON file after ``edit`` changed its parsed data in place."""
    data = json.loads(path.read_text())
    edit(data)
    _write_json(path, data)


# ---------------------------------------------------------------------- R1 cases


@dataclass(frozen=True)
class BadInput:
    """One malformed input: how to make it, the command, and what the error line must name."""

    name: str
    kind: str  # "spec" (text), "flags" (extra argv), "data" (paper root edit), "train"
    payload: Any
    expect: tuple[str, ...]
    argv: tuple[str, ...] = ()


OK_SPEC = "name: t\naxes: {lm: [base]}\n"
BAD_SPECS = [
    ("bad YAML", "name: [t\n", ("line 2", "not valid YAML")),
    ("tab indentation", "name: t\naxes:\n\tlm: [base]\n", ("line 3", "not valid YAML")),
    ("duplicate key", "name: t\nname: u\naxes: {lm: [base]}\n", ("line 2", "duplicate key 'name'")),
    ("not a mapping", "- 1\n", ("expected a mapping",)),
    ("empty file", "", ("expected a mapping",)),
    ("not UTF-8", b"name: t\xff\naxes: {lm: [base]}\n", ("not UTF-8",)),
    ("unknown key", OK_SPEC + "axis: {}\n", ("axis: unknown key",)),
    ("unknown axis", "name: t\naxes: {depth: [1]}\n", ("axes.depth: unknown key",)),
    ("unknown base key", "name: t\nbase: {size: 1}\naxes: {lm: [base]}\n", ("base.size",)),
    ("missing name", "axes: {lm: [base]}\n", ("name: expected a name",)),
    ("seed type", "name: t\naxes: {seed: [zero]}\n", ("axes.seed[0]", "integer")),
    ("vlp type", "name: t\naxes: {vlp: [maybe]}\n", ("axes.vlp[0]", "true or false")),
    ("lambda type", "name: t\naxes: {lambda: [big]}\n", ("axes.lambda[0]", "positive number")),
    ("lambda < 1", "name: t\naxes: {lambda: [0.5]}\n", ("axes.lambda[0]", "lambda >= 1")),
    ("lambda < 0", "name: t\naxes: {lambda: [-1]}\n", ("axes.lambda[0]", "positive number")),
    ("lambda NaN", "name: t\naxes: {lambda: [.nan]}\n", ("axes.lambda[0]", "positive number")),
    ("bottleneck 0", "name: t\naxes: {bottleneck: [0]}\n", ("axes.bottleneck[0]",)),
    ("bottleneck 64", "name: t\naxes: {bottleneck: [64]}\n", ("axes.bottleneck[0]", "width: 64")),
    ("bottleneck width 0", "name: t\naxes: {bottleneck: [{width: 0}]}\n", ("bottleneck[0].width",)),
    ("drop 1.0", "name: t\naxes: {drop: [1.0]}\n", ("axes.drop[0]", "[0, 1)")),
    ("drop -2 layers", "name: t\naxes: {drop: [{layers: -2}]}\n", ("axes.drop[0].layers",)),
    (
        "drop every layer",
        "name: t\naxes: {lm: [large]}\nbase: {drop: {layers: 3}}\n",
        ("point [large", "drop: {'layers': 3}", "every module"),
    ),
    ("empty axis", "name: t\naxes: {seed: []}\n", ("axes.seed", "empty axis")),
    ("no axes", "name: t\naxes: {}\n", ("axes: expected a mapping",)),
    ("exclude all", OK_SPEC + "exclude: [{lm: base}]\n", ("exclude", "remove every point")),
    ("override unknown", OK_SPEC + "overrides: {epoch: 3}\n", ("overrides.epoch",)),
    ("override type", OK_SPEC + "overrides: {epochs: many}\n", ("overrides.epochs", "integer")),
    ("override range", OK_SPEC + "overrides: {eval.beam: 0}\n", ("overrides.eval.beam",)),
    ("override axis", OK_SPEC + "overrides: {itune.scale: 2}\n", ("overrides.itune.scale",)),
]
BAD_FLAGS = [
    ("--workers x", ("--workers", "x"), ("--workers", "invalid int")),
    ("--workers -1", ("--workers", "-1"), ("--workers must be >= 0",)),
    ("--profile huge", ("--profile", "huge"), ("--profile", "huge")),
    ("--scale big", ("--scale", "big"), ("--scale", "big")),
    ("unknown flag", ("--bogus",), ("unrecognized arguments: --bogus",)),
    ("--heartbeat abc", ("--heartbeat", "abc"), ("--heartbeat", "abc")),
    ("paper without data root", ("--profile", "paper"), ("--data-root",)),
    ("file tracking URI", ("--tracking-uri", "file:./mlruns"), ("file:./mlruns", "file store")),
    ("bad storage URL", ("--storage", "bogus://x/y"), ("bogus://x/y",)),
]


def _data_edits() -> list[tuple[str, Callable[[Path], None], tuple[str, ...], bool]]:
    """(name, damage the paper root, what the error must name, needs a VLP spec)."""

    def coco(edit):
        return lambda root: _edit_json(root / "coco" / "dataset_coco.json", edit)

    def nocaps(edit):
        return lambda root: _edit_json(root / "nocaps" / "nocaps_val_4500_captions.json", edit)

    def regions(edit):
        return lambda root: _edit_json(root / "visual_genome" / "region_descriptions.json", edit)

    def malformed(root: Path) -> None:
        (root / "coco" / "dataset_coco.json").write_text('{"dataset": "coco", "images": [')

    def no_image(root: Path) -> None:
        (root / "coco" / "images" / "val2014" / f"COCO_val2014_{3:012d}.jpg").unlink()

    return [
        ("COCO JSON malformed", malformed, ("dataset_coco.json", "malformed JSON"), False),
        ("COCO images missing", coco(lambda d: d.pop("images")), ("dataset_coco.json", "images: missing"), False),
        ("COCO sentences missing", coco(lambda d: d["images"][1].pop("sentences")), ("dataset_coco.json", "images[1].sentences: missing"), False),
        ("COCO raw missing", coco(lambda d: d["images"][2]["sentences"][0].pop("raw")), ("images[2].sentences[0].raw: missing",), False),
        ("COCO split type", coco(lambda d: d["images"][0].update(split=3)), ("images[0].split", "expected str"), False),
        ("COCO unknown split", coco(lambda d: d["images"][0].update(split="dev")), ("images[0].split", "'dev'"), False),
        ("COCO filename missing", coco(lambda d: d["images"][3].pop("filename")), ("images[3].filename: missing",), False),
        ("COCO cocoid type", coco(lambda d: d["images"][0].update(cocoid="x")), ("images[0].cocoid", "expected int"), False),
        ("COCO image file absent", no_image, ("dataset_coco.json: images[3].filename", "image not found"), False),
        ("NoCaps domain missing", nocaps(lambda d: d["images"][0].pop("domain")), ("nocaps_val_4500_captions.json", "images[0].domain: missing"), False),
        ("NoCaps unknown domain", nocaps(lambda d: d["images"][1].update(domain="x")), ("images[1].domain", "unknown domain"), False),
        ("NoCaps caption missing", nocaps(lambda d: d["annotations"][0].pop("caption")), ("annotations[0].caption: missing",), False),
        ("VG phrase missing", regions(lambda d: d[0]["regions"][0].pop("phrase")), ("region_descriptions.json", "[0].regions[0].phrase: missing"), True),
    ]  # fmt: skip


# ---------------------------------------------------------------------- the suite


class Suite:
    """Processes, scratch runs folders and the reference results shared by the rows."""

    def __init__(self, work: Path, *, quick: bool, trials: int, seed: int, log: Callable):
        self.work = work
        self.quick = quick
        self.n = trials
        self.rng = random.Random(seed)
        self.log = log
        self._template: Path | None = None
        self._empty_store: Path | None = None
        self._reference: dict[str, dict] | None = None
        self._reference_s = 0.0
        self._train_refs: dict[bool, dict] = {}
        self._train_ref_s: dict[bool, float] = {}
        self._counter = 0

    # ------------------------------------------------------------------ processes

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in (PAUSE_ENV, MARKER_ENV)}
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env["PYTHONHASHSEED"] = "0"
        env.pop("ITUNING_INJECT_NONFINITE_AT_STEP", None)
        return {**env, **(extra or {})}

    def run(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 900,
    ) -> Proc:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd or self.work,
            env=self.env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise TrialFailed(f"{' '.join(args[:3])} ran over {timeout:.0f} s") from None
        return Proc(proc.returncode, out, err, time.perf_counter() - started)

    def kill_at(
        self,
        args: Sequence[str],
        *,
        point: str | None = None,
        delay: float | None = None,
        after: Callable[[], bool] | None = None,
        env: dict[str, str] | None = None,
        log: Path,
    ) -> Killed:
        """Start ``args``; SIGKILL its process group once it pauses at ``point``, or ``delay``
        seconds after ``after()`` first holds (the work started; machine load then shifts the
        moment less than the start-up does). ``killed`` is False if it exited first."""
        marker = self.scratch("marker")
        extra = dict(env or {})
        if point:
            extra.update({PAUSE_ENV: point, MARKER_ENV: str(marker)})
        started = time.monotonic()
        clock = None if after is not None else started
        with open(log, "w") as handle:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=self.work,
                env=self.env(extra),
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            while True:
                if point and marker.exists():
                    where = marker.read_text().split()[0]
                    break
                if clock is None and after is not None and after():
                    clock = time.monotonic()
                if delay is not None and clock is not None and time.monotonic() - clock >= delay:
                    where = f"{delay:.1f} s into the work"
                    break
                if proc.poll() is not None:
                    return Killed(False, f"exited ({proc.returncode})", time.monotonic() - started)
                if time.monotonic() - started > KILL_TIMEOUT_S:
                    raise TrialFailed(f"never reached {point or delay} ({_tail(log)})")
                time.sleep(0.02)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        return Killed(True, where, time.monotonic() - started)

    def timed(self, args: Sequence[str], *, log: Path, after: Callable[[], bool]) -> float:
        """Run ``args`` to the end; the seconds from ``after()`` first holding to its exit."""
        with open(log, "w") as handle:
            proc = subprocess.Popen(
                [sys.executable, *args], cwd=self.work, env=self.env(), stdout=handle,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        clock = None
        while proc.poll() is None:
            if clock is None and after():
                clock = time.monotonic()
            time.sleep(0.02)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:3])} failed: {_tail(log)}")
        return time.monotonic() - (clock or time.monotonic())

    def scratch(self, name: str) -> Path:
        """A new path under the work folder (never one a kept earlier run left there)."""
        while True:
            self._counter += 1
            path = self.work / f"{name}-{self._counter:03d}"
            if not path.exists():
                return path

    # ------------------------------------------------------------------ runs folders

    def template(self) -> Path:
        """Tiny mini assets (quick backbones, Shapes world), built once for the suite."""
        if self._template is None:
            from bench.sweep.profiles import get_profile

            path = self.work / "template"
            self.log("  building the tiny mini backbones and Shapes world (once)")
            get_profile("mini", runs_dir=path, scale="tiny").prepare(progress=False)
            self._template = path
        return self._template

    def empty_store(self) -> Path:
        """An MLflow SQLite store with its tables created (migrations take seconds)."""
        if self._empty_store is None:
            from mlflow import MlflowClient

            logging.getLogger("mlflow").setLevel(logging.WARNING)  # after mlflow set its own
            path = self.scratch("store-template") / "mlflow.db"
            path.parent.mkdir(parents=True)
            MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)
            self._empty_store = path
        return self._empty_store

    def runs_dir(self, name: str, *, own: Sequence[str] = (), store: bool = True) -> Path:
        """A fresh runs folder sharing the template's assets (``own`` ones are copied)."""
        runs = self.scratch(name)
        runs.mkdir(parents=True)
        for sub in ("backbones", "data"):
            if sub in own:
                shutil.copytree(self.template() / sub, runs / sub)
            else:
                (runs / sub).symlink_to(self.template() / sub)
        if store:
            shutil.copy(self.empty_store(), runs / "mlflow.db")
        return runs

    @staticmethod
    def sweep_args(spec: Path | str, runs: Path, *extra: str) -> list[str]:
        """One worker unless ``extra`` says otherwise: pause points count per process, so
        "the 3rd evaluated split" means one sequence of events (R7 runs several workers)."""
        workers = [] if "--workers" in extra else ["--workers", "1"]
        return ["-m", "bench.sweep", str(spec), "--scale", "tiny", "--runs-dir", str(runs),
                "--quiet", *workers, *extra]  # fmt: skip

    def spec_file(self, name: str, text: str) -> Path:
        path = self.scratch("spec") / f"{name}.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(text)
        return path

    # ------------------------------------------------------------------ reading results

    @staticmethod
    def plans(runs: Path, spec: Path) -> list:
        from bench.sweep.profiles import get_profile
        from bench.sweep.spec import load_spec

        return get_profile("mini", runs_dir=runs, scale="tiny").plan(load_spec(spec))

    @staticmethod
    def outcome(folder: Path) -> dict | None:
        """What a finished run folder says: metrics without timings, and the weights' digest."""
        try:
            raw = json.loads((folder / "result.json").read_text())
        except (OSError, ValueError):
            return None
        weights = folder / "checkpoint" / "modules.safetensors"
        return {
            "metrics": {k: v for k, v in raw["metrics"].items() if k not in TIMING},
            "weights": _sha256(weights) if weights.is_file() else None,
        }

    def results(self, runs: Path, spec: Path) -> dict[str, dict | None]:
        from bench.sweep.folders import run_dir

        return {
            p.point.label(): self.outcome(run_dir(runs, p.run_id)) for p in self.plans(runs, spec)
        }

    def reference(self) -> dict[str, dict]:
        """The ``smoke`` sweep, uninterrupted: what every interrupted sweep must end with."""
        if self._reference is None:
            runs = self.runs_dir("reference")
            log = runs / "sweep.log"
            self._reference_s = self.timed(
                self.sweep_args(SPECS_DIR / "smoke.yaml", runs), log=log, after=_started(log)
            )
            self._reference = self.results(runs, SPECS_DIR / "smoke.yaml")  # type: ignore[assignment]
        return self._reference  # type: ignore[return-value]

    def compare(self, got: dict[str, dict | None], want: dict[str, dict]) -> list[str]:
        """Labels whose result differs from the reference (missing, other metrics or weights)."""
        wrong = []
        for label, ref in want.items():
            mine = got.get(label)
            if mine is None:
                wrong.append(f"{label}: no result")
            elif mine["weights"] != ref["weights"]:
                wrong.append(f"{label}: other module weights")
            elif mine["metrics"] != ref["metrics"]:
                diff = sorted(
                    k for k in ref["metrics"] if mine["metrics"].get(k) != ref["metrics"][k]
                )
                wrong.append(f"{label}: other metrics ({', '.join(diff[:3])})")
        return wrong

    @staticmethod
    def mlflow_runs(runs: Path, experiment: str) -> list[MlRun]:
        """The runs of ``experiment`` in ``runs/mlflow.db``, read with SQLite directly: a fresh
        connection per look, no client-side caching between the looks before and after a rerun
        (tables ``experiments``, ``runs``, ``tags`` of MLflow's SQL schema)."""
        db = runs / "mlflow.db"
        if not db.exists():
            return []
        con = sqlite3.connect(db, timeout=60)
        try:
            rows = con.execute(
                "SELECT r.run_uuid, r.status, t.key, t.value FROM runs r "
                "JOIN experiments e ON e.experiment_id = r.experiment_id "
                "LEFT JOIN tags t ON t.run_uuid = r.run_uuid "
                "AND t.key IN ('config_hash', 'failure_reason', 'reused_result', 'resumed') "
                "WHERE e.name = ? AND r.lifecycle_stage = 'active'",
                (experiment,),
            ).fetchall()
        finally:
            con.close()
        found: dict[str, MlRun] = {}
        for run_id, status, key, value in rows:
            run = found.setdefault(run_id, MlRun(run_id, status, {}))
            if key is not None:
                run.tags[key] = value
        return list(found.values())

    @staticmethod
    def trial_states(runs: Path, study: str) -> list[tuple[str, str]]:
        """(digest, state) of every optuna trial of ``study`` (read-only; [] if none)."""
        db = runs / "optuna.db"
        if not db.exists():
            return []
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT t.state, a.value_json FROM trials t JOIN studies s USING (study_id) "
                "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = 'digest' "
                "WHERE s.study_name = ?",
                (study,),
            ).fetchall()
        finally:
            con.close()
        return [(json.loads(v) if v else "", state) for state, v in rows]

    def snapshot(self, runs: Path, plans: list, experiment: str) -> dict:
        from bench.sweep.folders import run_dir

        mlruns = self.mlflow_runs(runs, experiment)
        out: dict[str, Any] = {"running": sum(r.status == "RUNNING" for r in mlruns)}
        for plan in plans:
            folder = run_dir(runs, plan.run_id)
            result = folder / "result.json"
            mine = [r for r in mlruns if r.tags.get("config_hash") == plan.run_id]
            out[plan.run_id] = {
                "result": (result.read_bytes(), result.stat().st_mtime_ns)
                if result.is_file()
                else None,
                "runs": {r.run_id: r.status for r in mine},
                "finished": sorted(r.run_id for r in mine if r.status == "FINISHED"),
            }
        return out

    def check_recovered(
        self, t: Trial, runs: Path, spec: Path, plans: list, before: dict, rerun: Proc, study: str
    ) -> None:
        """R2's contract after a kill and a rerun (lost results are counted on ``t``)."""
        after = self.snapshot(runs, plans, study_experiment(study))
        lost = 0
        for plan in plans:
            b, a = before[plan.run_id], after[plan.run_id]
            if b["result"] is not None and a["result"] != b["result"]:
                lost += 1  # a finished folder was rewritten: rerun or lost
                continue
            if b["finished"] and (
                a["finished"] != b["finished"] or len(a["runs"]) != len(b["runs"])
            ):
                lost += 1  # a FINISHED MLflow run was replaced, or the point ran again
        t.lost += lost
        expect(rerun.rc == 0, f"rerun exited {rerun.rc}: {rerun.tail()}")
        for plan in plans:
            b, a = before[plan.run_id], after[plan.run_id]
            n = len(a["finished"])
            expect(
                n == 1,
                f"{plan.point.label()}: {n} FINISHED MLflow runs (runs before the rerun "
                f"{b['runs']}, after {a['runs']})",
            )
        expect(after["running"] == 0, f"{after['running']} MLflow runs left RUNNING")
        states = self.trial_states(runs, study)
        stuck = [d for d, s in states if s in ("RUNNING", "WAITING")]
        expect(not stuck, f"optuna trials left running/waiting: {stuck}")
        expect(lost == 0, f"{lost} finished points lost or rerun")

    # ------------------------------------------------------------------ training runs (R3, R5, R8)

    def train_config(self, *, vlp: bool, features: Path) -> Path:
        """The tiny profile's base point as a TrainConfig file, with its own feature cache."""
        from bench.sweep.profiles import get_profile
        from bench.sweep.spec import Point

        plan = get_profile("mini", runs_dir=self.template(), scale="tiny").resolve(
            Point(vlp=vlp), {}
        )
        raw = plan.config.model_dump(mode="json")
        raw["feature_cache"] = str(features)
        path = self.scratch("config") / "config.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(raw, indent=1))
        return path

    @staticmethod
    def train_args(config: Path, out: Path) -> list[str]:
        return ["-m", "ituning.train", "--config", str(config), "--out", str(out)]

    def train_reference(self, vlp: bool) -> dict:
        if vlp not in self._train_refs:
            base = self.scratch("train-reference")
            base.mkdir()
            config = self.train_config(vlp=vlp, features=base / "features")
            self._train_ref_s[vlp] = self.timed(
                self.train_args(config, base / "run"),
                log=base / "train.log",
                after=(base / "run" / "config.json").exists,
            )
            self._train_refs[vlp] = {"result": self.outcome(base / "run"), "dir": base}
        return self._train_refs[vlp]


def _started(log: Path) -> Callable[[], bool]:
    """A sweep's work started: its log names the first point's run folder."""
    return lambda: log.exists() and "running in" in log.read_text(errors="replace")


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


def study_experiment(study: str) -> str:
    """``smoke@mini-tiny`` -> MLflow experiment ``smoke-tiny`` (see bench.sweep)."""
    name, _, rest = study.partition("@")
    scale = rest.split("-", 1)[1] if "-" in rest else ""
    return f"{name}-{scale}" if scale else name


# ---------------------------------------------------------------------- R1


def row_r1(s: Suite, row: RowResult) -> None:
    runs = s.work / "r1-runs"  # must never come into existence
    cwd = s.scratch("r1-cwd")
    cwd.mkdir()

    def check(t: Trial, proc: Proc, names: Sequence[str], extra_dirs: Sequence[Path] = ()) -> None:
        lines = [line for line in proc.err.splitlines() if line.strip()]
        expect(proc.rc == 2, f"exit {proc.rc}: {proc.tail()}")
        expect("Traceback" not in proc.text, f"traceback: {proc.tail()}")
        expect(len(lines) == 1 and lines[0].startswith("error: "), f"stderr: {proc.tail()}")
        missing = [n for n in names if n not in lines[0]]
        expect(not missing, f"error line lacks {missing}: {lines[0]}")
        expect(not runs.exists(), "the runs folder was created")
        for folder in extra_dirs:
            expect(not folder.exists(), f"{folder.name} was created")
        expect(not any(cwd.iterdir()), f"wrote into the working folder: {list(cwd.iterdir())}")

    for name, text, names in BAD_SPECS:
        spec = s.scratch("r1-spec") / "bad.yaml"
        spec.parent.mkdir()
        spec.write_bytes(text if isinstance(text, bytes) else text.encode())

        def spec_case(t: Trial, spec=spec, names=names) -> None:
            proc = s.run(s.sweep_args(spec, runs), cwd=cwd)
            check(t, proc, ("bad.yaml", *names))

        _trial(row, f"spec: {name}", spec_case)

    def missing_spec(t: Trial) -> None:
        check(t, s.run(s.sweep_args(cwd.parent / "nope.yaml", runs), cwd=cwd), ("nope.yaml",))

    def unknown_name(t: Trial) -> None:
        proc = s.run(s.sweep_args("tabel1", runs), cwd=cwd)
        check(t, proc, ("tabel1", "no such sweep spec", "table1"))

    def directory(t: Trial) -> None:
        check(t, s.run(s.sweep_args(SPECS_DIR, runs), cwd=cwd), ("sweeps", "cannot read"))

    _trial(row, "spec: file not found", missing_spec)
    _trial(row, "spec: unknown spec name", unknown_name)
    _trial(row, "spec: a directory", directory)

    for name, argv, names in BAD_FLAGS:

        def flag_case(t: Trial, argv=argv, names=names) -> None:
            proc = s.run(s.sweep_args("smoke", runs, *argv), cwd=cwd)
            check(t, proc, names)

        _trial(row, f"flag: {name}", flag_case)

    clean = s.scratch("r1-paper")
    write_paper_root(clean)
    vlp_spec = s.spec_file("vlp", "name: v\naxes: {vlp: [true]}\n")
    for name, damage, names, vlp in _data_edits():

        def data_case(t: Trial, damage=damage, names=names, vlp=vlp) -> None:
            root = s.scratch("r1-data")
            shutil.copytree(clean, root)
            damage(root)
            spec = vlp_spec if vlp else "smoke"
            proc = s.run(
                s.sweep_args(spec, runs, "--profile", "paper", "--data-root", str(root)), cwd=cwd
            )
            check(t, proc, names)

        _trial(row, f"data: {name}", data_case)

    # The training command: configuration and dataset errors, before its run folder exists.
    def train_case(t: Trial, text: str | bytes, names: Sequence[str], argv: Sequence[str] = ()):
        config = s.scratch("r1-train") / "config.yaml"
        config.parent.mkdir()
        config.write_bytes(text if isinstance(text, bytes) else text.encode())
        out = config.parent / "out"
        args = ["-m", "ituning.train", "--config", str(config), "--out", str(out), *argv]
        check(t, s.run(args, cwd=cwd), names, extra_dirs=[out])

    good = {"data": {"captions": str(clean / "coco" / "dataset_coco.json"),
                     "image_root": str(clean / "coco" / "images")}}  # fmt: skip
    bad_data = s.scratch("r1-train-data")
    shutil.copytree(clean, bad_data)
    _edit_json(bad_data / "coco" / "dataset_coco.json", lambda d: d["images"][1].pop("split"))
    train_cases = [
        ("config: wrong type", json.dumps({**good, "epochs": "many"}), ("config.yaml", "epochs")),
        ("config: unknown key", json.dumps({**good, "epoch": 3}), ("config.yaml", "epoch")),
        ("config: not UTF-8", b"epochs: \xff\n", ("config.yaml", "not UTF-8")),
        ("flag: --set without =", json.dumps(good), ("--set", "KEY=VALUE"), ("--set", "epochs")),
        ("flag: --set bad value", json.dumps(good), ("epochs",), ("--set", "epochs=-1")),
        (
            "data: via the training command",
            json.dumps(
                {
                    "data": {
                        "captions": str(bad_data / "coco" / "dataset_coco.json"),
                        "image_root": str(bad_data / "coco" / "images"),
                    },
                    "backbones": {"lm": str(s.work / "no-lm")},
                }
            ),
            ("dataset_coco.json", "images[1].split: missing"),
        ),
    ]
    for name, text, names, *argv in train_cases:
        _trial(row, name, lambda t, a=text, b=names, c=argv: train_case(t, a, b, *c))
    row.notes.append(
        f"{row.trials} inputs: {len(BAD_SPECS) + 3} specs, {len(BAD_FLAGS) + 2} flags, "
        f"{len(_data_edits()) + 1} dataset files, {len(train_cases) - 3} training configs; "
        "checked: exit 2, one `error:` line naming file and field, no traceback, no runs folder"
    )


# ---------------------------------------------------------------------- R2


def row_r2(s: Suite, row: RowResult) -> None:
    s.reference()
    rng = s.rng
    named = [
        ("feature caching", f"features.shard@{rng.randint(1, 3)}"),
        ("training", f"train.step@{rng.randint(1, 8)}"),
        ("training-state writing", f"state.save@{rng.randint(1, 4)}"),
        ("evaluation", f"evaluate.split@{rng.randint(1, 4)}"),
        ("MLflow logging", f"mlflow.log_result@{rng.randint(1, 2)}"),
    ]
    if not s.quick:
        named += [
            ("checkpoint writing", f"checkpoint.save@{rng.randint(1, 2)}"),
            ("MLflow FINISHED, queue not yet told", "sweep.finished@1"),
        ]
    kills: list[tuple[str, str | None, float | None]] = [(w, p, None) for w, p in named]
    for _ in range(s.n if not s.quick else 0):
        kills.append(("a random moment", None, rng.uniform(0.02, 0.98) * s._reference_s))
    spec = SPECS_DIR / "smoke.yaml"
    for what, point, delay in kills:

        def trial(t: Trial, point=point, delay=delay) -> None:
            from bench.sweep.folders import run_dir

            for _ in range(4):  # a random moment after the sweep ended: draw an earlier one
                runs = s.runs_dir("r2")
                plans = s.plans(runs, spec)
                log = runs / "kill.log"
                killed = s.kill_at(
                    s.sweep_args(spec, runs), point=point, delay=delay, after=_started(log), log=log
                )
                if killed.killed or delay is None:
                    break
                delay *= rng.uniform(0.3, 0.9)
            expect(killed.killed, f"the sweep {killed.where} before the kill")
            before = s.snapshot(runs, plans, SMOKE_EXPERIMENT)
            done = sum(1 for p in plans if before[p.run_id]["finished"])
            left = "; ".join(
                f"{p.point.lm}: {folder_state(run_dir(runs, p.run_id))}" for p in plans
            )
            rerun = s.run(s.sweep_args(spec, runs))
            s.check_recovered(t, runs, spec, plans, before, rerun, "smoke@mini-tiny")
            wrong = s.compare(s.results(runs, spec), s.reference())
            expect(not wrong, f"results differ from the uninterrupted sweep: {wrong}")
            t.notes.append(
                f"killed at {killed.where} ({done} of {len(plans)} points in MLflow; {left})"
            )

        _trial(row, f"kill during {what}" + (f" ({point})" if point else ""), trial)
    row.notes.append(
        "smoke sweep (2 points) killed, then rerun; results compared with an uninterrupted sweep "
        "(metrics except timings, module weights byte for byte)"
    )


# ---------------------------------------------------------------------- R3


def row_r3(s: Suite, row: RowResult) -> None:
    rng = s.rng
    named = [
        (False, f"train.step@{rng.randint(1, 3)}"),
        (False, f"state.save@{rng.randint(1, 2)}"),
        (True, "vlp.step@1"),
    ]
    if not s.quick:
        named += [
            (False, "features.shard@1"),
            (False, "checkpoint.save@1"),
            (False, f"evaluate.split@{rng.randint(1, 2)}"),
            (True, "state.save@1"),
        ]
    kills: list[tuple[bool, str | None, float | None]] = [(v, p, None) for v, p in named]
    s.train_reference(False)
    for _ in range(s.n if not s.quick else 0):
        kills.append((False, None, rng.uniform(0.02, 0.98) * s._train_ref_s[False]))
    for vlp, point, delay in kills:

        def trial(t: Trial, vlp=vlp, point=point, delay=delay) -> None:
            ref = s.train_reference(vlp)["result"]
            base = s.scratch("r3")
            base.mkdir()
            config = s.train_config(vlp=vlp, features=base / "features")
            args = s.train_args(config, base / "run")
            begun = (base / "run" / "config.json").exists
            for _ in range(4):  # a random moment after the run ended: draw an earlier one
                killed = s.kill_at(
                    args, point=point, delay=delay, after=begun, log=base / "kill.log"
                )
                if killed.killed or delay is None:
                    break
                shutil.rmtree(base / "run")
                delay *= rng.uniform(0.3, 0.9)
            expect(killed.killed, f"the run {killed.where} before the kill")
            left = folder_state(base / "run")
            proc = s.run(args)
            expect(proc.rc == 0, f"resume exited {proc.rc}: {proc.tail()}")
            got = s.outcome(base / "run")
            expect(got is not None, "no result after resuming")
            expect(got["weights"] == ref["weights"], "module weights differ from the straight run")
            expect(got["metrics"] == ref["metrics"], "metrics differ from the straight run")
            t.notes.append(f"killed at {killed.where}, leaving {left}")

        label = (
            f"{'VLP + captioning' if vlp else 'captioning'}, kill at {point or 'a random moment'}"
        )
        _trial(row, label, trial)
    row.notes.append(
        "`python -m ituning.train` killed, then the same command; module weights compared byte for "
        "byte and every metric except timings"
    )


# ---------------------------------------------------------------------- R4

NONFINITE_SEED = 1


def nonfinite_for_one_seed(
    config,
    out_dir: Path,
    *,
    on_metric=None,
    on_stage=None,
    progress: bool = True,
    scorer=None,
):
    """Sweep executor for R4: ``run_experiment``, with a NaN loss injected at step 1 of the
    seed-1 point only (``ITUNING_INJECT_NONFINITE_AT_STEP``, read by the real training loop)."""
    from ituning.train import run_experiment
    from ituning.trainer import INJECT_NONFINITE_ENV

    kwargs = {"on_metric": on_metric, "on_stage": on_stage, "progress": progress, "scorer": scorer}
    if config.seed != NONFINITE_SEED:
        return run_experiment(config, out_dir, **kwargs)
    os.environ[INJECT_NONFINITE_ENV] = "1"
    try:
        return run_experiment(config, out_dir, **kwargs)
    finally:
        os.environ.pop(INJECT_NONFINITE_ENV, None)


def row_r4(s: Suite, row: RowResult) -> None:
    def trial(t: Trial) -> None:
        from bench.sweep.folders import run_dir

        runs = s.runs_dir("r4")
        spec = s.spec_file("nonfinite", "name: nonfinite\naxes: {seed: [0, 1, 2]}\n")
        plans = s.plans(runs, spec)
        bad = next(p for p in plans if p.point.seed == NONFINITE_SEED)
        proc = s.run(s.sweep_args(spec, runs, "--executor", "bench.faults:nonfinite_for_one_seed"))
        expect(proc.rc == 1, f"exit {proc.rc}: {proc.tail()}")
        expect("error: 1 of 3 points failed" in proc.err, f"no failure count: {proc.tail()}")
        listed = [line for line in proc.out.splitlines() if line.startswith("  failed ")]
        expect(
            len(listed) == 1 and bad.run_id in listed[0] and "training loss nan" in listed[0],
            f"failure not listed: {listed}",
        )
        mlruns = s.mlflow_runs(runs, "nonfinite-tiny")
        status = {r.tags["config_hash"]: r for r in mlruns}
        expect(len(mlruns) == 3, f"{len(mlruns)} MLflow runs")
        failed = status[bad.run_id]
        expect(failed.status == "FAILED", f"the NaN point is {failed.status}")
        reason = failed.tags.get("failure_reason", "")
        expect("training loss nan" in reason, f"reason: {reason!r}")
        others = [status[p.run_id].status for p in plans if p is not bad]
        expect(others == ["FINISHED", "FINISHED"], f"other points: {others}")
        expect(not s.outcome(run_dir(runs, bad.run_id)), "the failed point has a result")
        states = dict(s.trial_states(runs, "nonfinite@mini-tiny"))
        expect(states.get(bad.run_id) == "FAIL", f"optuna trial: {states.get(bad.run_id)}")
        before = s.snapshot(runs, plans, "nonfinite-tiny")
        rerun = s.run(s.sweep_args(spec, runs))  # the fault is gone: only that point runs
        after = s.snapshot(runs, plans, "nonfinite-tiny")
        for p in plans:
            if p is not bad and after[p.run_id]["result"] != before[p.run_id]["result"]:
                t.lost += 1
        expect(rerun.rc == 0 and "1 queued now" in rerun.out, f"rerun: {rerun.tail()}")
        expect(len(after[bad.run_id]["finished"]) == 1, "the point did not finish on the rerun")
        expect(t.lost == 0, f"{t.lost} finished points rerun")
        t.notes.append(f"reason recorded: {reason[:90]}")

    _trial(row, "NaN at step 1 of 1 of 3 points, then a rerun without the fault", trial)
    row.notes.append(
        "sweep with `--executor bench.faults:nonfinite_for_one_seed` (sets "
        "ITUNING_INJECT_NONFINITE_AT_STEP=1 for the seed-1 point only)"
    )


# ---------------------------------------------------------------------- R5


def row_r5(s: Suite, row: RowResult) -> None:
    smoke = SPECS_DIR / "smoke.yaml"

    one_line_error = error_line

    def offline_backbones(t: Trial) -> None:
        root = write_paper_root(s.scratch("r5-paper"))
        runs = s.scratch("r5-runs")
        hf_home = s.scratch("r5-hf-home")
        hf_home.mkdir()
        env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)}
        args = s.sweep_args("smoke", runs, "--profile", "paper", "--data-root", str(root))
        proc = s.run(args, env=env)
        expect(proc.rc == 1, f"exit {proc.rc}: {proc.tail()}")
        expect("(bug" not in proc.text, f"reported as a bug: {proc.tail()}")
        mlruns = s.mlflow_runs(runs, "smoke-tiny")
        reasons = {r.tags.get("failure_reason", "") for r in mlruns}
        expect(mlruns and all(r.status == "FAILED" for r in mlruns), "a run did not fail")
        named = [
            re.search(r"language model '(gpt2[-a-z]*)' offline.*hf download \1", r) for r in reasons
        ]
        expect(all(named), f"reasons: {reasons}")
        t.notes.append(next(iter(reasons))[:100])

    def mini_weights_deleted(t: Trial) -> None:
        runs = s.runs_dir("r5", own=("backbones",))
        (weights,) = runs.glob("backbones/*/mini-base/model.safetensors")
        weights.unlink()
        line = one_line_error(
            s.run(s.sweep_args(smoke, runs)), "mini-base/model.safetensors", "missing", "delete"
        )
        expect(not (runs / "points").exists(), "a point ran")
        shutil.rmtree(weights.parent.parent)  # the fix the message gives
        proc = s.run(s.sweep_args(smoke, runs))
        expect(proc.rc == 0, f"after the fix: {proc.tail()}")
        wrong = s.compare(s.results(runs, smoke), s.reference())
        expect(not wrong, f"rebuilt backbones give other results: {wrong}")
        t.notes.append(line.split(": ", 1)[1][-80:])

    def paper_root_absent(t: Trial) -> None:
        runs = s.scratch("r5-runs")
        args = s.sweep_args(
            "smoke", runs, "--profile", "paper", "--data-root", str(s.work / "nope")
        )
        one_line_error(s.run(args), "--data-root", "nope", "no such folder")
        expect(not runs.exists(), "the runs folder was created")

    def mini_world_absent(t: Trial) -> None:
        runs = s.runs_dir("r5", own=("data",))
        shutil.rmtree(runs / "data")
        proc = s.run(s.sweep_args(smoke, runs))
        expect(proc.rc == 0, f"exit {proc.rc}: {proc.tail()}")
        wrong = s.compare(s.results(runs, smoke), s.reference())
        expect(not wrong, f"the rebuilt world gives other results: {wrong}")

    def unreadable_image(t: Trial) -> None:
        runs = s.runs_dir("r5", own=("data",))
        (image,) = runs.glob("data/shapes-tiny/train/000003.png")
        image.write_bytes(image.read_bytes()[:40])
        proc = s.run(s.sweep_args(smoke, runs))
        expect(proc.rc == 1, f"exit {proc.rc}: {proc.tail()}")
        mlruns = s.mlflow_runs(runs, SMOKE_EXPERIMENT)
        expect(all(r.status == "FAILED" for r in mlruns), "a run finished on a bad image")
        reason = mlruns[0].tags.get("failure_reason", "")
        expect("train/000003.png" in reason and "replace or remove" in reason, f"reason: {reason}")
        t.notes.append(reason.split("/")[-1][:90])

    def shard(t: Trial, damage: str) -> None:
        ref = s.train_reference(False)
        base = s.scratch("r5-shard")
        shutil.copytree(ref["dir"] / "features", base / "features")
        npy = max((base / "features").rglob("*.npy"), key=lambda p: p.stat().st_size)
        data = bytearray(npy.read_bytes())
        if damage == "truncated":
            npy.write_bytes(bytes(data[: len(data) // 2]))
        else:
            data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
            npy.write_bytes(bytes(data))
        config = s.train_config(vlp=False, features=base / "features")
        proc = s.run(s.train_args(config, base / "run"))
        expect(proc.rc == 0, f"exit {proc.rc}: {proc.tail()}")
        expect("removing shard" in proc.err and "checksum mismatch" in proc.err, "no warning")
        expect(s.outcome(base / "run") == ref["result"], "result differs from the intact cache")

    def truncated_state(t: Trial) -> None:
        ref = s.train_reference(False)["result"]
        base = s.scratch("r5-state")
        base.mkdir()
        config = s.train_config(vlp=False, features=base / "features")
        args = s.train_args(config, base / "run")
        killed = s.kill_at(args, point="train.step@3", log=base / "kill.log")
        expect(killed.killed, "no kill")
        state = base / "run" / "state" / "train_state.pt"
        state.write_bytes(state.read_bytes()[:1000])
        one_line_error(s.run(args), "train_state.pt", "truncated", "delete it")
        state.unlink()  # the fix the message gives
        proc = s.run(args)
        expect(proc.rc == 0 and s.outcome(base / "run") == ref, f"after the fix: {proc.tail()}")

    def truncated_checkpoint(t: Trial) -> None:
        ref = s.train_reference(False)
        ckpt = s.scratch("r5-ckpt")
        shutil.copytree(ref["dir"] / "run" / "checkpoint", ckpt)
        weights = ckpt / "modules.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        image = next((s.template() / "data" / "shapes-tiny" / "test").glob("*.png"))
        proc = s.run(["-m", "ituning.caption", str(image), "--checkpoint", str(ckpt)])
        one_line_error(proc, "modules.safetensors", "truncated")

    def damaged_result(t: Trial) -> None:
        ref = s.train_reference(False)
        base = s.scratch("r5-result")
        shutil.copytree(ref["dir"] / "run", base / "run")
        state = base / "run" / "state" / "train_state.pt"
        stamp = state.stat().st_mtime_ns
        result = base / "run" / "result.json"
        result.write_text(result.read_text()[:50])
        config = base / "run" / "config.json"
        proc = s.run(s.train_args(config, base / "run"))
        expect(proc.rc == 0, f"exit {proc.rc}: {proc.tail()}")
        expect(state.stat().st_mtime_ns == stamp, "it trained again")
        expect(s.outcome(base / "run") == ref["result"], "the re-evaluation differs")

    _trial(
        row, "backbone weights absent offline (paper: gpt2 not in the HF cache)", offline_backbones
    )
    _trial(row, "mini backbone weight file deleted", mini_weights_deleted)
    _trial(row, "data root absent (paper)", paper_root_absent)
    _trial(row, "data root absent (mini: the Shapes world deleted)", mini_world_absent)
    _trial(row, "an unreadable image", unreadable_image)
    _trial(row, "a truncated feature shard", lambda t: shard(t, "truncated"))
    _trial(row, "a feature shard with zeroed bytes", lambda t: shard(t, "zeroed"))
    _trial(row, "a truncated training state", truncated_state)
    _trial(row, "a truncated module checkpoint", truncated_checkpoint)
    _trial(row, "a damaged result.json", damaged_result)


# ---------------------------------------------------------------------- R6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def row_r6(s: Suite, row: RowResult) -> None:
    def fails_fast(t: Trial, args: Sequence[str], url: str, runs: Path, *names: str) -> None:
        proc = s.run(args)
        error_line(proc, url, *names)
        trained = [p for p in ("backbones", "data", "points", "features") if (runs / p).exists()]
        expect(not trained, f"built or trained before failing: {trained}")
        t.notes.append(f"{proc.seconds:.1f} s")

    def server_down(t: Trial) -> None:
        runs = s.scratch("r6-runs")
        url = f"http://127.0.0.1:{_free_port()}"
        fails_fast(t, s.sweep_args("smoke", runs, "--tracking-uri", url), url, runs, "unreachable")

    def server_hung(t: Trial) -> None:
        runs = s.scratch("r6-runs")
        with socket.socket() as sock:  # accepts connections, never answers
            sock.bind(("127.0.0.1", 0))
            sock.listen(8)
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            fails_fast(
                t, s.sweep_args("smoke", runs, "--tracking-uri", url), url, runs, "timed out"
            )

    def storage_unusable(t: Trial) -> None:
        runs = s.scratch("r6-runs")
        blocker = s.scratch("r6-file")
        blocker.write_text("")
        url = f"sqlite:///{blocker}/optuna.db"
        fails_fast(t, s.sweep_args("smoke", runs, "--storage", url), url, runs, "unreachable")

    def storage_server_down(t: Trial) -> None:
        runs = s.scratch("r6-runs")
        port = _free_port()
        url = f"postgresql://sweep:secret@127.0.0.1:{port}/sweeps"
        shown = f"postgresql://sweep:***@127.0.0.1:{port}/sweeps"
        fails_fast(t, s.sweep_args("smoke", runs, "--storage", url), shown, runs)

    def storage_locked(t: Trial) -> None:
        runs = s.scratch("r6-runs")
        runs.mkdir()
        db = runs / "optuna.db"
        sqlite3.connect(db).execute("CREATE TABLE x (y)").connection.commit()
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sqlite3, sys, time\n"
             "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(300)\n",
             str(db)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            expect(holder.stdout.readline().strip() == "locked", "could not lock")
            url = f"sqlite:///{db}"
            fails_fast(t, s.sweep_args("smoke", runs), url, runs, "locked by another process")
        finally:
            holder.kill()
            holder.wait()

    _trial(row, "MLflow tracking server down", server_down)
    _trial(row, "MLflow tracking server accepts but never answers", server_hung)
    _trial(row, "optuna storage unusable (SQLite under a file)", storage_unusable)
    _trial(row, "optuna storage server unreachable (PostgreSQL URL)", storage_server_down)
    _trial(row, "optuna storage locked by another process", storage_locked)
    row.notes.append("fresh runs folder: nothing built (no backbones, world, features, points)")


# ---------------------------------------------------------------------- R7


def row_r7(s: Suite, row: RowResult) -> None:
    spec = s.spec_file("crowd", "name: crowd\naxes: {seed: [0, 1, 2]}\n")

    def crowd(t: Trial, fresh_assets: bool, workers_flag: bool) -> None:
        runs = s.scratch("r7")
        if fresh_assets:
            runs.mkdir()
        else:
            runs = s.runs_dir("r7", store=False)
        plans = s.plans(runs, spec)
        if workers_flag:
            procs = [subprocess.Popen([sys.executable, *s.sweep_args(spec, runs, "--workers", "3")],
                                      cwd=s.work, env=s.env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)]  # fmt: skip
        else:
            procs = [
                subprocess.Popen([sys.executable, *s.sweep_args(spec, runs)], cwd=s.work,
                                 env=s.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)
                for _ in range(3)
            ]  # fmt: skip
        logs = [p.communicate(timeout=900)[0] for p in procs]
        codes = [p.returncode for p in procs]
        expect(codes == [0] * len(procs), f"exit codes {codes}: {_one_line(logs[0][-400:])}")
        ran = [m.group(1) for log in logs for m in re.finditer(r"\] (\w+) .*: running in ", log)]
        mlruns = s.mlflow_runs(runs, "crowd-tiny")
        for plan in plans:
            n_ran = ran.count(plan.run_id)
            mine = [r.status for r in mlruns if r.tags.get("config_hash") == plan.run_id]
            t.lost += max(0, n_ran - 1)
            expect(n_ran == 1, f"{plan.point.label()} trained {n_ran} times")
            expect(mine == ["FINISHED"], f"{plan.point.label()}: MLflow runs {mine}")
        states = s.trial_states(runs, "crowd@mini-tiny")
        expect(not [d for d, st in states if st in ("RUNNING", "WAITING")], f"trials {states}")
        expect(any("3/3 points finished" in log for log in logs), "no invocation saw 3/3")

    _trial(row, "3 sweeps at once, fresh runs folder (stores and assets built by the race)",
           lambda t: crowd(t, True, False))  # fmt: skip
    for i in range(max(0, s.n - 1) if not s.quick else 0):
        _trial(row, f"3 sweeps at once, fresh stores (repeat {i + 1})",
               lambda t: crowd(t, False, False))  # fmt: skip
    if not s.quick:
        _trial(row, "one sweep with --workers 3", lambda t: crowd(t, False, True))
    row.notes.append(
        "spec of 3 points; checked from the logs (each point started once), MLflow (one run per "
        "point, FINISHED) and optuna (nothing left running or waiting)"
    )


# ---------------------------------------------------------------------- R8


class _Evil:
    """Unpickling this runs ``touch <marker>``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_evil_pickle(path: Path, marker: Path, *, torch_format: bool = True) -> None:
    """A file that executes ``touch marker`` when unpickled (torch.save or plain pickle)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if torch_format:
        import torch

        torch.save({"stage": "train", "modules": _Evil(marker)}, path)
    else:
        import pickle

        path.write_bytes(pickle.dumps(_Evil(marker)))


_AUDIT = """
import os, sys
watched = os.path.realpath(sys.argv[1])
def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(args[0]))
        if path == watched or path.startswith(watched + os.sep):
            os.write(2, f"AUDIT {event} {path}\\n".encode())
sys.addaudithook(hook)
from bench.sweep.coordinator import main
raise SystemExit(main(sys.argv[2:]))
"""


def scan_unsafe_loads(roots: Sequence[Path]) -> list[str]:
    """Source lines that could deserialise code: torch.load without weights_only=True, pickle
    loads, yaml.load/unsafe_load with a non-safe loader, np.load with allow_pickle=True."""
    bad = []
    patterns = [
        (re.compile(r"torch\.load\((?![^)]*weights_only=True)"), "torch.load without weights_only"),
        (re.compile(r"\bpickle\.loads?\(|\bdill\.|\bjoblib\.load"), "pickle load"),
        (re.compile(r"yaml\.(unsafe_load|full_load)|yaml\.load\((?![^)]*Loader=_SpecLoader)"), "yaml load"),
        (re.compile(r"allow_pickle=True"), "np.load allow_pickle"),
    ]  # fmt: skip
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if path.resolve() == Path(__file__).resolve():
                continue
            for i, line in enumerate(path.read_text().splitlines(), start=1):
                for pattern, what in patterns:
                    if pattern.search(line):
                        bad.append(f"{path.relative_to(ROOT)}:{i}: {what}")
    return bad


def ui_command(port: int, root: Path) -> tuple[list[str], dict[str, str]]:
    """The command ``nox -s ui -- --port PORT`` runs, taken from the noxfile itself (with its run
    store moved under ``root``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_noxfile", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    captured: dict[str, Any] = {}

    class Session:
        posargs = ["--port", str(port)]

        def log(self, *args) -> None:
            pass

        def run(self, *args, external=False, env=None) -> None:
            captured["args"], captured["env"] = list(args), dict(env or {})

    module.ROOT = root
    module._ensure_env = lambda session: None
    func = getattr(module.ui, "func", module.ui)
    func(Session())
    return captured["args"], captured["env"]


def listening(port: int) -> list[str]:
    """Local addresses listening on ``port`` (``ss -ltn``)."""
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
    return [f[3] for f in (line.split() for line in out.splitlines()) if f[3].endswith(f":{port}")]


def row_r8(s: Suite, row: RowResult) -> None:
    marker = s.work / "r8-EXECUTED"

    def not_executed() -> None:
        expect(not marker.exists(), "the payload ran")

    refused = error_line

    tags = {
        "!!python/object/apply": f'name: !!python/object/apply:os.system ["touch {marker}"]\n',
        "!!python/object/new": f'name: !!python/object/new:os.system ["touch {marker}"]\n',
        "!!python/name": "name: !!python/name:os.system\n",
    }
    for tag, text in tags.items():

        def spec_tag(t: Trial, text=text, tag=tag) -> None:
            spec = s.spec_file("evil", text + "axes: {lm: [base]}\n")
            refused(s.run(s.sweep_args(spec, s.work / "r8-runs")), "evil.yaml", tag, "not allowed")
            expect(not (s.work / "r8-runs").exists(), "runs folder created")
            not_executed()

        _trial(row, f"sweep spec with {tag}", spec_tag)

    def config_tag(t: Trial) -> None:
        config = s.scratch("r8-config") / "config.yaml"
        config.parent.mkdir()
        config.write_text(f'epochs: !!python/object/apply:os.system ["touch {marker}"]\n')
        refused(s.run(["-m", "ituning.train", "--config", str(config)]), "config.yaml")
        good = s.train_config(vlp=False, features=s.work / "r8-features")
        payload = f'epochs=!!python/object/apply:os.system ["touch {marker}"]'
        refused(s.run(["-m", "ituning.train", "--config", str(good), "--set", payload]), "--set")
        not_executed()

    def evil_state(t: Trial) -> None:
        base = s.scratch("r8-state")
        config = s.train_config(vlp=False, features=base / "features")
        write_evil_pickle(base / "run" / "state" / "train_state.pt", marker)
        line = refused(s.run(s.train_args(config, base / "run")), "train_state.pt")
        expect("not a safe checkpoint" in line, line)
        not_executed()

    def evil_state_in_sweep(t: Trial) -> None:
        from bench.sweep.folders import run_dir

        runs = s.runs_dir("r8")
        plans = s.plans(runs, SPECS_DIR / "smoke.yaml")
        for plan in plans:
            write_evil_pickle(run_dir(runs, plan.run_id) / "state" / "train_state.pt", marker)
        proc = s.run(s.sweep_args("smoke", runs))
        expect(proc.rc == 1, f"exit {proc.rc}: {proc.tail()}")
        mlruns = s.mlflow_runs(runs, SMOKE_EXPERIMENT)
        reasons = [r.tags.get("failure_reason", "") for r in mlruns]
        expect(len(reasons) == 2 and all("not a safe checkpoint" in r for r in reasons), reasons)
        not_executed()

    def evil_modules(t: Trial) -> None:
        ckpt = s.scratch("r8-ckpt")
        shutil.copytree(s.train_reference(False)["dir"] / "run" / "checkpoint", ckpt)
        write_evil_pickle(ckpt / "modules.safetensors", marker, torch_format=False)
        image = next((s.template() / "data" / "shapes-tiny" / "test").glob("*.png"))
        proc = s.run(["-m", "ituning.caption", str(image), "--checkpoint", str(ckpt)])
        refused(proc, "modules.safetensors", "not a safetensors file")
        not_executed()

    def evil_shard(t: Trial) -> None:
        import numpy as np

        ref = s.train_reference(False)
        base = s.scratch("r8-shard")
        shutil.copytree(ref["dir"] / "features", base / "features")
        index = max((base / "features").rglob("*.json"), key=lambda p: p.stat().st_size)
        npy = index.with_suffix(".npy")
        meta = json.loads(index.read_text())
        evil = np.empty(meta["shape"][0], dtype=object)
        evil[:] = [_Evil(marker)] * len(evil)
        with open(npy, "wb") as handle:
            np.save(handle, evil, allow_pickle=True)
        meta["sha256"] = _sha256(npy)  # a consistent index: only the loader stands in the way
        index.write_text(json.dumps(meta))
        config = s.train_config(vlp=False, features=base / "features")
        proc = s.run(s.train_args(config, base / "run"))
        expect(proc.rc == 0, f"exit {proc.rc}: {proc.tail()}")
        expect("removing shard" in proc.err, "the shard was not refused")
        expect(s.outcome(base / "run") == ref["result"], "result differs")
        not_executed()

    def traversal(t: Trial) -> None:
        cases = [  # each lands on <base>/etc/passwd, beside the data root <base>/data
            ("filename", {"filename": "../../../../etc/passwd"}),
            ("filepath", {"filepath": "../../../../etc", "filename": "passwd"}),
            ("absolute", {"filepath": "", "filename": "{secret}"}),
        ]
        for name, fields in cases:
            base = s.scratch("r8-traversal")
            secret = base / "etc" / "passwd"
            secret.parent.mkdir(parents=True)
            secret.write_text("root:x:0:0\n")
            root = write_paper_root(base / "data", vlp=False)
            fields = {k: v.format(secret=secret) for k, v in fields.items()}
            _edit_json(
                root / "coco" / "dataset_coco.json", lambda d, f=fields: d["images"][0].update(f)
            )
            runs = s.scratch("r8-runs")
            args = ["-c", _AUDIT, str(secret.parent), "smoke", "--profile", "paper", "--data-root",
                    str(root), "--scale", "tiny", "--runs-dir", str(runs)]  # fmt: skip
            proc = s.run(args)
            audit = [line for line in proc.err.splitlines() if line.startswith("AUDIT")]
            expect(not audit, f"{name}: opened {audit}")
            line = refused(proc, "dataset_coco.json", "images[0].filename")
            expect("escapes the image root" in line or "is absolute" in line, line)
            expect(not runs.exists(), "runs folder created")
        nocaps = write_paper_root(s.scratch("r8-nocaps"), vlp=False)
        _edit_json(
            nocaps / "nocaps" / "nocaps_val_4500_captions.json",
            lambda d: d["images"][0].update(file_name="../../../etc/passwd"),
        )
        args = s.sweep_args("smoke", s.work / "r8-runs", "--profile", "paper", "--data-root",
                            str(nocaps))  # fmt: skip
        refused(s.run(args), "nocaps_val_4500_captions.json", "images[0].file_name", "escapes")

    def static_scan(t: Trial) -> None:
        bad = scan_unsafe_loads([ROOT / "ituning", ROOT / "bench"])
        expect(not bad, f"unsafe loads: {bad}")
        t.notes.append(
            "no torch.load without weights_only=True, pickle, unsafe YAML or allow_pickle"
        )

    def ui_loopback(t: Trial) -> None:
        port = _free_port()
        store = s.scratch("r8-ui")
        store.mkdir()
        args, env = ui_command(port, store)
        expect(args[args.index("--host") + 1] == "127.0.0.1", f"ui binds {args}")
        proc = subprocess.Popen(
            args, cwd=s.work, env={**s.env(), **env}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while not (addresses := listening(port)):
                expect(proc.poll() is None, f"the UI exited ({proc.returncode})")
                expect(time.monotonic() < deadline, "the UI never listened")
                time.sleep(0.5)
            expect(addresses == [f"127.0.0.1:{port}"], f"listening on {addresses}")
            t.notes.append(f"`nox -s ui` command listens on {addresses[0].split(':')[0]} only")
        finally:
            from bench.ui import stop_group

            stop_group(proc, timeout_s=20)

    _trial(row, "train config and --set with !!python tags", config_tag)
    _trial(row, "training state that runs code when unpickled (train CLI)", evil_state)
    _trial(row, "training state that runs code when unpickled (sweep)", evil_state_in_sweep)
    _trial(row, "module checkpoint replaced by a pickle", evil_modules)
    _trial(row, "feature shard holding pickled objects, index consistent", evil_shard)
    _trial(row, "dataset JSON with path traversal (COCO x3, NoCaps)", traversal)
    _trial(row, "source scan for unsafe deserialisation", static_scan)
    _trial(row, "MLflow UI (`nox -s ui`) binds to loopback", ui_loopback)
    row.notes.append("payloads `touch` a marker file; it never appeared")


# ---------------------------------------------------------------------- running and reporting


def _trial(row: RowResult, name: str, fn: Callable[[Trial], None]) -> None:
    t = Trial(name)
    row.trials += 1
    started = time.perf_counter()
    status = "FAILED"
    try:
        fn(t)
    except TrialFailed as exc:
        row.failures.append(f"{name}: {exc}")
    except Exception as exc:  # a crash of the suite itself is a failed trial, with its place
        ours = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == __file__]
        where = f" (faults.py:{ours[-1].lineno})" if ours else ""
        row.failures.append(f"{name}: {type(exc).__name__}: {exc}{where}")
    else:
        row.passed += 1
        status = "ok"
    row.lost += t.lost
    took = time.perf_counter() - started
    detail = f" - {_one_line('; '.join(t.notes))}" if t.notes else ""
    print(f"  [{row.id}] {status:6} {name} ({took:.0f} s){detail}", flush=True)


ROW_FUNCS: dict[str, Callable[[Suite, RowResult], None]] = {
    "R1": row_r1,
    "R2": row_r2,
    "R3": row_r3,
    "R4": row_r4,
    "R5": row_r5,
    "R6": row_r6,
    "R7": row_r7,
    "R8": row_r8,
}


def run_suite(
    work: Path,
    *,
    quick: bool = False,
    trials: int = 3,
    seed: int = 0,
    rows: Sequence[str] = tuple(ROWS),
    log: Callable[[str], None] = print,
) -> list[RowResult]:
    suite = Suite(work, quick=quick, trials=trials, seed=seed, log=log)
    results = []
    for row_id in rows:
        row = RowResult(row_id)
        log(f"{row_id}: {row.fault}")
        started = time.perf_counter()
        try:
            ROW_FUNCS[row_id](suite, row)
        except Exception as exc:  # the row could not even set up: counted as a failed trial
            row.trials += 1
            row.failures.append(f"setup: {type(exc).__name__}: {_one_line(str(exc))[:300]}")
        row.seconds = time.perf_counter() - started
        results.append(row)
    return results


def table(results: Sequence[RowResult]) -> list[str]:
    lines = [
        "| id | fault | what must hold | trials | passed | lost results | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.id} | {r.fault} | {r.holds} | {r.trials} | {r.passed} | {r.lost} | "
            f"{r.seconds:.0f} s |"
        )
    return lines


def report(results: Sequence[RowResult], *, command: str, seconds: float, work: Path) -> str:
    total = sum(r.trials for r in results)
    passed = sum(r.passed for r in results)
    lines = [
        "# Reliability: fault injection",
        "",
        f"Generated by `{command}` on {dt.date.today().isoformat()} "
        f"({platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"{seconds / 60:.1f} min): **{passed} of {total} trials passed, "
        f"{sum(r.lost for r in results)} results lost**.",
        "",
        "Every trial ran the real command-line programs as subprocesses on the tiny scale of the "
        '`mini` profile (`bench/faults.py` says how each fault is made). "Lost results" counts '
        "finished points whose `result.json` changed or disappeared, or whose FINISHED MLflow run "
        "was replaced or duplicated.",
        "",
        *table(results),
        "",
        "## Rows",
        "",
    ]
    for r in results:
        notes = _clean(" ".join(r.notes), work)
        lines.append(f"- **{r.id}** ({r.fault}; tests: {ROWS[r.id][2]}). {notes}")
        for failure in r.failures:
            lines.append(f"  - FAILED: {_clean(failure, work)}")
    return "\n".join(lines) + "\n"


def _clean(text: str, work: Path) -> str:
    return _one_line(text.replace(str(work), "<work>").replace(str(ROOT), "<repo>"))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _tail(path: Path) -> str:
    try:
        return _one_line(path.read_text()[-400:])
    except OSError:
        return ""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="ituning-faults-") as tmp:
        yield Path(tmp)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer trials (one per required case)")
    p.add_argument("--trials", type=int, default=3, help="random-moment kills per row (default 3)")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated row ids (default all)")
    p.add_argument("--seed", type=int, default=0, help="for the kill points and moments")
    p.add_argument("--out", type=Path, default=Path("reports/reliability.md"))
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp)")
    args = p.parse_args(argv)
    rows = [r.strip().upper() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown or args.trials < 0:
        p.error(f"--rows: unknown {unknown}" if unknown else "--trials must be >= 0")
    started = time.perf_counter()
    with _workdir(args.keep) as work:
        results = run_suite(work, quick=args.quick, trials=args.trials, seed=args.seed, rows=rows)
        seconds = time.perf_counter() - started
        command = "python -m bench.faults" + (" --quick" if args.quick else "")
        if args.trials != 3:
            command += f" --trials {args.trials}"
        text = report(results, command=command, seconds=seconds, work=work)
    print()
    print("\n".join(table(results)))
    for r in results:
        for failure in r.failures:
            print(f"FAILED {r.id}: {_clean(failure, work)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"\nreport: {args.out} ({seconds / 60:.1f} min)")
    return 0 if all(r.passed == r.trials for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
