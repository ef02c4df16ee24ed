"""Training on the tiny Shapes world: the loss falls, resumption is exact, failures are failures.

Every run here has evaluation switched off (no Java), so a run is a couple of seconds; the
evaluation itself is tested on ``tiny_finished_run`` in ``test_decode.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ituning.backbones import load_lm
from ituning.data.features import LiveFeatures
from ituning.data.karpathy import read_karpathy
from ituning.distributed import DistContext
from ituning.errors import CheckpointError, ConfigError
from ituning.inject import ITuningModel
from ituning.phase_clock import is_timing_metric
from ituning.resume_state import DIGEST_FILE, TrainState, load_state, save_state
from ituning.schedule import warmup_cosine
from ituning.stage_loop import INJECT_NONFINITE_ENV, NonFiniteLossError, StageTrainer
from ituning.text import CaptionCodec
from ituning.train import RESULT_FILE, load_data, run_experiment
from ituning.vision import load_vision


@pytest.fixture(scope="module", autouse=True)
def _threads(one_thread):
    yield


class Interrupt(Exception):
    """Raised from the metric callback: a crash at a known step."""


class Recorder:
    """Collects ``(name, value, step)`` metrics and stage names; can crash at a given step."""

    def __init__(self, crash_at: tuple[str, int] | None = None) -> None:
        self.metrics: list[tuple[str, float, int]] = []
        self.stages: list[str] = []
        self.crash_at = crash_at

    def metric(self, name: str, value: float, step: int) -> None:
        if (name, step) == self.crash_at:
            raise Interrupt(f"{name} step {step}")
        self.metrics.append((name, value, step))

    def stage(self, name: str) -> None:
        self.stages.append(name)

    def losses(self, stage: str = "train") -> dict[int, float]:
        return {s: v for n, v, s in self.metrics if n == f"{stage}/loss"}


def _run(cfg, out: Path, rec: Recorder | None = None):
    rec = rec or Recorder()
    result = run_experiment(cfg, out, on_metric=rec.metric, on_stage=rec.stage, progress=False)
    return result, rec


def _weights(out: Path) -> bytes:
    return (out / "checkpoint" / "modules.safetensors").read_bytes()


def _untimed(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not is_timing_metric(k)}


@pytest.fixture(scope="module")
def straight_run(make_train_config, tmp_path_factory):
    """An uninterrupted captioning run: 2 epochs x 4 steps, checkpoints every 3 steps."""
    cfg = make_train_config()
    out = tmp_path_factory.mktemp("straight") / "run"
    result, rec = _run(cfg, out)
    return cfg, out, result, rec


@pytest.fixture(scope="module")
def straight_vlp_run(make_train_config, tmp_path_factory):
    """The same with a VLP stage first (8 region images: one step an epoch, 2 epochs)."""
    cfg = make_train_config(vlp=True, vlp_epochs=2)
    out = tmp_path_factory.mktemp("straight_vlp") / "run"
    result, rec = _run(cfg, out)
    return cfg, out, result, rec


def test_a_run_reports_its_training_and_writes_its_folder(straight_run):
    cfg, out, result, rec = straight_run
    assert rec.stages == ["load", "features", "train", "checkpoint", "evaluate"]
    losses = rec.losses()
    assert sorted(losses) == list(range(8))
    assert result.metrics["train/final_loss"] == losses[7]
    assert result.metrics["trainable_params"] == 2 * (2 * 32 * 16 + 2 * 32 * 16 + 3 * 16 + 32)
    assert result.metrics["train_captions_per_s"] > 0
    lrs = [v for n, v, _ in rec.metrics if n == "train/lr"]
    assert len(lrs) == 8 and lrs[0] == pytest.approx(1e-3) and lrs[-1] < lrs[1]
    assert json.loads((out / "config.json").read_text()) == json.loads(cfg.canonical_json())
    assert json.loads((out / RESULT_FILE).read_text()) == json.loads(json.dumps(result.to_json()))
    state = load_state(out / "state")
    assert state.completed_stages == ["train"] and state.global_step == 8


def test_training_loss_falls(make_train_config, tmp_path):
    cfg = make_train_config(epochs=5, **{"optim.lr": 1e-2, "optim.warmup_ratio": 0.0})
    _, rec = _run(cfg, tmp_path / "run")
    losses = [rec.losses()[s] for s in range(20)]
    first, last = losses[0], sum(losses[-4:]) / 4
    assert last < first - 0.3, losses


def test_a_finished_folder_returns_its_result_without_training(straight_run):
    cfg, out, result, _ = straight_run
    again, rec = _run(cfg, out)
    assert again.to_json() == json.loads(json.dumps(result.to_json()))
    assert rec.metrics == [] and rec.stages == []


def test_a_folder_of_another_configuration_is_refused(straight_run, make_train_config):
    _, out, _, _ = straight_run
    with pytest.raises(ConfigError, match=r"another configuration \(differs in epochs\)"):
        run_experiment(make_train_config(epochs=3), out, progress=False)


def test_resume_after_a_crash_is_exact(straight_run, tmp_path):
    cfg, straight_out, straight, straight_rec = straight_run
    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        _run(cfg, out, Recorder(crash_at=("train/loss", 4)))
    assert not (out / RESULT_FILE).exists()
    assert load_state(out / "state").global_step == 3  # the checkpoint after step 2
    result, rec = _run(cfg, out)
    assert sorted(rec.losses()) == [3, 4, 5, 6, 7]  # steps 3 and 4 run again
    assert rec.losses() == {s: v for s, v in straight_rec.losses().items() if s >= 3}
    assert _weights(out) == _weights(straight_out)
    assert _untimed(result.metrics) == _untimed(straight.metrics)


@pytest.mark.parametrize(
    ("crash_at", "resumed_from"),
    [
        (("vlp/loss", 1), ("vlp", 0)),  # mid-VLP, before its first checkpoint: starts afresh
        (("train/loss", 1), ("vlp", 2)),  # VLP done, captioning not yet checkpointed
        (("train/loss", 4), ("train", 3)),  # captioning checkpointed after step 2
    ],
)
def test_resume_with_a_vlp_stage_is_exact(straight_vlp_run, tmp_path, crash_at, resumed_from):
    cfg, straight_out, straight, straight_rec = straight_vlp_run
    out = tmp_path / "run"
    with pytest.raises(Interrupt):
        _run(cfg, out, Recorder(crash_at=crash_at))
    state = load_state(out / "state")
    if resumed_from == ("vlp", 0):
        assert state is None
    else:
        assert (state.stage, state.global_step) == resumed_from
    result, rec = _run(cfg, out)
    assert _weights(out) == _weights(straight_out)
    assert _untimed(result.metrics) == _untimed(straight.metrics)
    for stage in ("vlp", "train"):
        redone = rec.losses(stage)
        assert redone == {s: straight_rec.losses(stage)[s] for s in redone}


def test_a_non_finite_loss_fails_the_run(make_train_config, tmp_path, monkeypatch):
    monkeypatch.setenv(INJECT_NONFINITE_ENV, "2")
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="train step 2"):
        _run(make_train_config(), out)
    assert not (out / RESULT_FILE).exists()
    assert not (out / "checkpoint").exists()


def test_non_finite_steps_can_be_skipped_instead(make_train_config, tmp_path, monkeypatch):
    monkeypatch.setenv(INJECT_NONFINITE_ENV, "2")
    result, rec = _run(make_train_config(fail_on_nonfinite=False), tmp_path / "run")
    assert sorted(rec.losses()) == [0, 1, 3, 4, 5, 6, 7]
    assert ("train/skipped_steps", 1.0, 2) in rec.metrics
    assert result.metrics["train/final_loss"] == rec.losses()[7]


def _trainer_parts(cfg, state_dir: Path):
    lm, tokenizer = load_lm(cfg.backbones.lm)
    encoder = load_vision(cfg.backbones.vision, None)
    torch.manual_seed(cfg.seed)
    model = ITuningModel(lm, encoder.width, cfg.itune)
    train = read_karpathy(cfg.data.captions, cfg.data.image_root).split("train")
    visual = LiveFeatures(encoder, train, dtype=torch.float32)
    codec = CaptionCodec(tokenizer, max_tokens=cfg.max_caption_tokens)
    dist = DistContext(rank=0, world_size=1, device=torch.device("cpu"))
    trainer = StageTrainer(model, codec, visual, cfg, dist, state_dir, progress=False)
    return model, trainer, train


def test_only_the_modules_train(make_train_config, tmp_path):
    cfg = make_train_config(epochs=1)
    model, trainer, train = _trainer_parts(cfg, tmp_path / "state")
    lm_before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    modules_before = {k: v.clone() for k, v in model.module_state_dict().items()}
    curve = trainer.fit("train", train.records, cfg.epochs)
    assert len(curve) == 4
    for key, value in model.lm.state_dict().items():
        assert torch.equal(value, lm_before[key]), key
    assert all(p.grad is None for p in model.lm.parameters())
    changed = [
        k for k, v in model.module_state_dict().items() if not torch.equal(v, modules_before[k])
    ]
    assert sorted(changed) == sorted(modules_before)  # every module tensor moved


def test_the_micro_batch_split_does_not_change_a_step(make_train_config, tmp_path):
    """The loss is a per-token mean over the whole optimiser step, however it is accumulated."""
    runs = {}
    for micro in (1, 6):
        cfg = make_train_config(epochs=1, micro_batch_images=micro, **{"optim.lr": 1e-2})
        model, trainer, train = _trainer_parts(cfg, tmp_path / f"state{micro}")
        curve = trainer.fit("train", train.records, cfg.epochs)
        runs[micro] = ([v for _, v in curve], model.module_state_dict())
    (loss_a, w_a), (loss_b, w_b) = runs[1], runs[6]
    assert loss_a == pytest.approx(loss_b, abs=1e-5)
    for key in w_a:
        if key.endswith("k_down.bias"):
            continue  # see below
        # Adam divides by the gradient's running RMS, which turns float rounding in near-zero
        # gradients (summation order differs between the splits) into ~1e-6 weight noise; a wrong
        # normalisation would move weights by ~lr = 1e-2.
        torch.testing.assert_close(w_a[key], w_b[key], atol=2e-5, rtol=1e-4)


def test_the_key_bias_gets_no_real_gradient(make_train_config, tmp_path):
    """``b^K`` of eq. (2) adds ``q . b^K`` to every visual position's logit alike, which softmax
    ignores: its true gradient is zero and what autograd returns is float noise (which Adam's
    normalisation turns into lr-sized steps). Weight comparisons across batch splits skip it."""
    cfg = make_train_config(epochs=1)
    model, trainer, train = _trainer_parts(cfg, tmp_path / "state")
    trainer.fit("train", train.records, cfg.epochs)  # non-zero W_up^O: every gradient flows
    batcher_ids, mask = trainer.codec.encode([r.captions[0] for r in train.records[:4]])
    visual = trainer.visual([r.image_id for r in train.records[:4]]).float()
    out = model(input_ids=batcher_ids, attention_mask=mask, visual=visual)
    out.logits[mask.bool()].logsumexp(-1).sum().backward()
    for key, module in model.itune.items():
        # zero but for float32 rounding (~1e-9 here): five orders below the query bias's gradient
        assert module.k_down.bias.grad.abs().max() < 1e-5 * module.q_down.bias.grad.abs().max(), key


def test_control_and_grounding_only_when_requested(straight_run):
    _, _, result, _ = straight_run
    assert not any(k.startswith(("control/", "grounding/", "test/")) for k in result.metrics)


def test_an_unreadable_training_state_is_a_one_line_error(make_train_config, tmp_path):
    out = tmp_path / "run"
    (out / "state").mkdir(parents=True)
    (out / "state" / "train_state.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="train_state.pt: training state is truncated"):
        run_experiment(make_train_config(), out, progress=False)
    torch.save({"stage": "train"}, out / "state" / "train_state.pt")
    with pytest.raises(CheckpointError, match="not a training state of this version"):
        run_experiment(make_train_config(), out, progress=False)


def _state(step: int) -> TrainState:
    return TrainState(
        stage="train", global_step=step, modules={"w": torch.arange(64.0)}, optimizer={},
        scheduler={}, rng=torch.zeros(4, dtype=torch.uint8),
    )  # fmt: skip


def test_a_training_state_with_a_flipped_byte_is_refused_not_resumed(tmp_path):
    """A flipped tensor byte loaded silently (``weights_only`` checks code, not content): the
    resumed run would have continued from other weights."""
    path = save_state(_state(3), tmp_path)
    assert load_state(tmp_path).global_step == 3
    data = bytearray(path.read_bytes())
    data[data.index(torch.arange(64.0).numpy().tobytes()) + 40] ^= 0x01  # inside tensor "w"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"train_state.pt: training state is truncated or co"):
        load_state(tmp_path)
    (tmp_path / DIGEST_FILE).unlink()  # a state of older code has no record: not checked
    assert load_state(tmp_path).modules["w"][10] != 10.0


def test_a_kill_between_the_record_and_the_rename_leaves_a_loadable_state(tmp_path, monkeypatch):
    save_state(_state(1), tmp_path)
    with pytest.raises(KeyboardInterrupt), monkeypatch.context() as m:
        m.setattr("ituning.resume_state.fault_point", _interrupt)  # after the record
        save_state(_state(2), tmp_path)
    assert load_state(tmp_path).global_step == 1  # the record still accepts the old state
    save_state(_state(3), tmp_path)
    assert load_state(tmp_path).global_step == 3


def _interrupt(name: str) -> None:
    raise KeyboardInterrupt(name)


def test_learning_rate_warms_up_linearly_then_decays_to_zero_by_cosine():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=2.0)
    sched = warmup_cosine(opt, total_steps=10, warmup_ratio=0.2)  # 2 warm-up steps
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    expected = [1.0, 2.0] + [1.0 + math.cos(math.pi * i / 8) for i in range(8)]
    assert lrs == pytest.approx(expected)
    assert sched.get_last_lr()[0] == pytest.approx(0.0)  # after the last step
    flat = warmup_cosine(torch.optim.SGD([param], lr=1.0), total_steps=4, warmup_ratio=0.0)
    assert flat.get_last_lr()[0] == 1.0


def test_live_features_train_exactly_like_cached_ones(straight_run, make_train_config, tmp_path):
    _, straight_out, straight, _ = straight_run
    result, _ = _run(make_train_config(features="live"), tmp_path / "run")
    assert _weights(tmp_path / "run") == _weights(straight_out)
    assert result.metrics["train/final_loss"] == straight.metrics["train/final_loss"]


def test_an_evaluation_limit_keeps_every_nocaps_domain(make_train_config):
    cfg = make_train_config(
        **{"data.limit_eval_images": 4, "eval.nocaps": True, "eval.splits": ["test", "val"]}
    )
    data = load_data(cfg)
    assert [r.domain for r in data.evals["nocaps"]] == [
        "in-domain",
        "near-domain",
        "out-of-domain",
        "in-domain",
    ]
    assert len(data.evals["test"]) == len(data.evals["val"]) == 4
    assert len(data.train) == 24 and data.vlp is None


def test_a_crash_after_training_resumes_without_training_again(straight_run, tmp_path):
    cfg, straight_out, straight, _ = straight_run
    out = tmp_path / "run"

    def crash_at_evaluation(name: str) -> None:
        if name == "evaluate":
            raise Interrupt(name)

    with pytest.raises(Interrupt):
        run_experiment(cfg, out, on_stage=crash_at_evaluation, progress=False)
    assert not (out / RESULT_FILE).exists()
    result, rec = _run(cfg, out)
    assert rec.metrics == []  # no step ran again
    assert _weights(out) == _weights(straight_out)
    assert _untimed(result.metrics) == _untimed(straight.metrics)
    assert result.metrics["train_captions_per_s"] > 0  # the throughput of the run that trained


@pytest.mark.slow
def test_a_shared_scorer_starts_meteor_once_across_runs(make_train_config, tmp_path):
    from ituning.metrics import CaptionScorer

    evaluation = {"splits": ["test"], "nocaps": False, "beam": 1, "max_new_tokens": 6}
    with CaptionScorer(metrics=("bleu", "meteor", "cider")) as scorer:
        for seed in (0, 1):
            cfg = make_train_config(**{"epochs": 1, "seed": seed, "eval": evaluation})
            result = run_experiment(cfg, tmp_path / f"run{seed}", progress=False, scorer=scorer)
            assert "test/meteor" in result.metrics
        assert scorer.meteor_starts == 1
