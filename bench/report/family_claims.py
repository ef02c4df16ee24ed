"""The claims about which LM I-Tuning tunes: an LM of another family than GPT-2, and a pre-trained
LM against the same LM untrained.

The paper tunes GPT-2 only, yet says the method is agnostic to the LM; the ``lm`` axis adds
Llama-architecture LMs of the GPT-2 sizes (``llama-base`` ...: at mini pre-trained on the same
corpus and budget as the GPT-2 minis, at paper SmolLM2) so that each size has a twin of the other
family. "Works" is a non-inferiority test against the GPT-2 twin (equal or better would ask too
much of another architecture), plus the blank-image control, since a fluent LM can score some CIDEr
without looking. ``smollm2`` against ``smollm2-random`` tests the premise under both: the frozen
LM's pre-training is what the captions draw on.
"""

from __future__ import annotations

import math

from bench.report.claims import (
    AGNOSTIC_MARGIN,
    IMAGE_RATIO_MIN,
    SIZES,
    ClaimContext,
    need,
    stat,
)
from bench.report.control_claims import blank_ratio
from bench.report.intervals import contrast
from bench.report.results import Group, RunSet
from bench.report.verdicts import (
    HOLDS,
    MISSING,
    NOT_CHECKED,
    Verdict,
    combine,
    non_inferiority,
    superiority,
)
from bench.sweep import axes

#: The sweep of GPT-2 and Llama LMs of the same sizes.
FAMILY_SPEC = "lm_family"
#: The sweep of SmolLM2 and its random-weight control (a smaller budget of its own, on a CPU).
SMOLLM2_SPEC = "lm_family_smollm2"
#: Specs whose runs a comparison of LMs prefers: the family sweeps' own, then the size tables'.
FAMILY_PREFER = (FAMILY_SPEC, SMOLLM2_SPEC, "table2", "table1")
#: The premise's pair: the random-weight control and the pre-trained LM it is the twin of.
RANDOM, PRETRAINED = next(iter(axes.RANDOM_WEIGHT_TWINS.items()))


def sweep_command(runs: RunSet, spec: str = FAMILY_SPEC) -> str:
    """The command that makes ``spec``'s runs at this report's profile and scale."""
    scale = "" if runs.scale == "full" else f" --scale {runs.scale}"
    return f"python -m bench.sweep {spec} --profile {runs.profile}{scale}"


def itune(ctx: ClaimContext, lm: str) -> Group | None:
    """I-Tuning over ``lm`` on the captioning dataset: paper module, no VLP, no Dropping."""
    return ctx.runs.pick(lm=lm, vlp=False, prefer=FAMILY_PREFER)


def agnostic(ctx: ClaimContext) -> Verdict:
    llama = {s: g for s in SIZES if (g := itune(ctx, f"llama-{s}")) is not None}
    if not llama:
        return ctx.verdict(
            "agnostic",
            MISSING,
            "no finished run of I-Tuning over a Llama-architecture LM (llama-base/-medium/-large):"
            f" `{sweep_command(ctx.runs)}` makes them",
        )
    gpt2 = {s: g for s in llama if (g := itune(ctx, s)) is not None}
    if not gpt2:
        return ctx.verdict(
            "agnostic", MISSING, need([f"{s} LM (GPT-2)" for s in llama], FAMILY_SPEC)
        )
    lines, ivs, verdicts = [], [], []
    for size in gpt2:
        a = ctx.term(gpt2[size], "test/cider", 1.0)
        b = ctx.term(llama[size], "test/cider", -1.0)
        if a is None or b is None:
            continue
        cost = contrast([a, b])
        ivs.append(cost)
        verdicts.append(non_inferiority(cost, margin=AGNOSTIC_MARGIN))
        lines.append(
            f"{size}: GPT-2 {stat(gpt2[size], 'test/cider')}, Llama "
            f"{stat(llama[size], 'test/cider')}, GPT-2 − Llama {cost.fmt()}"
        )
    if not lines:
        return ctx.verdict("agnostic", MISSING, "no test CIDEr in the GPT-2/Llama pairs")
    unpaired = [f"llama-{s}" for s in llama if s not in gpt2]
    if unpaired:
        lines.append(f"no GPT-2 twin for {', '.join(unpaired)}")
    blank = [(f"llama-{s}", blank_ratio(llama[s])) for s in gpt2]
    checked = [(lm, found) for lm, found in blank if found is not None]
    if not checked:
        lines.append("image dependence not checked: the Llama runs have no blank-image control")
    for lm, (mean, iv) in checked:
        verdicts.append(HOLDS if iv is None else superiority(iv))
        ivs += [iv] if iv is not None else []
        shown = "∞" if math.isinf(mean) else f"{mean:.1f}×"
        vs = "" if iv is None else f" (ratio − {IMAGE_RATIO_MIN:g}: {iv.fmt(2)})"
        lines.append(f"{lm} test CIDEr {shown} the blank image's{vs}")
    return ctx.verdict("agnostic", combine(verdicts), "; ".join(lines), "", ivs)


def pretrained_lm(ctx: ClaimContext) -> Verdict:
    pre, rnd = itune(ctx, PRETRAINED), itune(ctx, RANDOM)
    if rnd is None and ctx.runs.paper_task:
        return ctx.verdict(
            "pretrained_lm",
            NOT_CHECKED,
            f"the paper profile runs no randomly initialised LM (`{RANDOM}`): a control of the "
            "mini profile",
        )
    missing = [f"{lm} LM" for lm, g in ((PRETRAINED, pre), (RANDOM, rnd)) if g is None]
    if missing:
        return ctx.verdict("pretrained_lm", MISSING, need(missing, SMOLLM2_SPEC))
    a = ctx.term(rnd, "test/cider", -1.0)
    b = ctx.term(pre, "test/cider", 1.0)
    if a is None or b is None:
        return ctx.verdict("pretrained_lm", MISSING, f"no test CIDEr in the {PRETRAINED} runs")
    iv = contrast([a, b])
    evidence = (
        f"{pre.first.label()} {stat(pre, 'test/cider')}, random weights "
        f"{stat(rnd, 'test/cider')}; pre-trained − random {iv.fmt()}"
    )
    return ctx.verdict("pretrained_lm", superiority(iv), evidence, "", [iv])
