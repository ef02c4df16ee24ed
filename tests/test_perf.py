"""The performance benchmark: its measuring tools, its naive baseline, and a ``--quick`` run."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from bench.perf import cli, explain, flops, memory, models, render, results, settings, timing
from bench.perf.gpu_busy import Busy
from bench.perf.naive_kv import NaiveKVITuningModel
from bench.perf.runner import run
from bench.perf.train_step import TrainArm
from ituning.config import ITuningConfig
from ituning.data.coco import pycocoevalcap_coco_archive
from ituning.errors import ConfigError
from ituning.inject import ITuningModel

VIS = 32  # conftest: tiny.VIS_WIDTH


def _pair(tiny):
    """An ITuningModel and a naive twin with the same LM and module weights."""
    lm = tiny.gpt2()
    ours = ITuningModel(copy.deepcopy(lm), VIS, ITuningConfig())
    models.perturb_modules(ours, std=0.3)
    naive = NaiveKVITuningModel(lm, VIS, ITuningConfig())
    naive.load_module_state_dict(ours.module_state_dict())
    return ours, naive


def test_naive_path_gives_the_same_logits_and_beams(tiny, make_visual):
    ours, naive = _pair(tiny)
    visual = make_visual(2)
    ids = torch.randint(3, 64, (6, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = ours(input_ids=ids, visual=visual).logits
        b = naive(input_ids=ids, visual=visual).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    kw = dict(num_beams=3, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert torch.equal(ours.generate(visual, **kw), naive.generate(visual, **kw))


def test_naive_path_recomputes_kv_for_every_row_and_call(tiny, make_visual):
    _, naive = _pair(tiny)
    rows_seen = []
    module = naive.itune["0"]
    handle = module.k_down.register_forward_hook(lambda _m, i, _o: rows_seen.append(i[0].shape[0]))
    naive.generate(make_visual(2), num_beams=3, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    handle.remove()
    assert rows_seen == [6] * 4  # 2 images × 3 beams, once per decoding step (prompt + 3 more)


def test_modes_select_the_device_code_paths():
    cpu = settings.select_mode("cpu")
    assert (cpu.precision, cpu.clock, cpu.memory, cpu.mfu, cpu.threads) == (
        "fp32",
        "process",
        "profiled-peak",
        False,
        1,
    )
    cuda = settings.select_mode("cuda")
    assert (cuda.precision, cuda.clock, cuda.memory, cuda.mfu) == (
        "bf16",
        "wall",
        "cuda-peak",
        True,
    )
    assert settings.select_mode("cpu", threads=2, mfu=True).threads == 2
    full = settings.Sizes()
    assert full.for_mode(cpu) == full
    on_gpu = full.for_mode(cuda)  # millisecond steps: more warm-up and repetitions
    assert (on_gpu.warmup, on_gpu.reps, on_gpu.decode_reps) == (3, 20, 10)
    assert on_gpu.images == full.images and on_gpu.lm == full.lm
    with pytest.raises(ConfigError):
        settings.select_mode("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            run(settings.quick_sizes(), cuda, quick=True)


def test_ratio_is_the_median_of_paired_ratios():
    r = results.Ratio.paired([1.0, 3.0, 2.0], [2.0, 4.0, 2.0])
    assert (r.median, r.lo, r.hi, r.n) == (0.75, 0.5, 1.0, 3)
    assert str(r) == "0.75× (0.50–1.00, n=3)"
    assert results.Target("<=", 0.7).met(0.7) and not results.Target(">=", 3.0).met(2.9)


def test_interleaving_alternates_the_order():
    calls = []
    arms = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    times = timing.interleaved(arms, reps=2, warmup=1, sync=lambda: None, desc="t")
    assert calls == list("abc") + list("abc") + list("cba")
    assert all(len(t.wall) == len(t.cpu) == 2 for t in times.values())


def _arms(tiny, make_visual, mode):
    visual = make_visual(2)
    ids = torch.randint(3, 64, (6, 8), generator=torch.Generator().manual_seed(0))
    batch = (ids, torch.ones_like(ids))
    ours = ITuningModel(tiny.gpt2(), VIS, ITuningConfig())
    models.perturb_modules(ours)
    full = ITuningModel(tiny.gpt2(), VIS, ITuningConfig())
    full.lm.requires_grad_(True)

    def fwd(m):
        return lambda: m(input_ids=ids, attention_mask=batch[1], visual=visual, return_nll=True)

    return (
        TrainArm(fwd(ours), ours.trainable_parameters(), ours, batch, mode),
        TrainArm(fwd(full), list(full.parameters()), full, batch, mode),
    )


@pytest.mark.slow  # the profiler's first start alone takes seconds here
def test_profiled_memory_and_flops_see_what_freezing_saves(tiny, make_visual):
    mode = settings.select_mode("cpu")
    ours, full = _arms(tiny, make_visual, mode)
    for arm in (ours, full):
        arm.step()  # optimizer state exists from here on
    m_ours, m_full = memory.step_memory(ours, mode), memory.step_memory(full, mode)
    weights = memory.weight_bytes(ours.model)
    assert m_ours.parts["weights"] == weights == memory.weight_bytes(full.model)
    assert m_ours.parts["optimizer state"] == memory.optimizer_bytes(ours.optimizer)
    assert m_full.parts["optimizer state"] == memory.optimizer_bytes(full.optimizer)
    assert memory.optimizer_bytes(full.optimizer) >= 2 * 4 * sum(p.numel() for p in full.params)
    assert weights < m_ours.peak < m_full.peak
    assert flops.step_flops(ours) < flops.step_flops(full)
    assert flops.matmul_ceiling(mode, 64, reps=2) > 0


def test_bf16_autocast_path_of_the_gpu_table_runs_on_cpu(tiny, make_visual):
    """The CUDA table's step differs from the CPU one by its autocast dtype and clock only."""
    mode = settings.Mode("cpu", "bf16", "wall", "profiled-peak", True, 1)
    ours, _ = _arms(tiny, make_visual, mode)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = ours.model(input_ids=ours.ids, attention_mask=ours.mask, visual=make_visual(2))
        nll = ours.forward()
    assert logits.logits.dtype == torch.bfloat16  # the step's matmuls run in bf16 ...
    assert nll.dtype == torch.float32 and torch.isfinite(nll)  # ... its loss is summed in fp32
    before = [p.detach().clone() for p in ours.params]
    ours.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, ours.params, strict=True))
    assert flops.matmul_ceiling(mode, 64, reps=1) > 0


