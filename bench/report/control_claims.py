"""The claims that are controls of this harness rather than numbers of the paper: the captions
name the objects of their scenes (grounding), and they depend on the image (blank-image control).
"""

from __future__ import annotations

import math

from bench.report.claims import (
    GROUNDING_PRECISION_MIN,
    GROUNDING_RECALL_MIN,
    IMAGE_RATIO_MIN,
    ClaimContext,
    need,
    stat,
)
from bench.report.intervals import Interval, Term, contrast
from bench.report.results import Group
from bench.report.verdicts import (
    FAILS,
    HOLDS,
    MISSING,
    NOT_CHECKED,
    Verdict,
    combine,
    superiority,
)
from bench.sweep import axes

#: (metric, name, threshold) that the largest model's three-object scenes must clear.
GROUNDING_TESTS = (
    ("objects/test/n3/recall", "object recall", GROUNDING_RECALL_MIN),
    ("objects/test/n3/precision", "precision", GROUNDING_PRECISION_MIN),
)


def grounding(ctx: ClaimContext) -> Verdict:
    """Recall and precision together: a caption naming one object of three, or naming one three
    times, does not ground the caption in the image, although every name it uses is right."""
    if not any(GROUNDING_TESTS[0][0] in r.metrics for r in ctx.runs.runs):
        if ctx.runs.paper_task:
            return ctx.verdict(
                "grounding",
                NOT_CHECKED,
                "needs each test image's objects with their colours, which only the Shapes world "
                "lists (COCO captions get CHAIR, in the section on objects named)",
            )
        return ctx.verdict(
            "grounding",
            MISSING,
            "no run has object scores (eval.grounding on scenes that list their objects)",
        )
    largest = ctx.runs.largest()
    if largest is None:
        return ctx.verdict("grounding", MISSING, need(["the large LM"], "table1"))
    parts, ivs, verdicts = [], [], []
    for metric, name, threshold in GROUNDING_TESTS:
        term = ctx.term(largest, metric, 1.0, offset=threshold)
        if term is None:  # no 3-object scene, or no phrase in their captions: nothing named
            verdicts.append(FAILS)
            parts.append(f"{name}: none")
            continue
        iv = contrast([Term(term.coef, term.seeds, None)])  # a rate over images: seed variance only
        ivs.append(iv)
        verdicts.append(superiority(iv))
        parts.append(f"{name} {stat(largest, metric, 2)} (− {threshold:g}: {iv.fmt(2)})")
    repetition = stat(largest, "objects/test/n3/repetition", 2)
    evidence = (
        f"{largest.first.label()}, three-object test scenes: {', '.join(parts)}; repetition "
        f"{repetition}; all scenes: recall {stat(largest, 'objects/test/recall', 2)}"
    )
    return ctx.verdict("grounding", combine(verdicts), evidence, "", ivs)


def image_dependence(ctx: ClaimContext) -> Verdict:
    """I-Tuning's models decide the verdict; another method's models, and I-Tuning over an LM with
    random weights, that fail the control are named in the evidence (a baseline that ignores the
    image says something about it, a random-weight LM about the premise's control, not about
    I-Tuning)."""
    rows, others = [], []
    for g in ctx.runs.groups():
        found = blank_ratio(g)
        if found is None:
            continue
        mean, iv = found
        if g.first.method != "itune" or g.first.lm_size in axes.RANDOM_WEIGHT_TWINS:
            if mean < IMAGE_RATIO_MIN:
                others.append(f"{g.first.label()} {mean:.1f}×")
            continue
        rows.append((iv, g, mean))
    if not rows:
        if ctx.runs.paper_task:
            return ctx.verdict(
                "image_dependence", NOT_CHECKED, "the paper budget does not run the control"
            )
        return ctx.verdict("image_dependence", MISSING, "no run has the blank-image control")
    verdicts = [HOLDS if iv is None else superiority(iv) for iv, _, _ in rows]
    worst = min(rows, key=lambda t: (t[2], t[1].sort_key()))
    iv, g, mean = worst
    shown = "∞" if math.isinf(mean) else f"{mean:.1f}×"
    evidence = (
        f"lowest mean ratio {shown} ({g.first.label()}, {len(g.runs)} seeds"
        + (f"; ratio − {IMAGE_RATIO_MIN:g}: {iv.fmt(2)}" if iv is not None else "")
        + f") over {len(rows)} I-Tuning models"
    )
    if others:
        evidence += (
            f"; other methods and random-weight LMs below {IMAGE_RATIO_MIN:g}×: {', '.join(others)}"
        )
    return ctx.verdict("image_dependence", combine(verdicts), evidence, "", [iv] if iv else [])


def blank_ratio(group: Group) -> tuple[float, Interval | None] | None:
    """The group's mean test CIDEr / blank-image CIDEr and the interval of ratio − the minimum
    (seeds only); no interval, and an infinite mean, where a blank caption scored 0 (the image
    matters completely); ``None`` where the control did not run."""
    ratios = [
        _ratio(r.metrics["test/cider"], r.metrics["control/test/blank_cider"])
        for r in group.runs
        if "test/cider" in r.metrics and "control/test/blank_cider" in r.metrics
    ]
    if not ratios:
        return None
    if not all(math.isfinite(x) for x in ratios):
        return math.inf, None
    iv = contrast([Term.of(1.0, [x - IMAGE_RATIO_MIN for x in ratios])])
    return sum(ratios) / len(ratios), iv


def _ratio(real: float, blank: float) -> float:
    """real / blank; a blank scoring 0 proves nothing when the real images score 0 as well."""
    if blank > 0:
        return real / blank
    return math.inf if real > 0 else 0.0
