"""The preflight: every problem of a paper-profile sweep found before anything trains, one line
each with its fix, in one round (exit 2, nothing written); images decoded once and remembered."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bench.faults.inputs import write_paper_root, write_paper_weights
from bench.sweep import preflight as P
from bench.sweep.cli import main as sweep_main
from ituning.data.readable_images import unreadable_images

TRUNCATED = "coco/images/train2014/COCO_train2014_000000000001.jpg"


@pytest.fixture
def weights(tiny_assets, tmp_path) -> Path:
    return write_paper_weights(tmp_path / "weights", tiny_assets / "backbones")


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


def _truncate(root: Path) -> Path:
    image = root / TRUNCATED
    image.write_bytes(image.read_bytes()[:40])
    return image


def test_every_problem_is_one_line_in_one_round_and_nothing_is_written(
    tmp_path, monkeypatch, capsys
):
    root = write_paper_root(tmp_path / "data", vlp=False)
    bad = _truncate(root)
    monkeypatch.setenv("PATH", str(tmp_path / "no-java"))  # no java on PATH
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))  # no weights in the cache
    runs = tmp_path / "runs"
    argv = ["smoke", "--profile", "paper", "--scale", "tiny", "--data-root", str(root)]
    assert sweep_main([*argv, "--runs-dir", str(runs), "--quiet"]) == 2
    errors = _errors(capsys)
    assert errors[0].startswith("error: java: not found on PATH") and "openjdk" in errors[0]
    assert any(str(bad) in e and "--skip-bad-images" in e for e in errors)
    lms = [e for e in errors if e.startswith("error: language model gpt2")]
    assert len(lms) == 2 and all("hf download" in e for e in lms)  # smoke: base and large
    assert any(e.startswith("error: vision encoder ViT-B-16 (openai)") for e in errors)
    assert len(errors) == 5 and not runs.exists()


def test_the_dry_run_prints_the_plan_then_the_problems(tmp_path, weights, capsys):
    argv = ["smoke", "--profile", "paper", "--data-root", str(tmp_path / "nope")]
    assert sweep_main([*argv, "--weights", str(weights), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert "sweep smoke" in out and "2 runs" in out
    # the cost estimate times the (tiny) architectures over the datasets' published sizes
    assert "2 of 2 points" in out
    assert "image counts of captions, NoCaps, Visual Genome: the published sizes" in out
    assert err.strip().splitlines() == [
        f"error: --data-root {tmp_path / 'nope'}: no such folder; it must hold coco/, nocaps/ and "
        "visual_genome/ (and flickr30k/ for Flickr30k points; layout: bench/sweep/paper_profile.py)"
    ]


def test_images_are_decoded_once_and_remembered_until_they_change(tmp_path, monkeypatch):
    import ituning.data.images as images

    root = write_paper_root(tmp_path / "data", vlp=False)
    paths = sorted((root / "coco" / "images").rglob("*.jpg"))
    cache = tmp_path / "cache.json"
    decoded = []
    real = images.load_image
    monkeypatch.setattr(images, "load_image", lambda p: decoded.append(p) or real(p))
    assert unreadable_images(paths, cache, progress=False) == {}
    assert len(decoded) == len(paths) == 5
    decoded.clear()
    assert unreadable_images(paths, cache, progress=False) == {}
    assert decoded == []  # all remembered
    bad = _truncate(root)
    found = unreadable_images(paths, cache, progress=False)
    assert decoded == [bad] and list(found) == [bad] and "cannot read image" in found[bad]


def test_both_datasets_are_checked_and_a_full_disk_is_named_with_the_space_the_cache_needs(
    tmp_path, weights, monkeypatch
):
    """Karpathy's Flickr30k file and images go through the same checks as COCO's; the feature
    cache counts both; a missing file is one line naming where it belongs, and only the points
    of its dataset need it."""
    from bench.sweep.profiles import get_profile
    from bench.sweep.spec import parse_spec

    root = write_paper_root(tmp_path / "data", vlp=False)
    profile = get_profile(
        "paper", runs_dir=tmp_path / "runs", data_root=root, scale="tiny", weights=weights
    )
    plans = profile.plan(parse_spec("name: t\naxes: {dataset: [coco, flickr30k]}\n"))
    coco, flickr = plans
    assert flickr.config.data.captions == root / "flickr30k" / "dataset_flickr30k.json"
    assert flickr.config.data.nocaps is None and flickr.config.data.instances is None
    assert coco.run_id != flickr.run_id and flickr.point.label().endswith(" flickr30k s0")
    assert P.problems(profile, plans, progress=False) == []
    usage = shutil.disk_usage(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(shutil, "disk_usage", lambda _: usage._replace(free=10))
        (line,) = P.problems(profile, plans, progress=False)
    # COCO's trained and tested images and NoCaps' (7, as without Flickr30k), Flickr30k's 3
    assert "the feature cache needs" in line and "for 10 images" in line
    assert "KB each" in line and "--runs-dir" in line
    (root / "flickr30k" / "dataset_flickr30k.json").unlink()
    assert P.problems(profile, [coco], progress=False) == []
    (line,) = P.problems(profile, plans, progress=False)
    assert line == (
        f"{root / 'flickr30k' / 'dataset_flickr30k.json'}: missing; put Karpathy's Flickr30k "
        "split file there (data root layout: bench/sweep/paper_profile.py)"
    )


@pytest.mark.slow
def test_a_sweep_from_local_weights_skips_bad_images_when_asked_and_lists_them(tmp_path, weights):
    """``--weights``: the paper profile trains from local folders (their own depth and width,
    the folder and its weights digest recorded); a bad image stops the sweep unless skipped."""
    import json

    from bench.sweep.paper_profile import VISION_FOLDER

    root = write_paper_root(tmp_path / "data", vlp=False)
    bad = _truncate(root)
    runs = tmp_path / "runs"
    argv = ["smoke", "--profile", "paper", "--scale", "tiny", "--data-root", str(root)]
    argv += ["--weights", str(weights), "--runs-dir", str(runs), "--workers", "1", "--quiet"]
    assert sweep_main(argv) == 2  # refused: a bad image is a problem unless asked to skip it
    assert sweep_main([*argv, "--skip-bad-images"]) == 0
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("paper-tiny")
    finished = client.search_runs([exp.experiment_id])
    assert {r.data.params["lm.name"] for r in finished} == {
        str(weights / "gpt2"),
        str(weights / "gpt2-large"),
    }
    large = next(r for r in finished if r.data.params["lm"] == "large")
    layers = int(large.data.params["lm.layers"])
    from bench.sweep.axes import Drop

    assert int(large.data.params["drop"]) == Drop(fraction=0.5).resolve(layers)  # folder's depth
    for run in finished:
        assert run.info.status == "FINISHED" and run.data.params["data.skip_bad_images"] == "True"
        assert run.data.params["backbones.vision"] == str(weights / VISION_FOLDER)
        folder = Path(run.data.tags["run_folder"])
        meta = json.loads((folder / "checkpoint" / "ituning.json").read_text())
        assert len(meta["lm"]["weights_sha256"]) == 64
        assert str(bad) in (folder / "skipped_images.json").read_text()
        logged = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert "skipped_images.json" in logged


def test_a_missing_weight_folder_is_one_line_naming_the_download(tmp_path, weights, capsys):
    root = write_paper_root(tmp_path / "data", vlp=False)
    (weights / "gpt2-medium").unlink()  # the symlink only: the tiny backbones stay
    argv = ["smoke", "--profile", "paper", "--data-root", str(root), "--weights", str(weights)]
    assert (
        sweep_main([*argv, "--runs-dir", str(tmp_path / "runs"), "--dry-run", "--no-estimate"]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gpt2-medium holds no model" in err[0]
    assert f"hf download gpt2-medium --local-dir {weights / 'gpt2-medium'}" in err[0]
