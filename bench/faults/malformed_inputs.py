"""R1, malformed inputs: a bad spec, flag, dataset file or training config is exit 2, one
``error:`` line naming the file and field, no traceback, and nothing written (the runs folder is
never created, nor anything in the working folder). A user fixes the named field and reruns; a
half-created runs folder would make the rerun look like a resume."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from bench import SPECS_DIR
from bench.faults.harness import FaultHarness, Proc
from bench.faults.inputs import BAD_FLAGS, BAD_SPECS, bad_data_files, edit_json, write_paper_root
from bench.faults.trials import RowResult, Trial, refused_cleanly, run_trial


def check_malformed_inputs(h: FaultHarness, row: RowResult) -> None:
    runs = h.work / "r1-runs"  # must never come into existence
    cwd = h.scratch("r1-cwd")
    cwd.mkdir()

    def check(t: Trial, proc: Proc, names: Sequence[str], extra_dirs: Sequence[Path] = ()) -> None:
        refused_cleanly(proc, names, [runs, *extra_dirs], cwd)

    for name, text, names in BAD_SPECS:
        spec = h.scratch("r1-spec") / "bad.yaml"
        spec.parent.mkdir()
        spec.write_bytes(text if isinstance(text, bytes) else text.encode())

        def spec_case(t: Trial, spec=spec, names=names) -> None:
            proc = h.run(h.sweep_args(spec, runs), cwd=cwd)
            check(t, proc, ("bad.yaml", *names))

        run_trial(row, f"spec: {name}", spec_case)

    def missing_spec(t: Trial) -> None:
        check(t, h.run(h.sweep_args(cwd.parent / "nope.yaml", runs), cwd=cwd), ("nope.yaml",))

    def unknown_name(t: Trial) -> None:
        proc = h.run(h.sweep_args("tabel1", runs), cwd=cwd)
        check(t, proc, ("tabel1", "no such sweep spec", "table1"))

    def directory(t: Trial) -> None:
        check(t, h.run(h.sweep_args(SPECS_DIR, runs), cwd=cwd), ("sweeps", "is a folder"))

    run_trial(row, "spec: file not found", missing_spec)
    run_trial(row, "spec: unknown spec name", unknown_name)
    run_trial(row, "spec: a directory", directory)

    for name, argv, names in BAD_FLAGS:

        def flag_case(t: Trial, argv=argv, names=names) -> None:
            proc = h.run(h.sweep_args("smoke", runs, *argv), cwd=cwd)
            check(t, proc, names)

        run_trial(row, f"flag: {name}", flag_case)

    clean = h.scratch("r1-paper")
    write_paper_root(clean)
    vlp_spec = h.spec_file("vlp", "name: v\naxes: {vlp: [true]}\n")
    data_cases = bad_data_files()
    for name, damage, names, vlp in data_cases:

        def data_case(t: Trial, damage=damage, names=names, vlp=vlp) -> None:
            root = h.scratch("r1-data")
            shutil.copytree(clean, root)
            damage(root)
            spec = vlp_spec if vlp else "smoke"
            proc = h.run(
                h.sweep_args(spec, runs, "--profile", "paper", "--data-root", str(root),
                             "--weights", str(h.paper_weights())),
                cwd=cwd,
            )  # fmt: skip
            check(t, proc, names)

        run_trial(row, f"data: {name}", data_case)

    # The training command: configuration and dataset errors, before its run folder exists.
    def train_case(t: Trial, text: str | bytes, names: Sequence[str], argv: Sequence[str] = ()):
        config = h.scratch("r1-train") / "config.yaml"
        config.parent.mkdir()
        config.write_bytes(text if isinstance(text, bytes) else text.encode())
        out = config.parent / "out"
        args = ["-m", "ituning.train", "--config", str(config), "--out", str(out), *argv]
        check(t, h.run(args, cwd=cwd), names, extra_dirs=[out])

    good = {"data": {"captions": str(clean / "coco" / "dataset_coco.json"),
                     "image_root": str(clean / "coco" / "images")}}  # fmt: skip
    bad_data = h.scratch("r1-train-data")
    shutil.copytree(clean, bad_data)
    edit_json(bad_data / "coco" / "dataset_coco.json", lambda d: d["images"][1].pop("split"))
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
                    "backbones": {"lm": str(h.work / "no-lm")},
                }
            ),
            ("dataset_coco.json", "images[1].split: missing"),
        ),
    ]
    for name, text, names, *argv in train_cases:
        run_trial(row, name, lambda t, a=text, b=names, c=argv: train_case(t, a, b, *c))
    row.notes.append(
        f"{row.trials} inputs: {len(BAD_SPECS) + 3} specs, {len(BAD_FLAGS) + 2} flags, "
        f"{len(data_cases) + 1} dataset files, {len(train_cases) - 3} training configs; "
        "checked: exit 2, one `error:` line naming file and field, no traceback, no runs folder"
    )
