"""Which ClipCap configuration has the 43M trainable parameters the I-Tuning paper prints?

The paper's Tables 1-2 list "ClipCap (GPT2-Large)" at 43M with the scores of ClipCap's own
"Transformer" row (COCO CIDEr 113.08, BLEU-4 33.53): the transformer mapper with a frozen GPT-2.
ClipCap's public code runs that variant on GPT-2 base (``gpt2``) with prefix 40, clip length 40 and
8 layers (its README's command), from CLIP ViT-B/32 (d_clip 512) or RN50x4 (640: ``--is_rn``, and
the CLIP of its published transformer checkpoint). Counted in closed form
(:func:`~ituning.methods.mappers.mapper_parameter_count`, LM sizes from the shipped configurations):

* **No configuration at GPT-2 large gives 43M** with d_clip 512: the published transformer is
  131.3M there, and the nearest in the whole space searched are 39.4M and 45.9M.
* The published transformer configuration is not 43M either: 53.6M (d_clip 512) / 57.5M (640) on
  GPT-2 base.
* With d_clip 512, nothing in the space searched (prefix and clip length 10/20/40, 1-8 layers, LM
  frozen or fine-tuned, either mapper) is within 43M +- 1M on any GPT-2; the nearest are 41.8M
  (base, 8 layers, clip 10) and 44.1M (medium, 4 layers, clip 20; base, 6 layers, clip 40).
* With d_clip 640 (RN50x4), **GPT-2 base, 8 layers, clip length 10, LM frozen gives 42.73M**
  (prefix 10) / 42.75M (prefix 40), 43M when rounded. Clip length 10 is ``train.py``'s default
  (``--prefix_length_clip``), i.e. the README's command without that flag: the likeliest origin of
  the number (an inference: neither paper states the configuration it counted). The other 640
  configurations in range are unpublished shapes (5 or 7 layers; 2 layers on medium/large).
* Cross-check: ClipCap's other row, "MLP + GPT2 tuning" at 156M, is the MLP variant on GPT-2 base:
  31.5M + 124.4M = 155.9M (156.4M at 640).

So 43M is ClipCap's GPT-2 base transformer, and "(GPT2-Large)" is a mislabel; the published
transformer configuration on GPT-2 large would train 131.26M.

Trainable parameters of each method (ClipCap at d_clip 512 with its published settings; I-Tuning
over ViT-B-16 patch tokens, d_vis 768, r = d_lm / 2):

| LM          | d_lm |      itune |        full | clipcap-transformer | clipcap-mlp |
| ----------- | ---- | ---------- | ----------- | ------------------- | ----------- |
| gpt2        |  768 | 14,178,816 | 138,618,624 |          53,587,968 | 155,908,608 |
| gpt2-medium | 1024 | 44,101,632 | 398,924,800 |          88,227,840 | 409,888,768 |
| gpt2-large  | 1280 | 94,487,040 | 868,517,120 |         131,256,320 | 859,246,080 |

The published transformer configuration (prefix 40, clip 40, 8 layers, LM frozen) by CLIP width:

| LM          |  d_clip 512 |  d_clip 640 |
| ----------- | ----------- | ----------- |
| gpt2        |  53,587,968 |  57,520,128 |
| gpt2-medium |  88,227,840 |  93,470,720 |
| gpt2-large  | 131,256,320 | 137,809,920 |

Configurations within 43M +- 1M (P prefix length, C clip length, L layers; LM frozen unless
marked ``+ LM``); none has d_clip 512:

| d_clip | LM          | configuration          |  trainable |
| ------ | ----------- | ---------------------- | ---------- |
| 640    | gpt2        | transformer P10 C10 L8 | 42,728,448 |
| 640    | gpt2        | transformer P10 C20 L7 | 42,926,592 |
| 640    | gpt2        | transformer P10 C40 L5 | 43,322,880 |
| 640    | gpt2        | transformer P20 C10 L8 | 42,736,128 |
| 640    | gpt2        | transformer P20 C20 L7 | 42,934,272 |
| 640    | gpt2        | transformer P20 C40 L5 | 43,330,560 |
| 640    | gpt2        | transformer P40 C10 L8 | 42,751,488 |
| 640    | gpt2        | transformer P40 C20 L7 | 42,949,632 |
| 640    | gpt2        | transformer P40 C40 L5 | 43,345,920 |
| 640    | gpt2-medium | transformer P10 C40 L2 | 43,059,200 |
| 640    | gpt2-medium | transformer P20 C40 L2 | 43,069,440 |
| 640    | gpt2-medium | transformer P40 C40 L2 | 43,089,920 |
| 640    | gpt2-large  | transformer P10 C20 L2 | 42,657,280 |
| 640    | gpt2-large  | transformer P20 C20 L2 | 42,670,080 |
| 640    | gpt2-large  | transformer P40 C20 L2 | 42,695,680 |

Nearest below and above 43M at d_clip 512:

| LM          | below                              | above                              |
| ----------- | ---------------------------------- | ---------------------------------- |
| gpt2        | transformer P40 C10 L8: 41,768,448 | transformer P10 C40 L6: 44,115,456 |
| gpt2-medium | transformer P40 C10 L4: 38,881,280 | transformer P10 C20 L4: 44,103,680 |
| gpt2-large  | transformer P40 C40 L1: 39,434,240 | transformer P10 C10 L3: 45,931,520 |

Regenerate the tables with ``python -m ituning.methods.clipcap_accounting`` (:func:`render`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

import torch
from transformers import AutoModelForCausalLM

from ituning.backbones import lm_config
from ituning.methods.clipcap_config import ClipCapConfig
from ituning.methods.mappers import mapper_parameter_count
from ituning.module import ITuningModule

LMS = ("gpt2", "gpt2-medium", "gpt2-large")
PAPER_CLIPCAP = 43_000_000  # "ClipCap (GPT2-Large)", Tables 1-2
TOLERANCE = 1_000_000
#: CLIP embedding widths ClipCap's code supports: ViT-B/32 and RN50x4 (``--is_rn``).
D_CLIPS = (512, 640)
D_VIS = 768  # ViT-B-16's token width, what the I-Tuning modules attend to
LENGTHS = (10, 20, 40)
LAYERS = range(1, 9)


@functools.cache
def lm_shape(lm: str) -> tuple[int, int, int]:
    """(d_lm, layers, parameters with tied embeddings once) of a shipped LM, built on meta."""
    cfg = lm_config(lm)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return cfg.hidden_size, cfg.num_hidden_layers, sum(p.numel() for p in model.parameters())


def clipcap_trainable(lm: str, d_clip: int, config: ClipCapConfig) -> int:
    """ClipCap's trainable parameters: the mapper, and the LM when ``config.train_lm``."""
    d_lm, _, lm_params = lm_shape(lm)
    return mapper_parameter_count(d_clip, d_lm, config) + lm_params * config.train_lm


