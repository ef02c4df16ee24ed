"""The claims that Table 1's Flickr30k half concerns, checked on the runs trained on it.

The paper reports every I-Tuning row on Flickr30k too (each model trained on its train split and
scored on its test split); the claims read off those columns are the LM size's gain and
Dropping's cost. They are checked here as on COCO (``bench.report.claims``), on the runs of the
``dataset: flickr30k`` points (at ``mini``, Shapes-Flickr): no NoCaps, and Dropping only after
VLP, where the paper's Dropping row stands.
"""

from __future__ import annotations

from bench.report.claims import (
    ClaimContext,
    by_size,
    chain,
    drop_cost,
    need,
    paper_chain,
    paper_dropping_rows,
)
from bench.report.intervals import contrast
from bench.report.verdicts import MISSING, Verdict, combine, superiority

FLICKR = ("flickr30k",)


def larger_lm_flickr(ctx: ClaimContext) -> Verdict:
    paper = f"Flickr30k test {paper_chain(ctx.paper, 'table1', 'ours-no-vlp', 'flickr_cider')}"
    sizes = by_size(ctx.runs, prefer=("table1",), datasets=FLICKR)
    missing = [f"{s} LM on flickr30k (no VLP)" for s in ("base", "large") if s not in sizes]
    if missing:
        return ctx.verdict("larger_lm_flickr", MISSING, need(missing, "table1"), paper)
    a = ctx.term(sizes["base"], "test/cider", -1.0)
    b = ctx.term(sizes["large"], "test/cider", 1.0)
    if a is None or b is None:
        return ctx.verdict("larger_lm_flickr", MISSING, "no test CIDEr in the base/large runs")
    iv = contrast([a, b])
    evidence = f"test CIDEr {chain(sizes, 'test/cider')}; large − base {iv.fmt()}"
    return ctx.verdict("larger_lm_flickr", superiority(iv), evidence, paper, [iv])


def dropping_flickr(ctx: ClaimContext) -> Verdict:
    full_p, half_p = paper_dropping_rows(ctx.paper)
    paper = (
        f"GPT2-Large + VLP on Flickr30k {full_p.values['flickr_cider']:.1f} → "
        f"{half_p.values['flickr_cider']:.1f} CIDEr"
    )
    full = ctx.runs.pick(lm="large", vlp=True, datasets=FLICKR, prefer=("table1",))
    half = ctx.runs.pick(
        lm="large", vlp=True, drop_fraction=0.5, datasets=FLICKR, prefer=("table1",)
    )
    if full is None or half is None:
        what = [n for n, g in (("no drop", full), ("half dropped", half)) if g is None]
        return ctx.verdict(
            "dropping_flickr",
            MISSING,
            need([f"large + VLP on flickr30k, {w}" for w in what], "table1"),
            paper,
        )
    found = drop_cost(ctx, full, half)
    if found is None:
        return ctx.verdict("dropping_flickr", MISSING, "no test CIDEr or parameters", paper)
    cost, verdicts, text = found
    return ctx.verdict("dropping_flickr", combine(verdicts), f"large + VLP: {text}", paper, [cost])
