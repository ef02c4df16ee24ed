"""R8, untrusted files: YAML tags in specs and configs, training states, module weights and
feature shards that run code when unpickled, dataset JSON with path traversal. Each is refused,
nothing is executed (the payloads ``touch`` a marker file) and nothing outside the data root is
opened; the sources never deserialise code, and the MLflow UI session binds to loopback only.
Checkpoints and datasets are shared between people: opening one must not hand over the machine."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import REPO_ROOT, SPECS_DIR
from bench.faults import stores
from bench.faults.harness import FaultHarness, free_port
from bench.faults.inputs import edit_json, write_paper_root
from bench.faults.trials import RowResult, Trial, error_line, expect, run_trial
from ituning.files import sha256_file

#: The sweep spec whose training states are replaced by payloads, by its ``name``.
SPEC = "smoke"
_THIS_FILE = Path(__file__).resolve()


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
from bench.sweep.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


def scan_unsafe_loads(roots: Sequence[Path]) -> list[str]:
    """Source lines under ``roots`` that could deserialise code: torch.load without
    weights_only=True, pickle loads, yaml.load/unsafe_load with a non-safe loader, np.load with
    allow_pickle=True. This module is skipped: it writes the payloads and holds the patterns."""
    bad = []
    patterns = [
        (re.compile(r"torch\.load\((?![^)]*weights_only=True)"), "torch.load without weights_only"),
        (re.compile(r"\bpickle\.loads?\(|\bdill\.|\bjoblib\.load"), "pickle load"),
        (re.compile(r"yaml\.(unsafe_load|full_load)|yaml\.load\((?![^)]*Loader=LimitedLoader)"), "yaml load"),
        (re.compile(r"allow_pickle=True"), "np.load allow_pickle"),
    ]  # fmt: skip
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if path.resolve() == _THIS_FILE:
                continue
            for i, line in enumerate(path.read_text().splitlines(), start=1):
                for pattern, what in patterns:
                    if pattern.search(line):
                        bad.append(f"{path.relative_to(REPO_ROOT)}:{i}: {what}")
    return bad


def ui_command(port: int, root: Path) -> tuple[list[str], dict[str, str]]:
    """The command ``nox -s ui -- --port PORT`` runs, taken from the noxfile itself (with its run
    store moved under ``root``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_noxfile", REPO_ROOT / "noxfile.py")
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


def check_untrusted_files(h: FaultHarness, row: RowResult) -> None:
    marker = h.work / "r8-EXECUTED"

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
            spec = h.spec_file("evil", text + "axes: {lm: [base]}\n")
            refused(h.run(h.sweep_args(spec, h.work / "r8-runs")), "evil.yaml", tag, "not allowed")
            expect(not (h.work / "r8-runs").exists(), "runs folder created")
            not_executed()

        run_trial(row, f"sweep spec with {tag}", spec_tag)

    def config_tag(t: Trial) -> None:
        config = h.scratch("r8-config") / "config.yaml"
        config.parent.mkdir()
        config.write_text(f'epochs: !!python/object/apply:os.system ["touch {marker}"]\n')
        refused(h.run(["-m", "ituning.train", "--config", str(config)]), "config.yaml")
        good = h.train_config(vlp=False, features=h.work / "r8-features")
        payload = f'epochs=!!python/object/apply:os.system ["touch {marker}"]'
        refused(h.run(["-m", "ituning.train", "--config", str(good), "--set", payload]), "--set")
        not_executed()

    def evil_state(t: Trial) -> None:
        base = h.scratch("r8-state")
        config = h.train_config(vlp=False, features=base / "features")
        write_evil_pickle(base / "run" / "state" / "train_state.pt", marker)
        line = refused(h.run(h.train_args(config, base / "run")), "train_state.pt")
        expect("not a safe checkpoint" in line, line)
        not_executed()

    def evil_state_in_sweep(t: Trial) -> None:
        from bench.sweep.folders import run_dir

        runs = h.runs_dir("r8")
        plans = h.plans(runs, SPECS_DIR / f"{SPEC}.yaml")
        for plan in plans:
            write_evil_pickle(run_dir(runs, plan.run_id) / "state" / "train_state.pt", marker)
        proc = h.run(h.sweep_args(SPEC, runs))
        expect(proc.rc == 1, f"exit {proc.rc}: {proc.tail()}")
        mlruns = stores.sweep_mlflow_runs(runs, SPEC)
        reasons = [r.failure_reason for r in mlruns]
        expect(len(reasons) == 2 and all("not a safe checkpoint" in r for r in reasons), reasons)
        not_executed()

    def evil_modules(t: Trial) -> None:
        ckpt = h.scratch("r8-ckpt")
        shutil.copytree(h.train_reference(False)["dir"] / "run" / "checkpoint", ckpt)
        write_evil_pickle(ckpt / "modules.safetensors", marker, torch_format=False)
        image = next((h.template() / "data" / "shapes-tiny" / "test").glob("*.png"))
        proc = h.run(["-m", "ituning.caption", str(image), "--checkpoint", str(ckpt)])
        refused(proc, "modules.safetensors", "not a safetensors file")
        not_executed()

    def evil_shard(t: Trial) -> None:
        import numpy as np

        ref = h.train_reference(False)
        base = h.scratch("r8-shard")
        shutil.copytree(ref["dir"] / "features", base / "features")
        index = max((base / "features").rglob("*.json"), key=lambda p: p.stat().st_size)
        npy = index.with_suffix(".npy")
        meta = json.loads(index.read_text())
        evil = np.empty(meta["shape"][0], dtype=object)
        evil[:] = [_Evil(marker)] * len(evil)
        with open(npy, "wb") as handle:
            np.save(handle, evil, allow_pickle=True)
        meta["sha256"] = sha256_file(npy)  # a consistent index: only the loader stands in the way
        index.write_text(json.dumps(meta))
        config = h.train_config(vlp=False, features=base / "features")
        proc = h.run(h.train_args(config, base / "run"))
        expect(proc.rc == 0, f"exit {proc.rc}: {proc.tail()}")
        expect("removing shard" in proc.err, "the shard was not refused")
        expect(stores.outcome(base / "run") == ref["result"], "result differs")
        not_executed()

    def traversal(t: Trial) -> None:
        cases = [  # each lands on <base>/etc/passwd, beside the data root <base>/data
            ("filename", {"filename": "../../../../etc/passwd"}),
            ("filepath", {"filepath": "../../../../etc", "filename": "passwd"}),
            ("absolute", {"filepath": "", "filename": "{secret}"}),
        ]
        for name, fields in cases:
            base = h.scratch("r8-traversal")
            secret = base / "etc" / "passwd"
            secret.parent.mkdir(parents=True)
            secret.write_text("root:x:0:0\n")
            root = write_paper_root(base / "data", vlp=False)
            fields = {k: v.format(secret=secret) for k, v in fields.items()}
            edit_json(
                root / "coco" / "dataset_coco.json", lambda d, f=fields: d["images"][0].update(f)
            )
            runs = h.scratch("r8-runs")
            args = ["-c", _AUDIT, str(secret.parent), "smoke", "--profile", "paper", "--data-root",
                    str(root), "--weights", str(h.paper_weights()), "--scale", "tiny",
                    "--runs-dir", str(runs)]  # fmt: skip
            proc = h.run(args)
            audit = [line for line in proc.err.splitlines() if line.startswith("AUDIT")]
            expect(not audit, f"{name}: opened {audit}")
            line = refused(proc, "dataset_coco.json", "images[0].filename")
            expect("escapes the image root" in line or "is absolute" in line, line)
            expect(not runs.exists(), "runs folder created")
        nocaps = write_paper_root(h.scratch("r8-nocaps"), vlp=False)
        edit_json(
            nocaps / "nocaps" / "nocaps_val_4500_captions.json",
            lambda d: d["images"][0].update(file_name="../../../etc/passwd"),
        )
        args = h.sweep_args("smoke", h.work / "r8-runs", "--profile", "paper", "--data-root",
                            str(nocaps), "--weights", str(h.paper_weights()))  # fmt: skip
        refused(h.run(args), "nocaps_val_4500_captions.json", "images[0].file_name", "escapes")

    def static_scan(t: Trial) -> None:
        bad = scan_unsafe_loads([REPO_ROOT / "ituning", REPO_ROOT / "bench"])
        expect(not bad, f"unsafe loads: {bad}")
        t.notes.append(
            "no torch.load without weights_only=True, pickle, unsafe YAML or allow_pickle"
        )

    def ui_loopback(t: Trial) -> None:
        port = free_port()
        store = h.scratch("r8-ui")
        store.mkdir()
        args, env = ui_command(port, store)
        expect(args[args.index("--host") + 1] == "127.0.0.1", f"ui binds {args}")
        proc = subprocess.Popen(
            args, cwd=h.work, env={**h.env(), **env}, stdout=subprocess.DEVNULL,
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

    run_trial(row, "train config and --set with !!python tags", config_tag)
    run_trial(row, "training state that runs code when unpickled (train CLI)", evil_state)
    run_trial(row, "training state that runs code when unpickled (sweep)", evil_state_in_sweep)
    run_trial(row, "module checkpoint replaced by a pickle", evil_modules)
    run_trial(row, "feature shard holding pickled objects, index consistent", evil_shard)
    run_trial(row, "dataset JSON with path traversal (COCO x3, NoCaps)", traversal)
    run_trial(row, "source scan for unsafe deserialisation", static_scan)
    run_trial(row, "MLflow UI (`nox -s ui`) binds to loopback", ui_loopback)
    row.notes.append("payloads `touch` a marker file; it never appeared")
