"""The paper profile from local weight folders (``--weights``): a sweep trains on them end to end,
each run recording the folder and a digest of its weights; a missing folder is one line naming
the command that fills it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_CLIP_CFG, build_tiny_gpt2, build_tiny_tokenizer
from mlflow import MlflowClient

from bench.faults.inputs import write_paper_root
from bench.sweep.cli import main as sweep_main
from bench.sweep.paper_profile import PAPER_LMS, VISION_FOLDER
from ituning.vision import save_clip_folder


def _weights(root: Path) -> Path:
    import open_clip
    import torch

    for i, lm in enumerate(PAPER_LMS.values()):
        model = build_tiny_gpt2(n_layer=2 + 2 * i, seed=i)
        model.save_pretrained(root / lm.name)
        build_tiny_tokenizer().save_pretrained(root / lm.name)
    torch.manual_seed(0)
    save_clip_folder(open_clip.CLIP(**TINY_CLIP_CFG), TINY_CLIP_CFG, root / VISION_FOLDER)
    return root


@pytest.mark.slow
def test_a_paper_sweep_trains_from_local_weight_folders(tmp_path, monkeypatch):
    data = write_paper_root(tmp_path / "data", vlp=False)
    weights = _weights(tmp_path / "weights")
    runs = tmp_path / "runs"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from the Hub
    argv = ["smoke", "--profile", "paper", "--scale", "tiny", "--data-root", str(data)]
    argv += ["--weights", str(weights), "--runs-dir", str(runs), "--workers", "1", "--quiet"]
    assert sweep_main(argv) == 0
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    exp = client.get_experiment_by_name("paper-tiny")
    finished = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
    assert {r.data.params["lm.name"] for r in finished} == {
        str(weights / "gpt2"),
        str(weights / "gpt2-large"),
    }
    large = next(r for r in finished if r.data.params["lm"] == "large")
    assert large.data.params["drop"] == "3"  # half of the folder's own 6 layers
    assert {r.data.params["backbones.vision"] for r in finished} == {str(weights / VISION_FOLDER)}
    for run in finished:
        meta = json.loads(
            (Path(run.data.tags["run_folder"]) / "checkpoint" / "ituning.json").read_text()
        )
        assert len(meta["lm"]["weights_sha256"]) == 64
        assert meta["vision"]["name"] == str(weights / VISION_FOLDER)


def test_a_missing_weight_folder_is_one_line_naming_the_download(tmp_path, capsys):
    data = write_paper_root(tmp_path / "data", vlp=False)
    weights = _weights(tmp_path / "weights")
    (weights / "gpt2-medium" / "config.json").unlink()
    capsys.readouterr()
    argv = ["smoke", "--profile", "paper", "--data-root", str(data), "--weights", str(weights)]
    assert sweep_main([*argv, "--runs-dir", str(tmp_path / "runs"), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gpt2-medium holds no model" in err[0]
    assert f"hf download gpt2-medium --local-dir {weights / 'gpt2-medium'}" in err[0]