def method_counts(lm: str, d_clip: int = 512) -> dict[str, int]:
    """Trainable parameters of each method at its defaults on ``lm``."""
    d_lm, layers, lm_params = lm_shape(lm)
    itune = layers * ITuningModule.num_parameters(d_lm, D_VIS, d_lm // 2)
    return {
        "itune": itune,
        "full": itune + lm_params,
        **{
            m: clipcap_trainable(lm, d_clip, ClipCapConfig.for_method(m))
            for m in ("clipcap-transformer", "clipcap-mlp")
        },
    }


def search_space() -> Iterator[ClipCapConfig]:
    """Both mappers over prefix/clip lengths 10/20/40 and 1-8 layers, LM frozen or fine-tuned."""
    for train_lm, prefix in itertools.product((False, True), LENGTHS):
        yield ClipCapConfig(mapper="mlp", prefix_length=prefix, train_lm=train_lm)
        for clip, layers in itertools.product(LENGTHS, LAYERS):
            yield ClipCapConfig(
                mapper="transformer",
                prefix_length=prefix,
                clip_length=clip,
                num_layers=layers,
                train_lm=train_lm,
            )


def describe(config: ClipCapConfig) -> str:
    """``transformer P40 C40 L8`` / ``mlp P10``, `` + LM`` when the LM trains."""
    text = f"{config.mapper} P{config.prefix_length}"
    if config.mapper == "transformer":
        text += f" C{config.clip_length} L{config.num_layers}"
    return text + (" + LM" if config.train_lm else "")


def candidates(
    d_clip: int, target: int = PAPER_CLIPCAP, tolerance: int = TOLERANCE
) -> list[tuple[str, ClipCapConfig, int]]:
    """(LM, configuration, trainable) within ``target +- tolerance``, in search order."""
    return [
        (lm, config, n)
        for lm in LMS
        for config in search_space()
        if abs((n := clipcap_trainable(lm, d_clip, config)) - target) <= tolerance
    ]


def nearest(
    lm: str, d_clip: int, target: int = PAPER_CLIPCAP
) -> tuple[tuple[ClipCapConfig, int], tuple[ClipCapConfig, int]]:
    """The configurations closest to ``target`` from below and from above (first in search order
    on a tie)."""
    counts = [(config, clipcap_trainable(lm, d_clip, config)) for config in search_space()]
    below = max((c for c in counts if c[1] <= target), key=lambda c: c[1])
    above = min((c for c in counts if c[1] > target), key=lambda c: c[1])
    return below, above


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render() -> str:
    """The module docstring's tables, recomputed."""
    methods = ["itune", "full", "clipcap-transformer", "clipcap-mlp"]
    rows = [
        [lm, str(lm_shape(lm)[0]), *(f"{method_counts(lm)[m]:,}" for m in methods)] for lm in LMS
    ]
    out = _table(["LM", "d_lm", *methods], rows, right={1, 2, 3, 4, 5})
    published = ClipCapConfig.for_method("clipcap-transformer")
    rows = [[lm, *(f"{clipcap_trainable(lm, d, published):,}" for d in D_CLIPS)] for lm in LMS]
    out += ["", *_table(["LM", *(f"d_clip {d}" for d in D_CLIPS)], rows, right={1, 2})]
    rows = [
        [str(d), lm, describe(config), f"{n:,}"] for d in D_CLIPS for lm, config, n in candidates(d)
    ]
    out += ["", *_table(["d_clip", "LM", "configuration", "trainable"], rows, right={3})]
    rows = [[lm, *(f"{describe(c)}: {n:,}" for c, n in nearest(lm, D_CLIPS[0]))] for lm in LMS]
    out += ["", *_table(["LM", "below", "above"], rows, right=set())]
    return "\n".join(out)


if __name__ == "__main__":
    print(render())
