"""The command lines: ``python -m ituning.train``, ``ituning.caption`` and ``ituning.attention``.

``main(argv)`` is called in-process wherever that shows the behaviour; two subprocesses check what
only a process shows (the printed metrics of a real run, the exit status of a failure).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_train_config_dict
from PIL import Image

from ituning import attention, caption
from ituning import train as train_cli


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


@pytest.fixture
def config_file(tiny_world, tiny_shapes_lm_dir, tiny_clip_dir, tmp_path) -> Path:
    raw = tiny_train_config_dict(tiny_world, tiny_shapes_lm_dir, tiny_clip_dir, tmp_path / "feat")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _python(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_train_command_trains_and_prints_its_metrics(config_file, tmp_path):
    out = tmp_path / "out"
    proc = _python(
        "-m", "ituning.train", "--config", str(config_file), "--set", "epochs=1", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines() if line.strip())
    assert float(lines["train/final_loss"]) > 0
    assert lines["run"] == f"folder: {out}"
    assert json.loads((out / "config.json").read_text())["epochs"] == 1
    assert (out / "result.json").is_file() and (out / "checkpoint").is_dir()


def test_a_bad_config_exits_2_with_one_error_line(config_file, tmp_path):
    """Fast too: the configuration is checked before torch is imported."""
    proc = _python(
        "-m", "ituning.train", "--config", str(config_file), "--set", "epochs=0", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {config_file}: epochs: Input should be greater than or equal to 1"
    ]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "epochs=0"], "epochs: Input should be greater than or equal to 1"),
        (["--set", "optim.lrr=0.1"], "optim.lrr: Extra inputs are not permitted"),
        (["--set", "epochs"], "--set 'epochs': expected KEY=VALUE"),
        (["--set", "eval.beam=x"], "eval.beam: Input should be a valid integer"),
        (["--set", "epochs.x=1"], "override 'epochs.x': epochs is a value, not a section"),
        (["--set", "epochs=true"], "epochs: expected an integer, got true"),
        (["--set", "seed=9223372036854775808"], "seed: Input should be less than or equal to"),
        (["--set", "eval.beam=1000000"], "eval.beam: Input should be less than or equal to 64"),
        (["--set", "optim.lr=.nan"], "optim.lr: Input should be a finite number"),
        (["--set", "eval.splits=" + "[" * 5000 + "]" * 5000], "--set eval.splits: line 1: nested"),
        (["--set", "eval.splits={[1]: 2}"], "a mapping key must be text, got a list"),
        (["--set", "x=!!python/name:os.system"], "--set x: line 1: YAML tag !!python/name"),
    ],
)
def test_bad_configs_and_overrides_are_one_line_errors(config_file, capsys, argv, message):
    assert train_cli.main(["--config", str(config_file), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


@pytest.mark.timeout(30)  # before the fix: the open of a FIFO blocked forever
def test_a_config_that_is_not_a_regular_file_is_a_one_line_error(tmp_path, capsys):
    fifo = tmp_path / "run.yaml"
    os.mkfifo(fifo)
    for path, problem in ((fifo, "not a regular file"), (tmp_path, "is a folder")):
        assert train_cli.main(["--config", str(path)]) == 2
        assert capsys.readouterr().err.strip().startswith(f"error: {path}: {problem}")
    assert not (tmp_path / "runs").exists()


def test_a_missing_config_file_is_a_one_line_error(tmp_path, capsys):
    assert train_cli.main(["--config", str(tmp_path / "none.yaml")]) == 2
    assert (
        capsys.readouterr().err.strip() == f"error: {tmp_path / 'none.yaml'}: config file not found"
    )


def _test_images(run: Path, n: int) -> list[tuple[Path, str]]:
    """The first ``n`` test images of the run's world and the captions its evaluation gave them."""
    world = Path(json.loads((run / "config.json").read_text())["data"]["image_root"])
    preds = json.loads((run / "predictions_test.json").read_text())
    return [(world / f"{row['image_id']}.png", row["caption"]) for row in preds[:n]]


@pytest.mark.slow
def test_caption_command_prints_one_caption_per_image(tiny_finished_run, capsys):
    images = _test_images(tiny_finished_run, 3)
    argv = [str(p) for p, _ in images]
    argv += ["--checkpoint", str(tiny_finished_run / "checkpoint"), "--beam", "2"]
    assert caption.main([*argv, "--max-new-tokens", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t") for line in lines] == [[str(p), c] for p, c in images]


@pytest.mark.slow
def test_caption_command_captions_the_readable_images_then_lists_the_bad_ones(
    tiny_finished_run, tmp_path, capsys
):
    (good, expected), (other, _) = _test_images(tiny_finished_run, 2)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(other.read_bytes()[:60])
    missing = tmp_path / "missing.jpg"
    argv = [str(truncated), str(good), str(missing), "--checkpoint"]
    argv += [str(tiny_finished_run / "checkpoint"), "--beam", "2", "--max-new-tokens", "8"]
    assert caption.main(argv) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{good}\t{expected}"]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert str(truncated) in errors[0] and "cannot read image" in errors[0]
    assert errors[1] == f"error: image not found: {missing}"


@pytest.mark.slow
def test_attention_command_writes_a_figure(tiny_finished_run, tmp_path, capsys):
    ((image, _),) = _test_images(tiny_finished_run, 1)
    out = tmp_path / "maps" / "attention.png"
    argv = [str(image), "--checkpoint", str(tiny_finished_run / "checkpoint"), "--out", str(out)]
    assert attention.main([*argv, "--beam", "2", "--max-new-tokens", "4"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == str(out)
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] > 0 and png.size[1] > 0


def test_caption_command_with_a_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    assert caption.main([str(image), "--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: checkpoint") and "nope" in err[0]


@pytest.mark.parametrize("command", [caption, attention])
@pytest.mark.parametrize("flag", [["--beam", "0"], ["--max-new-tokens", "0"]])
def test_decoding_flags_out_of_range_are_usage_errors(command, flag, tmp_path, capsys):
    argv = [str(tmp_path / "x.png"), "--checkpoint", str(tmp_path), *flag]
    if command is attention:
        argv += ["--out", str(tmp_path / "a.png")]
    with pytest.raises(SystemExit) as exit_info:
        command.main(argv)
    assert exit_info.value.code == 2
    assert f"{flag[0]} must be >= 1" in capsys.readouterr().err


def test_a_finished_run_keeps_its_attention_figure(tiny_finished_run):
    """Figure 3 of the run's first test image, listed as an artefact (MLflow logs it)."""
    from PIL import Image

    result = json.loads((tiny_finished_run / "result.json").read_text())
    figure = Path(result["artifacts"]["attention"])
    if not figure.is_absolute():
        figure = tiny_finished_run / figure.name
    with Image.open(figure) as image:
        assert image.format == "PNG" and min(image.size) > 100
