"""Data-parallel training: two CPU processes on gloo (``torchrun``) train like one process.

The loss of a step is a per-token mean over the whole effective batch, and every rank derives the
same batch plan from ``(seed, epoch)``, so splitting a step over ranks changes only the order of
float additions.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as torch_dist
import yaml
from conftest import torch_threads
from safetensors.torch import load_file

from ituning.distributed import DistContext, setup, teardown
from ituning.train import run_experiment


def _modules(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoint" / "modules.safetensors"))


@pytest.mark.slow
def test_two_gloo_processes_train_like_one(make_train_config, tmp_path):
    # 5 images a step over 2 ranks (shares 3 and 2) and one image per micro-batch: the uneven case,
    # after a VLP stage, so that the stage hand-over runs under DDP too.
    cfg = make_train_config(batch_captions=25, micro_batch_images=1, vlp=True, vlp_epochs=1)
    with torch_threads(1):
        single = run_experiment(cfg, tmp_path / "single", progress=False)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "ituning.train", "--config", str(config), "--out", str(tmp_path / "ddp"),
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("train/final_loss") == 1  # only rank 0 reports

    ddp_weights, single_weights = _modules(tmp_path / "ddp"), _modules(tmp_path / "single")
    assert ddp_weights.keys() == single_weights.keys()
    for key, value in single_weights.items():
        if key.endswith("k_down.bias"):
            continue  # no true gradient: it drifts on float noise (test_training.py)
        torch.testing.assert_close(ddp_weights[key], value, atol=1e-5, rtol=1e-4, msg=key)
    ddp_result = yaml.safe_load((tmp_path / "ddp" / "result.json").read_text())
    assert ddp_result["metrics"]["train/final_loss"] == pytest.approx(
        single.metrics["train/final_loss"], abs=1e-5
    )


def test_without_torchrun_there_is_one_process(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    ctx = setup("cpu")
    assert ctx == DistContext(rank=0, world_size=1, device=torch.device("cpu"))
    assert ctx.is_main and not ctx.enabled
    assert ctx.sum(2.5) == 2.5
    ctx.barrier()  # a no-op without a process group


def test_a_process_group_of_the_caller_is_left_alone(tmp_path, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    torch_dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        ctx = setup("cpu")
        assert (ctx.rank, ctx.world_size, ctx.owns_group) == (0, 1, False)
        teardown(ctx)
        assert torch_dist.is_initialized()
    finally:
        torch_dist.destroy_process_group()