@pytest.mark.slow
def test_quick_run_emits_every_row(tmp_path, capsys):
    out = tmp_path / "perf.md"
    assert cli.main(["--quick", "--mfu", "--out", str(out)]) == 0
    text = out.read_text()
    printed = capsys.readouterr().out
    for row in (*results.ROW_IDS, "P1t", "P1n", "MFU-itune", "MFU-full"):
        assert f"| {row} |" in text, row
        assert f"\n{row} " in printed, row
    assert text.count("identical ids") == 2  # P4a and P4b compared token for token
    assert (tmp_path / "perf.png").stat().st_size > 10_000
    assert "quick: not judged" in text
    p5 = next(line for line in text.splitlines() if line.startswith("| P5 |"))
    if shutil.which("java") and pycocoevalcap_coco_archive() is not None:  # P5 can run: it must
        assert "not run" not in p5 and p5.endswith("| yes |")
        assert "METEOR started 1× for 2 evaluations" in p5 and "CIDEr " in p5
    else:  # without Java or the COCO annotations the row must say why it did not run
        assert p5.split("| not run: ", 1)[1].split(" |")[0].strip(), p5


def test_report_explains_each_missed_target():
    mode = settings.select_mode("cpu")
    report = results.Report(mode=mode, sizes=settings.Sizes(), quick=False)
    parts = {"weights": 500, "optimizer state": 100, "activations": 1400}
    report.memory = {
        "itune": memory.Memory(2000, parts, "profiled-peak"),
        "full": memory.Memory(3000, {**parts, "optimizer state": 1000}, "profiled-peak"),
    }
    report.flops = {"itune": 1, "full": 1}
    ratio = results.Ratio.paired([0.78], [1.0])
    report.rows = [
        results.ratio_row("P2", "dropping", "a", "b", ratio, results.Target("<=", 0.75)),
        results.ratio_row(
            "P1m", "memory", "a", "b", results.Ratio.single(0.67), results.Target("<=", 0.5)
        ),
        results.ratio_row(
            "P1", "step", "a", "b", results.Ratio.single(0.6), results.Target("<=", 0.7)
        ),
    ]
    text = render.render_markdown(report, None, "python -m bench.perf")
    missed = text.split("## Missed targets")[1].split("## Method")[0]
    assert "**P2:** 0.78×" in missed and "forward pass of the dropped layers" in missed
    assert "**P1m:**" in missed and "activations" in missed
    assert "**P1:**" not in missed  # met: nothing to explain
    assert "| P1 | step | a | b | 0.60× | ≤ 0.70× | yes |" in text


def test_a_cuda_miss_is_explained_by_how_busy_the_gpu_was():
    report = results.Report(mode=settings.select_mode("cuda"), sizes=settings.Sizes(), quick=False)
    report.flops = {"itune": 69, "full": 100}
    report.busy = {"itune": Busy(0.002, 1500, 0.063), "decode": Busy(0.03, 900, 0.1)}
    report.rows = [
        results.ratio_row(
            "P1", "step", "a", "b", results.Ratio.single(0.81), results.Target("<=", 0.7)
        ),
        results.ratio_row(
            "P4a", "beam", "a", "b", results.Ratio.single(1.1), results.Target(">=", 3.0)
        ),
    ]
    p1, p4 = explain.explain_misses(report)
    assert p1.startswith("- **P1:** 0.81× against ≤ 0.70×: the frozen LM's forward pass")
    assert "The GPU is busy 3 % of the step (2.0 ms of kernels in 63.0 ms, 1,500 launches)" in p1
    assert "the host's Python" in p1 and "a larger `--images`" in p1
    assert "busy 30 %" in p4 and "a larger `--decode-images`" in p4
    report.busy["itune"] = Busy(0.05, 1500, 0.063, (("aten::mm", 0.02, 300),))
    p1 = explain.explain_misses(report)[0]  # kernels fill the step: the kernels are the story
    assert (
        "busy 79 %" in p1 and "`aten::mm` takes 40 % of the kernel time" in p1 and "host" not in p1
    )
    tables = render.render_markdown(report, None, "x").split("## Where the GPU time goes")[1]
    assert "**itune**: 50.0 ms of kernels in a 63.0 ms step" in tables
    assert "| `aten::mm` | 300 | 20.00 | 40 % |" in tables and "**decode**" not in tables
    report.busy = {}  # the CPU table: the counted-FLOP story
    assert "noise-free reference" in explain.explain_misses(report)[0]


@pytest.mark.parametrize("flag", ["--images", "--decode-images"])
def test_batch_flags_reject_non_positive_sizes(flag, capsys):
    assert cli.main([flag, "0", "--quick"]) != 0
    err = capsys.readouterr().err
    assert f"{flag} must be at least 1, got 0" in err and err.count("\n") == 1
