"""Rows P1, P1m, P2 and P3 (and their informational rows): every train-step arm, timed together.

The arms, each its own model built with the same seed and stepped on the same batch:

* ``itune``: I-Tuning, modules in every layer, on cached visual features (the reference);
* ``full``: the same captioner with every weight trained (P1, P1m);
* ``dropped``: Dropping, no module in the lower half of the layers (P2);
* ``live``: ``itune`` with the ViT encoder run on the pixels at every step (P3);
* ``naive``: I-Tuning recomputing K/V for every caption row (:mod:`bench.perf.naive_kv`; P1n);
* ``text``: full fine-tuning of the plain text-only LM (P1t).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bench.perf.flops import matmul_ceiling, step_flops
from bench.perf.gpu_busy import add_gpu_busy_rows
from bench.perf.memory import step_memory
from bench.perf.models import build_lm, build_vision, perturb_modules
from bench.perf.naive_kv import NaiveKVITuningModel
from bench.perf.results import Ratio, Report, Row, Target, format_mib, ratio_row
from bench.perf.settings import Mode, Sizes
from bench.perf.timing import format_times, interleaved, wall_ratio_note
from bench.perf.train_step import TrainArm
from ituning.config import ITuningConfig
from ituning.inject import ITuningModel
from ituning.loss import caption_nll


def measure_training(sizes: Sizes, mode: Mode, report: Report) -> None:
    """P1, P1m, P2, P3 and their informational rows: all train-step arms in one loop."""
    dev = mode.torch_device
    cfg = sizes.lm_architecture()
    n_layers = cfg.num_hidden_layers
    drop = sizes.drop_first if sizes.drop_first is not None else n_layers // 2
    encoder = build_vision(sizes.vision, dev)
    gen = torch.Generator().manual_seed(0)
    rows = sizes.images * sizes.captions
    ids = torch.randint(0, cfg.vocab_size - 1, (rows, sizes.tokens), generator=gen).to(dev)
    mask = torch.ones_like(ids)
    batch = (ids, mask)
    size = encoder.image_size
    pixels = torch.randn(sizes.images, 3, size, size, generator=gen).to(dev)
    with torch.no_grad():
        cached = encoder(pixels)  # what the feature cache hands the trainer

    def itune(cls: type[ITuningModel] = ITuningModel, drop_first: int = 0) -> ITuningModel:
        model = cls(build_lm(cfg, 0, dev), encoder.width, ITuningConfig(drop_first=drop_first))
        perturb_modules(model)
        return model

    def forward(model: ITuningModel, visual: Callable[[], Tensor]) -> Callable[[], Any]:
        return lambda: model(input_ids=ids, attention_mask=mask, visual=visual(), return_nll=True)

    def arm(model: ITuningModel, params: Sequence[nn.Parameter], visual=lambda: cached):
        return TrainArm(forward(model, visual), params, model, batch, mode)

    ours, dropped, naive, full = (
        itune(),
        itune(drop_first=drop),
        itune(NaiveKVITuningModel),
        itune(),
    )
    full.lm.requires_grad_(True)  # the same captioner, every weight trained
    text_lm = build_lm(cfg, 0, dev)
    text_lm.requires_grad_(True)
    arms = {
        "full": arm(full, list(full.parameters())),
        "itune": arm(ours, ours.trainable_parameters()),
        "dropped": arm(dropped, dropped.trainable_parameters()),
        "live": arm(ours, ours.trainable_parameters(), visual=lambda: encoder(pixels)),
        "naive": arm(naive, naive.trainable_parameters()),
        "text": TrainArm(
            lambda: caption_nll(text_lm, ids, mask),
            list(text_lm.parameters()),
            text_lm,
            batch,
            mode,
        ),
    }
    t = interleaved(
        {k: a.step for k, a in arms.items()},
        reps=sizes.reps,
        warmup=sizes.warmup,
        sync=mode.sync,
        desc="train steps",
    )

    flops = {k: step_flops(arms[k]) for k in ("itune", "full", "text", "dropped", "live", "naive")}

    def ratio(a: str, b: str) -> Ratio:
        return Ratio.paired(t[a].by(mode.clock), t[b].by(mode.clock))

    def note(a: str, b: str, extra: str = "") -> str:
        """Counted-FLOP ratio (noise-free reference) and wall-time ratio, next to the row."""
        parts = [extra, f"FLOP ratio {flops[a] / flops[b]:.2f}", wall_ratio_note(t[a], t[b], mode)]
        return "; ".join(p for p in parts if p)

    shape = f"{sizes.images} images × {sizes.captions} captions × {sizes.tokens} tokens"
    mem = {k: step_memory(arms[k], mode) for k in ("itune", "full", "text")}
    report.rows += [
        ratio_row(
            "P1",
            f"train step time, I-Tuning (modules in all {n_layers} layers) / full fine-tuning of "
            f"the same captioner (LM + modules, every weight trained); {shape}, cached V",
            format_times(t["itune"], mode),
            format_times(t["full"], mode),
            ratio("itune", "full"),
            Target("<=", 0.70),
            note("itune", "full"),
        ),
        ratio_row(
            "P1t",
            "train step time, I-Tuning / full fine-tuning of the plain text-only GPT-2 (no image, "
            "no modules)",
            format_times(t["itune"], mode),
            format_times(t["text"], mode),
            ratio("itune", "text"),
            None,
            note("itune", "text"),
        ),
        ratio_row(
            "P1n",
            "train step time, naive I-Tuning (each caption recomputes its image's K/V) / full "
            "fine-tuning as in P1",
            format_times(t["naive"], mode),
            format_times(t["full"], mode),
            ratio("naive", "full"),
            None,
            note("naive", "full", "what sharing K/V across an image's captions saves"),
        ),
        ratio_row(
            "P1m",
            f"peak memory of the P1 steps, I-Tuning / full fine-tuning ({mode.memory})",
            str(mem["itune"]),
            str(mem["full"]),
            Ratio.single(mem["itune"].peak / mem["full"].peak),
            Target("<=", 0.50),
            f"vs the text-only fine-tuning of P1t ({format_mib(mem['text'].peak)}): "
            f"{mem['itune'].peak / mem['text'].peak:.2f}×",
        ),
        ratio_row(
            "P2",
            f"train step time, Dropping (no module in the first {drop} of {n_layers} layers) / "
            "no Dropping",
            format_times(t["dropped"], mode),
            format_times(t["itune"], mode),
            ratio("dropped", "itune"),
            Target("<=", 0.75),
            note("dropped", "itune"),
        ),
        ratio_row(
            "P3",
            f"train step speed-up of cached V: step with the ViT encoder run live on "
            f"{sizes.images} images / step on cached features",
            format_times(t["itune"], mode),
            format_times(t["live"], mode),
            ratio("live", "itune"),
            Target(">=", 1.35),
            note("live", "itune"),
        ),
    ]
    report.memory = mem
    report.flops = flops
    if mode.mfu:
        n = sizes.ceiling_n(mode)
        ceiling = matmul_ceiling(mode, n)
        for key, label in (("itune", "I-Tuning"), ("full", "full fine-tuning")):
            achieved = flops[key] / statistics.median(t[key].by(mode.clock))
            report.rows.append(
                Row(
                    f"MFU-{key}",
                    f"model FLOP utilisation of the {label} step "
                    f"({flops[key] / 1e9:,.0f} GFLOP forward + backward)",
                    f"{achieved / 1e12:.3f} TFLOP/s",
                    f"ceiling {ceiling / 1e12:.3f} TFLOP/s ({n}² matmul, {mode.precision})",
                    f"{100 * achieved / ceiling:.1f} %",
                    "(info)",
                    None,
                )
            )
    if mode.device == "cuda":
        labels = {
            "itune": "I-Tuning step",
            "full": "full fine-tuning step",
            "dropped": "Dropping step",
        }
        add_gpu_busy_rows(
            {k: (v, arms[k].step, statistics.median(t[k].wall)) for k, v in labels.items()}, report
        )
