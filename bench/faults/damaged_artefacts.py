"""R5, missing or corrupt artefacts (backbone weights, data root, an image, a feature shard, a
training state, a module checkpoint, ``result.json``): either a clear one-line error naming the
artefact and the fix, or a rebuild whose results equal the reference. Never a silent wrong
result: a damaged file that trains on is worse than one that stops the run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from bench import SPECS_DIR
from bench.faults import stores
from bench.faults.harness import FaultHarness
from bench.faults.inputs import write_paper_root
from bench.faults.trials import RowResult, Trial, error_line, expect, run_trial


def check_damaged_artefacts(h: FaultHarness, row: RowResult) -> None:
    smoke = SPECS_DIR / "smoke.yaml"

    def differences(runs: Path) -> list[str]:
        """How the smoke sweep's results in ``runs`` differ from the uninterrupted sweep's."""
        return stores.outcome_differences(
            stores.sweep_outcomes(runs, h.plans(runs, smoke)), h.reference()
        )

    def offline_backbones(t: Trial) -> None:
        """Weights absent from the cache: the preflight names each download before any run."""
        root = write_paper_root(h.scratch("r5-paper"))
        runs = h.scratch("r5-runs")
        hf_home = h.scratch("r5-hf-home")
        hf_home.mkdir()
        env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home)}
        args = h.sweep_args("smoke", runs, "--profile", "paper", "--data-root", str(root))
        proc = h.run(args, env=env)
        expect(proc.rc == 2, f"exit {proc.rc}: {proc.tail()}")
        expect("Traceback" not in proc.text, f"traceback: {proc.tail()}")
        lines = [line for line in proc.err.splitlines() if line.startswith("error: ")]
        named = [re.search(r"language model (gpt2[-a-z]*): .*hf download \1", x) for x in lines]
        expect(sum(bool(n) for n in named) == 2, f"lines: {lines}")  # smoke: base and large
        expect(any("vision encoder ViT-B-16" in x for x in lines), f"lines: {lines}")
        expect(not runs.exists(), "the runs folder was created")
        t.notes.append(lines[0][7:107])

    def mini_weights_deleted(t: Trial) -> None:
        runs = h.runs_dir("r5", own=("backbones",))
        (weights,) = runs.glob("backbones/*/mini-base/model.safetensors")
        weights.unlink()
        line = error_line(
            h.run(h.sweep_args(smoke, runs)), "mini-base/model.safetensors", "missing", "delete"
        )
        expect(not (runs / "points").exists(), "a point ran")
        shutil.rmtree(weights.parent.parent)  # the fix the message gives
        proc = h.run(h.sweep_args(smoke, runs))
        expect(proc.rc == 0, f"after the fix: {proc.tail()}")
        wrong = differences(runs)
        expect(not wrong, f"rebuilt backbones give other results: {wrong}")
        t.notes.append(line.split(": ", 1)[1][-80:])

    def paper_root_absent(t: Trial) -> None:
        runs = h.scratch("r5-runs")
        args = h.sweep_args(
            "smoke", runs, "--profile", "paper", "--data-root", str(h.work / "nope"),
            "--weights", str(h.paper_weights()),
        )  # fmt: skip
        error_line(h.run(args), "--data-root", "nope", "no such folder")
        expect(not runs.exists(), "the runs folder was created")

    def mini_world_absent(t: Trial) -> None:
        runs = h.runs_dir("r5", own=("data",))
        shutil.rmtree(runs / "data")
        proc = h.run(h.sweep_args(smoke, runs))
        expect(proc.rc == 0, f"exit {proc.rc}: {proc.tail()}")
        wrong = differences(runs)
        expect(not wrong, f"the rebuilt world gives other results: {wrong}")

    def unreadable_image(t: Trial) -> None:
        runs = h.runs_dir("r5", own=("data",))
        (image,) = runs.glob("data/shapes-tiny/train/000003.png")
        image.write_bytes(image.read_bytes()[:40])
        proc = h.run(h.sweep_args(smoke, runs))
        expect(proc.rc == 1, f"exit {proc.rc}: {proc.tail()}")
        mlruns = stores.sweep_mlflow_runs(runs, "smoke")
        expect(all(r.status == "FAILED" for r in mlruns), "a run finished on a bad image")
        reason = mlruns[0].failure_reason
        expect("train/000003.png" in reason and "replace or remove" in reason, f"reason: {reason}")
        t.notes.append(reason.split("/")[-1][:90])

    def shard(t: Trial, damage: str) -> None:
        ref = h.train_reference(False)
        base = h.scratch("r5-shard")
        shutil.copytree(ref["dir"] / "features", base / "features")
        npy = max((base / "features").rglob("*.npy"), key=lambda p: p.stat().st_size)
        data = bytearray(npy.read_bytes())
        if damage == "truncated":
            npy.write_bytes(bytes(data[: len(data) // 2]))
        else:
            data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
            npy.write_bytes(bytes(data))
        config = h.train_config(vlp=False, features=base / "features")
        proc = h.run(h.train_args(config, base / "run"))
        expect(proc.rc == 0, f"exit {proc.rc}: {proc.tail()}")
        expect("removing shard" in proc.err and "checksum mismatch" in proc.err, "no warning")
        expect(
            stores.outcome(base / "run") == ref["result"], "result differs from the intact cache"
        )

    def truncated_state(t: Trial) -> None:
        ref = h.train_reference(False)["result"]
        base = h.scratch("r5-state")
        base.mkdir()
        config = h.train_config(vlp=False, features=base / "features")
        args = h.train_args(config, base / "run")
        killed = h.kill_at(args, point="train.step@3", log=base / "kill.log")
        expect(killed.killed, "no kill")
        state = base / "run" / "state" / "train_state.pt"
        state.write_bytes(state.read_bytes()[:1000])
        error_line(h.run(args), "train_state.pt", "truncated", "delete it")
        state.unlink()  # the fix the message gives
        proc = h.run(args)
        expect(
            proc.rc == 0 and stores.outcome(base / "run") == ref, f"after the fix: {proc.tail()}"
        )

    def truncated_checkpoint(t: Trial) -> None:
        ref = h.train_reference(False)
        ckpt = h.scratch("r5-ckpt")
        shutil.copytree(ref["dir"] / "run" / "checkpoint", ckpt)
        weights = ckpt / "modules.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
        image = next((h.template() / "data" / "shapes-tiny" / "test").glob("*.png"))
        proc = h.run(["-m", "ituning.caption", str(image), "--checkpoint", str(ckpt)])
        error_line(proc, "modules.safetensors", "truncated")

    def damaged_result(t: Trial) -> None:
        ref = h.train_reference(False)
        base = h.scratch("r5-result")
        shutil.copytree(ref["dir"] / "run", base / "run")
        state = base / "run" / "state" / "train_state.pt"
        stamp = state.stat().st_mtime_ns
        result = base / "run" / "result.json"
        result.write_text(result.read_text()[:50])
        config = base / "run" / "config.json"
        proc = h.run(h.train_args(config, base / "run"))
        expect(proc.rc == 0, f"exit {proc.rc}: {proc.tail()}")
        expect(state.stat().st_mtime_ns == stamp, "it trained again")
        expect(stores.outcome(base / "run") == ref["result"], "the re-evaluation differs")

    run_trial(
        row, "backbone weights absent offline (paper: gpt2 not in the HF cache)", offline_backbones
    )
    run_trial(row, "mini backbone weight file deleted", mini_weights_deleted)
    run_trial(row, "data root absent (paper)", paper_root_absent)
    run_trial(row, "data root absent (mini: the Shapes world deleted)", mini_world_absent)
    run_trial(row, "an unreadable image", unreadable_image)
    run_trial(row, "a truncated feature shard", lambda t: shard(t, "truncated"))
    run_trial(row, "a feature shard with zeroed bytes", lambda t: shard(t, "zeroed"))
    run_trial(row, "a truncated training state", truncated_state)
    run_trial(row, "a truncated module checkpoint", truncated_checkpoint)
    run_trial(row, "a damaged result.json", damaged_result)
