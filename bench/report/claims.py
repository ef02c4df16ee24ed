"""The paper's claims, each turned into a verdict from the tracked runs, with an interval.

Every compared difference gets an interval from both sources of noise, training seeds and the test
set (``bench.report.intervals``), and a verdict by the rules of ``bench.report.verdicts``: ``holds``
only when the interval lies on the claimed side, ``does not hold`` only when it excludes the
claim, ``inconclusive`` otherwise. A setting with one seed never decides a difference. What each
claim tests, and where the paper says it, is in ``claims.yaml``.

At the ``mini`` profile the numbers cannot be the paper's (another task, other backbones): what is
checked is the *shape* of the results. Claims against other captioners need those captioners run
on the same data; the published rows are compared only at the ``paper`` profile
(``bench.report.paper_claims``). Scores are on the paper's scale (CIDEr ×100).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import yaml

from bench.report.intervals import Term, contrast
from bench.report.markdown import count
from bench.report.paper import PaperTables
from bench.report.resampling import METHOD, Resamples
from bench.report.results import COLUMN_DATASETS, Group, RunSet
from bench.report.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    MISSING,
    Verdict,
    combine,
    non_inferiority,
    superiority,
)

#: Dropping may cost at most this much test CIDEr (the paper: 122.2 -> 122.1) ...
DROP_MAX_COST = 1.0
#: ... while keeping at most this fraction of the trainable parameters ("halving": 95M -> 47M).
DROP_MAX_PARAM_RATIO = 0.55
#: The metrics on which Dropping "can even improve the performance on some metrics".
DROP_METRICS = {
    "test/cider": "test CIDEr",
    "test/bleu4": "test BLEU-4",
    "test/meteor": "test METEOR",
    "test/rouge_l": "test ROUGE-L",
    "nocaps/overall/cider": "NoCaps overall CIDEr",
}
#: Test CIDEr must be above this multiple of the blank-image control's.
IMAGE_RATIO_MIN = 3.0
#: The largest model names the objects of three-object scenes: recall and precision above these.
GROUNDING_RECALL_MIN = 0.85
GROUNDING_PRECISION_MIN = 0.9
#: "Comparable" and "matches": within this many points of a published number.
PAPER_TOLERANCE = 2.0
#: I-Tuning over a Llama-family LM may score at most this much test CIDEr below GPT-2's (ours).
AGNOSTIC_MARGIN = 10.0
SIZES = ("base", "medium", "large")


@functools.cache
def claim_texts() -> dict[str, dict[str, str]]:
    raw = yaml.safe_load(resources.files("bench.report").joinpath("claims.yaml").read_text())
    numbers = {
        "drop_margin": DROP_MAX_COST,
        "drop_params": DROP_MAX_PARAM_RATIO,
        "paper_tolerance": PAPER_TOLERANCE,
        "grounding_recall": GROUNDING_RECALL_MIN,
        "grounding_precision": GROUNDING_PRECISION_MIN,
        "image_ratio": IMAGE_RATIO_MIN,
        "agnostic_margin": AGNOSTIC_MARGIN,
    }
    return {k: {f: str(v).format(**numbers) for f, v in entry.items()} for k, entry in raw.items()}


@dataclass
class ClaimContext:
    """What the claims read: the runs, the paper's numbers, and the runs' test-set resamples."""

    runs: RunSet
    paper: PaperTables
    resamples: Resamples | None = None

    @property
    def method(self) -> str:
        test = METHOD if self.resamples is not None else "no test-set resampling"
        return f"95 % interval: seed variance + test-set variance ({test}), Welch–Satterthwaite df"

    def term(self, group: Group, metric: str, coef: float = 1.0, offset: float = 0.0):
        """``coef · (mean over the group's seeds of metric − offset)`` as a contrast term."""
        runs = [r for r in group.runs if _finite(r.metrics.get(metric))]
        if not runs:
            return None
        reps = self.resamples.matrix(runs, metric) if self.resamples is not None else None
        seeds = [r.metrics[metric] - offset for r in runs]
        return Term.of(coef, seeds, None if reps is None else reps - offset)

    def verdict(self, key: str, verdict: str, evidence: str, paper: str = "", ivs=()) -> Verdict:
        text = claim_texts()[key]
        return Verdict(
            key=key,
            claim=text["claim"],
            source=text["source"],
            verdict=verdict,
            evidence=evidence,
            paper=paper,
            method=self.method if any(iv.known for iv in ivs) else "",
            intervals=tuple(ivs),
        )


def check_claims(
    runs: RunSet, paper: PaperTables, resamples: Resamples | None = None
) -> list[Verdict]:
    from bench.report import control_claims, family_claims, flickr_claims, paper_claims

    ctx = ClaimContext(runs, paper, resamples)
    checks: list[Callable[[ClaimContext], Verdict]] = [
        larger_lm,
        larger_lm_out_of_domain,
        flickr_claims.larger_lm_flickr,
        paper_claims.gap_grows,
        dropping,
        dropping_improves,
        flickr_claims.dropping_flickr,
        vlp_helps,
        paper_claims.fewer_params,
        paper_claims.vs_clipcap,
        paper_claims.vs_vlt5,
        paper_claims.vs_oscar_nocaps,
        family_claims.agnostic,
        family_claims.pretrained_lm,
        control_claims.grounding,
        control_claims.image_dependence,
    ]
    out = [check(ctx) for check in checks]
    if runs.paper_task:
        out.extend(paper_claims.published_numbers(ctx))
    return out


# ---------------------------------------------------------------------- helpers


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def need(what: list[str], sweep: str) -> str:
    return f"missing finished runs: {', '.join(what)} (sweep `{sweep}`)"


def stat(group: Group, metric: str, digits: int = 1) -> str:
    s = group.stat(metric)
    return "n/a" if s is None else f"{s.fmt(digits)} (n={s.n})"


def by_size(
    runs: RunSet, prefer=("table2", "table1"), datasets=COLUMN_DATASETS["coco"]
) -> dict[str, Group]:
    """The paper-module groups of each LM size trained on ``datasets``, no VLP, no Dropping."""
    return {
        s: g
        for s in SIZES
        if (g := runs.pick(lm=s, vlp=False, datasets=datasets, prefer=prefer)) is not None
    }


def chain(groups: dict[str, Group], metric: str) -> str:
    return " → ".join(f"{size} {stat(g, metric)}" for size, g in groups.items())


def paper_chain(paper: PaperTables, table: str, group: str, column: str) -> str:
    rows = [r for r in getattr(paper, table).ours() if r.group == group and not r.drop_fraction]
    return " → ".join(f"{r.values[column]:.1f}" for r in rows)


# ---------------------------------------------------------------------- LM size


def larger_lm(ctx: ClaimContext) -> Verdict:
    paper = (
        f"test {paper_chain(ctx.paper, 'table1', 'ours-no-vlp', 'coco_cider')}; "
        f"NoCaps overall {paper_chain(ctx.paper, 'table2', 'ours', 'overall_cider')}"
    )
    sizes = by_size(ctx.runs)
    missing = [f"{s} LM (no VLP)" for s in ("base", "large") if s not in sizes]
    if missing:
        return ctx.verdict("larger_lm", MISSING, need(missing, "table2"), paper)
    lines, ivs, verdicts = [], [], []
    for metric, name in (("test/cider", "test CIDEr"), ("nocaps/overall/cider", "NoCaps overall")):
        a = ctx.term(sizes["base"], metric, -1.0)
        b = ctx.term(sizes["large"], metric, 1.0)
        if a is None or b is None:
            continue
        iv = contrast([a, b])
        ivs.append(iv)
        verdicts.append(superiority(iv))
        lines.append(f"{name} {chain(sizes, metric)}; large − base {iv.fmt()}")
    if not lines:
        return ctx.verdict("larger_lm", MISSING, "no test CIDEr in the base/large runs", paper)
    return ctx.verdict("larger_lm", combine(verdicts), "; ".join(lines), paper, ivs)


def larger_lm_out_of_domain(ctx: ClaimContext) -> Verdict:
    t2 = {r.lm_size: r.values for r in ctx.paper.table2.ours() if not r.drop_fraction}
    gain = {d: t2["large"][f"{d}_cider"] - t2["base"][f"{d}_cider"] for d in ("in", "out")}
    paper = f"NoCaps in-domain gain {gain['in']:+.1f}, out-of-domain {gain['out']:+.1f}"
    sizes = by_size(ctx.runs)
    missing = [f"{s} LM (no VLP)" for s in ("base", "large") if s not in sizes]
    if missing:
        return ctx.verdict("larger_lm_out_of_domain", MISSING, need(missing, "table2"), paper)
    metric = {d: f"nocaps/{d}/cider" for d in ("in-domain", "out-of-domain")}
    terms = [
        ctx.term(sizes["base"], metric["out-of-domain"], -1.0),
        ctx.term(sizes["large"], metric["out-of-domain"], 1.0),
        ctx.term(sizes["base"], metric["in-domain"], 1.0),
        ctx.term(sizes["large"], metric["in-domain"], -1.0),
    ]
    if any(t is None for t in terms):
        return ctx.verdict(
            "larger_lm_out_of_domain",
            MISSING,
            "the base/large runs have no in- and out-of-domain NoCaps-style scores",
            paper,
        )
    iv = contrast(terms)
    evidence = (
        f"in-domain {chain(sizes, metric['in-domain'])}; out-of-domain "
        f"{chain(sizes, metric['out-of-domain'])}; out-of-domain gain − in-domain gain {iv.fmt()}"
    )
    return ctx.verdict("larger_lm_out_of_domain", superiority(iv), evidence, paper, [iv])


# ---------------------------------------------------------------------- Dropping and VLP


def _dropping_pairs(ctx: ClaimContext) -> tuple[list[tuple[bool, Group, Group]], list[str]]:
    pairs, missing = [], []
    for vlp, prefer in ((False, ("table2", "dropping")), (True, ("table1",))):
        full = ctx.runs.pick(lm="large", vlp=vlp, prefer=prefer)
        half = ctx.runs.pick(lm="large", vlp=vlp, drop_fraction=0.5, prefer=prefer)
        if full is not None and half is not None:
            pairs.append((vlp, full, half))
        else:
            what = (
                "no drop and half dropped"
                if full is None and half is None
                else ("no drop" if full is None else "half dropped")
            )
            missing.append(f"large{' + VLP' if vlp else ''}, {what}")
    return pairs, missing


def paper_dropping_rows(paper: PaperTables):
    """Table 1's GPT2-Large + VLP rows without and with Dropping, where the paper shows it."""
    rows = [r for r in paper.table1.ours() if r.lm_size == "large" and r.vlp]
    full, half = sorted(rows, key=lambda r: r.drop_fraction)
    return full, half


def drop_cost(ctx: ClaimContext, full: Group, half: Group):
    """``(cost, verdicts, text)`` of Dropping between two groups: the test-CIDEr cost (full −
    dropped) with its interval, the verdicts of the margin and of the parameter ratio, and what
    they were; ``None`` where a score or a parameter count is missing."""
    a, b = ctx.term(full, "test/cider", 1.0), ctx.term(half, "test/cider", -1.0)
    pa, pb = full.params_stat(), half.params_stat()
    if a is None or b is None or pa is None or pb is None:
        return None
    cost = contrast([a, b])
    ratio = pb.mean / pa.mean
    verdicts = [non_inferiority(cost, margin=DROP_MAX_COST)]
    if ratio > DROP_MAX_PARAM_RATIO:
        verdicts.append(FAILS)
    text = (
        f"CIDEr {stat(full, 'test/cider')} → {stat(half, 'test/cider')}, cost {cost.fmt()}; "
        f"parameters {count(pa.mean)} → {count(pb.mean)} (×{ratio:.2f}, {half.first.drop} of "
        f"{half.first.n_layers} layers dropped)"
    )
    return cost, verdicts, text


def dropping(ctx: ClaimContext) -> Verdict:
    full_p, half_p = paper_dropping_rows(ctx.paper)
    paper = (
        f"GPT2-Large + VLP {full_p.values['coco_cider']:.1f} → "
        f"{half_p.values['coco_cider']:.1f} CIDEr, {full_p.params} → {half_p.params} parameters"
    )
    pairs, missing = _dropping_pairs(ctx)
    if not pairs:
        return ctx.verdict("dropping", MISSING, need(missing, "table1` + `table2"), paper)
    lines, ivs, verdicts = [], [], []
    for vlp, full, half in pairs:
        found = drop_cost(ctx, full, half)
        if found is None:
            missing.append(f"test CIDEr / parameters of large{' + VLP' if vlp else ''}")
            continue
        cost, said, text = found
        verdicts += said
        ivs.append(cost)
        lines.append(f"large{' + VLP' if vlp else ''}: {text}")
    if missing:
        lines.append("not run: " + ", ".join(missing))
    return ctx.verdict("dropping", combine(verdicts), "; ".join(lines), paper, ivs)


def dropping_improves(ctx: ClaimContext) -> Verdict:
    full_p, half_p = paper_dropping_rows(ctx.paper)
    names = {"coco": "COCO", "flickr": "Flickr30k", "cider": "CIDEr", "bleu4": "BLEU-4"}
    names |= {"meteor": "METEOR", "spice": "SPICE"}
    better = [
        " ".join(names[part] for part in c.split("_"))
        for c in ctx.paper.table1.columns
        if (half_p.values[c] or 0) > (full_p.values[c] or 0)
    ]
    paper = f"Table 1, + VLP: dropping is higher on {', '.join(better) or 'no column'}"
    pairs, missing = _dropping_pairs(ctx)
    if not pairs:
        return ctx.verdict("dropping_improves", MISSING, need(missing, "table1` + `table2"), paper)
    tests = []
    for vlp, full, half in pairs:
        for metric in DROP_METRICS:
            a, b = ctx.term(full, metric, -1.0), ctx.term(half, metric, 1.0)
            if a is not None and b is not None:
                tests.append((vlp, metric, a, b))
    if not tests:
        return ctx.verdict("dropping_improves", MISSING, "no shared metrics", paper)
    level = 1 - 0.05 / len(tests)  # Bonferroni: any one of these may carry the claim
    ivs = [(vlp, metric, contrast([a, b], level=level)) for vlp, metric, a, b in tests]
    ups = [t for t in ivs if superiority(t[2]) == HOLDS]
    if ups:
        verdict = HOLDS
    elif all(superiority(iv) == FAILS for _, _, iv in ivs):
        verdict = FAILS
    else:
        verdict = INCONCLUSIVE
    best = max(ivs, key=lambda t: t[2].estimate)
    shown = ups or [best]
    evidence = (
        "; ".join(
            f"large{' + VLP' if vlp else ''} {metric}: dropped − full {iv.fmt()}"
            for vlp, metric, iv in shown
        )
        + f" ({len(ivs)} comparisons, each at the {level:.1%} level)"
    )
    return ctx.verdict("dropping_improves", verdict, evidence, paper, [iv for *_, iv in ivs])


def vlp_helps(ctx: ClaimContext) -> Verdict:
    t1 = ctx.paper.table1.ours()
    gains = {
        s: on.values["coco_cider"] - off.values["coco_cider"]
        for s in SIZES
        for off in t1
        for on in t1
        if off.lm_size == on.lm_size == s and not off.vlp and on.vlp and not on.drop_fraction
    }
    paper = "VLP gain " + ", ".join(f"{s} {g:+.1f}" for s, g in gains.items())
    paper += f" (mean {sum(gains.values()) / len(gains):+.1f})"
    pairs = []
    for size in SIZES:
        off = ctx.runs.pick(lm=size, vlp=False, prefer=("table1", "vlp"))
        on = ctx.runs.pick(lm=size, vlp=True, prefer=("table1", "vlp"))
        if off is not None and on is not None:
            pairs.append((size, off, on))
    if not pairs:
        return ctx.verdict(
            "vlp_helps", MISSING, need(["an LM size with and without VLP"], "table1"), paper
        )
    k = len(pairs)
    terms, lines = [], []
    for size, off, on in pairs:
        a, b = ctx.term(off, "test/cider", -1.0 / k), ctx.term(on, "test/cider", 1.0 / k)
        if a is None or b is None:
            continue
        terms += [a, b]
        gain = contrast([Term(-1.0, a.seeds, a.replicates), Term(1.0, b.seeds, b.replicates)])
        lines.append(f"{size}: {stat(off, 'test/cider')} → {stat(on, 'test/cider')} ({gain.fmt()})")
    if not terms:
        return ctx.verdict("vlp_helps", MISSING, "no test CIDEr in the VLP pairs", paper)
    iv = contrast(terms)
    evidence = "; ".join(lines) + f"; mean gain {iv.fmt()}"
    return ctx.verdict("vlp_helps", superiority(iv), evidence, paper, [iv])
