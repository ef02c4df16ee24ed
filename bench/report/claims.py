"""The paper's claims, each turned into a verdict computed from the tracked runs.

At the ``mini`` profile the absolute numbers cannot be the paper's (another task, other backbones),
so what is checked is the *shape* of the results: does the bigger LM help, and most out of domain;
does Dropping halve the parameters for free; does VLP help; do captions depend on the image and name
the right objects. At the ``paper`` profile the published numbers are compared as well.

A verdict is ``holds``, ``does not hold`` or ``not enough runs`` (saying which runs are missing and
which sweep makes them). With several seeds per setting, each line also says whether the difference
exceeds the seed spread: |difference| > 2 standard errors of the difference (Welch), i.e. roughly
a 95 % interval; with one seed the spread is unknown and the line says so. Scores are on the
paper's scale (CIDEr ×100), so "costs at most 1 CIDEr" means 1 point of that scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.report.paper import PaperTables
from bench.report.results import COLUMN_DATASETS, Group, RunSet, Stat

HOLDS = "holds"
FAILS = "does not hold"
MISSING = "not enough runs"
VERDICTS = (HOLDS, FAILS, MISSING)

#: Dropping may cost at most this much test CIDEr (the paper: 122.2 -> 122.1) ...
DROP_MAX_COST = 1.0
#: ... while keeping at most this fraction of the trainable parameters ("halving": 95M -> 47M).
DROP_MAX_PARAM_RATIO = 0.55
#: Test CIDEr must be at least this multiple of the blank-image control's.
IMAGE_RATIO_MIN = 3.0
#: Shape-naming precision of the largest model (chance is about 2 of the 7 shapes, ~0.3).
GROUNDING_MIN = 0.8
#: paper profile: a reproduced CIDEr within this of the published one "matches".
PAPER_TOLERANCE = 2.0
#: The large pre-trained captioners' trainable parameters (OSCAR-base, Unified VLP, XGPT: 135M).
LARGE_SCALE_PARAMS = 135e6
#: "Far fewer" trainable parameters: at most this fraction of theirs.
FEW_PARAMS_RATIO = 0.2


@dataclass(frozen=True)
class Verdict:
    claim: str
    verdict: str
    evidence: str
    paper: str = ""  # the same comparison on the paper's own numbers
    spread: str = ""  # seed-spread statement, when seeds allow one

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} not in {VERDICTS}")


@dataclass(frozen=True)
class ClaimReport:
    verdicts: list[Verdict]
    not_checked: list[str]  # claims that mean nothing at this profile, with why


def spread_note(diff: float, stats: list[Stat]) -> str:
    """Whether ``diff`` (a difference of means of ``stats``) exceeds the seed spread."""
    if not stats or all(s.n == 1 for s in stats):
        return "one seed per setting: seed spread unknown"
    if any(s.n == 1 for s in stats):
        return "some settings have one seed: seed spread unknown"
    se = math.sqrt(sum((s.std or 0.0) ** 2 / s.n for s in stats))
    seeds = "/".join(str(s.n) for s in stats)
    verb = "exceeds" if abs(diff) > 2 * se else "is within"
    return f"the difference {diff:+.2f} {verb} the seed spread (2·SE = {2 * se:.2f}; seeds {seeds})"


def _join(notes: list[str]) -> str:
    """Notes joined once each, in order (several "one seed" notes say it once)."""
    return "; ".join(dict.fromkeys(n for n in notes if n))


def _need(what: list[str], sweep: str) -> str:
    return f"missing finished runs: {', '.join(what)} (sweep `{sweep}`)"


def check_claims(runs: RunSet, paper: PaperTables) -> ClaimReport:
    verdicts = [
        larger_lm(runs),
        larger_lm_out_of_domain(runs),
        dropping(runs),
        vlp_helps(runs),
    ]
    not_checked: list[str] = []
    if runs.paper_task:
        verdicts.append(fewer_params(runs, paper))
        verdicts.extend(paper_deltas(runs, paper))
    else:
        not_checked.append(
            "Comparable CIDEr to large pre-trained captioners with up to 10× fewer trainable "
            "parameters: those captioners (OSCAR, VL-T5, ...) do not exist for the Shapes world; "
            "checked at the paper profile only."
        )
    for check in (image_dependence, grounding):
        verdict = check(runs)
        if verdict is not None:
            verdicts.append(verdict)
        elif runs.paper_task:
            not_checked.append(_CONTROL_NOTES[check.__name__])
    return ClaimReport(verdicts, not_checked)


_CONTROL_NOTES = {
    "image_dependence": "Captions depend on the image (blank-image control): the paper profile's "
    "budget does not run the control (eval.blank_control).",
    "grounding": "Objects are named correctly (naming precision): needs object annotations, which "
    "only the Shapes world has.",
}


# ---------------------------------------------------------------------- LM size


def _by_size(runs: RunSet, prefer: tuple[str, ...]) -> dict[str, Group]:
    out = {}
    for size in ("base", "medium", "large"):
        g = runs.pick(lm=size, vlp=False, prefer=prefer)
        if g is not None:
            out[size] = g
    return out


def _fmt_chain(groups: dict[str, Group], metric: str) -> str:
    parts = []
    for size, g in groups.items():
        s = g.stat(metric)
        parts.append(f"{size} {s.fmt() if s else 'n/a'}")
    return " → ".join(parts)


def larger_lm(runs: RunSet) -> Verdict:
    claim = "A larger frozen LM gives a higher CIDEr (no VLP, no Dropping)."
    paper = "paper: test 116.7 → 120.0 → 119.4, NoCaps overall 67.8 → 75.4 → 78.5"
    sizes = _by_size(runs, ("table2", "table1"))
    missing = [f"{s} LM (no VLP)" for s in ("base", "large") if s not in sizes]
    if missing:
        return Verdict(claim, MISSING, _need(missing, "table2"), paper)
    base, large = sizes["base"], sizes["large"]
    diffs, stats, lines = [], [], []
    for metric, name in (("test/cider", "test CIDEr"), ("nocaps/overall/cider", "NoCaps overall")):
        a, b = base.stat(metric), large.stat(metric)
        if a is None or b is None:
            continue
        diffs.append(b.mean - a.mean)
        stats.append((a, b))
        lines.append(f"{name} {_fmt_chain(sizes, metric)} (base → large {b.mean - a.mean:+.2f})")
    if not diffs:
        return Verdict(claim, MISSING, "no test CIDEr in the base/large runs", paper)
    verdict = HOLDS if all(d > 0 for d in diffs) else FAILS
    spread = _join([spread_note(d, list(s)) for d, s in zip(diffs, stats, strict=True)])
    return Verdict(claim, verdict, "; ".join(lines), paper, spread)


def larger_lm_out_of_domain(runs: RunSet) -> Verdict:
    claim = (
        "The larger LM helps above all out of domain: the out-of-domain CIDEr gain (base → large) "
        "exceeds the in-domain gain."
    )
    paper = "paper (NoCaps): in-domain 83.9 → 89.6 (+5.7), out-of-domain 48.1 → 64.8 (+16.7)"
    sizes = _by_size(runs, ("table2", "table1"))
    missing = [f"{s} LM (no VLP)" for s in ("base", "large") if s not in sizes]
    if missing:
        return Verdict(claim, MISSING, _need(missing, "table2"), paper)
    base, large = sizes["base"], sizes["large"]
    stats = {
        d: (base.stat(f"nocaps/{d}/cider"), large.stat(f"nocaps/{d}/cider"))
        for d in ("in-domain", "out-of-domain")
    }
    if any(a is None or b is None for a, b in stats.values()):
        return Verdict(
            claim,
            MISSING,
            "the base/large runs have no in- and out-of-domain NoCaps-style scores (eval.nocaps "
            "off, or the evaluated images hold no image of a domain)",
            paper,
        )
    gain_in = stats["in-domain"][1].mean - stats["in-domain"][0].mean
    gain_out = stats["out-of-domain"][1].mean - stats["out-of-domain"][0].mean
    evidence = (
        f"in-domain {_fmt_chain(sizes, 'nocaps/in-domain/cider')} ({gain_in:+.2f}); "
        f"out-of-domain {_fmt_chain(sizes, 'nocaps/out-of-domain/cider')} ({gain_out:+.2f})"
    )
    verdict = HOLDS if gain_out > 0 and gain_out > gain_in else FAILS
    spread = spread_note(gain_out - gain_in, [s for pair in stats.values() for s in pair])
    return Verdict(claim, verdict, evidence, paper, spread)


# ---------------------------------------------------------------------- Dropping and VLP


def dropping(runs: RunSet) -> Verdict:
    claim = (
        f"Dropping the modules of the lower half of the layers costs at most {DROP_MAX_COST:g} "
        "test CIDEr (×100 scale) while halving the trainable parameters (large LM)."
    )
    paper = "paper: GPT2-Large + VLP 122.2 → 122.1 CIDEr, 95M → 47M parameters"
    pairs, missing = [], []
    for vlp, prefer in ((False, ("dropping", "table2")), (True, ("table1",))):
        full = runs.pick(lm="large", vlp=vlp, prefer=prefer)
        half = runs.pick(lm="large", vlp=vlp, drop_fraction=0.5, prefer=prefer)
        if full is not None and half is not None:
            pairs.append((vlp, full, half))
        elif full is not None or half is not None:
            missing.append(f"large{' + VLP' if vlp else ''} with {'half' if full else 'no'} drop")
    if not pairs:
        return Verdict(
            claim, MISSING, _need(["large LM, drop 0 and drop 1/2 (no VLP)"], "dropping"), paper
        )
    lines, notes, ok = [], [], True
    for vlp, full, half in pairs:
        a, b = full.stat("test/cider"), half.stat("test/cider")
        pa, pb = full.params_stat(), half.params_stat()
        if a is None or b is None or pa is None or pb is None:
            missing.append(f"test CIDEr / parameters of large{' + VLP' if vlp else ''}")
            continue
        cost, ratio = a.mean - b.mean, pb.mean / pa.mean
        ok = ok and cost <= DROP_MAX_COST and ratio <= DROP_MAX_PARAM_RATIO
        lines.append(
            f"large{' + VLP' if vlp else ''}: CIDEr {a.fmt()} → {b.fmt()} (cost {cost:+.2f}), "
            f"parameters {_count(pa.mean)} → {_count(pb.mean)} (×{ratio:.2f}, "
            f"{half.first.drop} of {half.first.n_layers} layers dropped)"
        )
        notes.append(spread_note(cost, [a, b]))
    if not lines:
        return Verdict(claim, MISSING, "; ".join(missing), paper)
    evidence = "; ".join(lines) + (f"; also missing: {', '.join(missing)}" if missing else "")
    return Verdict(claim, HOLDS if ok else FAILS, evidence, paper, _join(notes))


def vlp_helps(runs: RunSet) -> Verdict:
    claim = (
        "Vision-language pre-training (VLP) raises the test CIDEr (mean gain over LM sizes > 0)."
    )
    paper = "paper: base +1.6, medium −0.9, large +2.8 (mean +1.2)"
    pairs = []
    for size in ("base", "medium", "large"):
        off = runs.pick(lm=size, vlp=False, prefer=("vlp", "table1"))
        on = runs.pick(lm=size, vlp=True, prefer=("vlp", "table1"))
        if off is not None and on is not None:
            pairs.append((size, off, on))
    if not pairs:
        return Verdict(
            claim,
            MISSING,
            _need(["one LM size with and without VLP"], "vlp") + " or sweep `table1`",
            paper,
        )
    gains, lines, notes = [], [], []
    for size, off, on in pairs:
        a, b = off.stat("test/cider"), on.stat("test/cider")
        if a is None or b is None:
            continue
        gains.append(b.mean - a.mean)
        lines.append(f"{size}: {a.fmt()} → {b.fmt()} ({b.mean - a.mean:+.2f})")
        notes.append(spread_note(b.mean - a.mean, [a, b]))
    if not gains:
        return Verdict(claim, MISSING, "no test CIDEr in the VLP pairs", paper)
    mean_gain = sum(gains) / len(gains)
    evidence = "; ".join(lines) + f" (mean {mean_gain:+.2f})"
    return Verdict(claim, HOLDS if mean_gain > 0 else FAILS, evidence, paper, _join(notes))


# ---------------------------------------------------------------------- paper profile only


def fewer_params(runs: RunSet, paper: PaperTables) -> Verdict:
    baselines = [r for r in paper.table1.baselines() if r.group == "large-scale"]
    weakest = min(r.values["coco_cider"] for r in baselines if r.values["coco_cider"])
    limit = FEW_PARAMS_RATIO * LARGE_SCALE_PARAMS
    claim = (
        f"Comparable CIDEr with far fewer trainable parameters: some model with ≤ "
        f"{_count(limit)} trainable parameters reaches the weakest large pre-trained captioner's "
        f"test CIDEr ({weakest:g}) within {PAPER_TOLERANCE:g}."
    )
    paper_line = f"paper: I-Tuning GPT2-Base (14M) 116.7 vs OSCAR-base (135M) {weakest:g}"
    found = []
    for g in runs.groups():
        if g.first.dataset not in COLUMN_DATASETS["coco"]:
            continue
        s, p = g.stat("test/cider"), g.params_stat()
        if s is not None and p is not None and p.mean <= limit:
            found.append((s.mean, p.mean, g))
    if not found:
        return Verdict(
            claim, MISSING, _need([f"a model with ≤ {_count(limit)}"], "table1"), paper_line
        )
    best, params, g = max(found, key=lambda t: (t[0], -t[1]))
    evidence = f"best: {g.first.label()} {best:.1f} CIDEr with {_count(params)} parameters"
    verdict = HOLDS if best >= weakest - PAPER_TOLERANCE else FAILS
    return Verdict(claim, verdict, evidence, paper_line)


def paper_deltas(runs: RunSet, paper: PaperTables) -> list[Verdict]:
    """One line per I-Tuning row of Tables 1 and 2: the reproduced CIDEr against the published."""
    out = []
    tables = (
        (paper.table1, "coco_cider", "test/cider", "Table 1 test", ("table1",)),
        (
            paper.table2,
            "overall_cider",
            "nocaps/overall/cider",
            "Table 2 NoCaps overall",
            ("table2", "table1"),
        ),
    )
    for table, column, metric, where, prefer in tables:
        for row in table.ours():
            published = row.values[column]
            claim = (
                f"{where} CIDEr of {row.model} matches the published {published:g} "
                f"within {PAPER_TOLERANCE:g}."
            )
            g = runs.pick(
                lm=row.lm_size, vlp=bool(row.vlp), drop_fraction=row.drop_fraction, prefer=prefer
            )
            s = g.stat(metric) if g is not None else None
            if s is None:
                out.append(Verdict(claim, MISSING, _need([row.model], prefer[0])))
                continue
            delta = s.mean - published
            tol = max(PAPER_TOLERANCE, 2 * (s.std or 0.0))
            out.append(
                Verdict(
                    claim,
                    HOLDS if abs(delta) <= tol else FAILS,
                    f"reproduced {s.fmt()} (Δ {delta:+.1f})",
                    spread=spread_note(delta, [s]) if s.n > 1 else "",
                )
            )
    return out


# ---------------------------------------------------------------------- mini controls


def image_dependence(runs: RunSet) -> Verdict | None:
    claim = (
        f"Captions depend on the image: test CIDEr ≥ {IMAGE_RATIO_MIN:g}× the CIDEr of the same "
        "model captioning a blank (mean-colour) image, for every model."
    )
    rows = []
    for g in runs.groups():
        real, blank = g.stat("test/cider"), g.stat("control/test/blank_cider")
        if real is None or blank is None:
            continue
        rows.append((_ratio(real.mean, blank.mean), g, real, blank))
    if not rows:
        if runs.paper_task:
            return None
        return Verdict(
            claim, MISSING, "no run has the blank-image control (eval.blank_control = true)"
        )
    worst = min(rows, key=lambda t: (t[0], t[1].sort_key()))
    ratio, g, real, blank = worst
    shown = "∞" if math.isinf(ratio) else f"{ratio:.1f}×"
    evidence = (
        f"lowest ratio {shown} ({g.first.label()}: test {real.fmt()} vs blank {blank.fmt()}) "
        f"over {len(rows)} models"
    )
    return Verdict(claim, HOLDS if ratio >= IMAGE_RATIO_MIN else FAILS, evidence)


def grounding(runs: RunSet) -> Verdict | None:
    claim = (
        f"Objects are named correctly: the largest model's shape words name a shape present in the "
        f"image with precision ≥ {GROUNDING_MIN:g} (chance ≈ 0.3)."
    )
    metric, mentions = "grounding/test/shape_precision", "grounding/test/shape_mentions"
    if not any(k in r.metrics for r in runs.runs for k in (metric, mentions)):
        if runs.paper_task:
            return None
        return Verdict(claim, MISSING, "no run has grounding scores (eval.grounding = true)")
    largest = runs.largest()
    if largest is None or largest.stat(mentions) is None and largest.stat(metric) is None:
        return Verdict(claim, MISSING, _need(["the large LM with grounding scores"], "table1"))
    shape = largest.stat(metric)
    if shape is None:  # grounding ran, but no caption named a shape: nothing named correctly
        return Verdict(claim, FAILS, f"{largest.first.label()} named no shape in its test captions")
    colour = largest.stat("grounding/test/colour_precision")
    others = []
    for g in runs.groups():
        s = g.stat(metric)
        if s is not None and g is not largest and g.is_default():
            others.append(f"{g.first.label()} {s.fmt(2)}")
    evidence = f"{largest.first.label()}: shape precision {shape.fmt(2)}" + (
        f", colour precision {colour.fmt(2)}" if colour else ""
    )
    if others:
        evidence += f" (other models, shape: {', '.join(others)})"
    return Verdict(claim, HOLDS if shape.mean >= GROUNDING_MIN else FAILS, evidence)


def _ratio(real: float, blank: float) -> float:
    """real / blank; a blank scoring 0 proves nothing when the real images score 0 as well."""
    if blank > 0:
        return real / blank
    return math.inf if real > 0 else 0.0


def _count(n: float) -> str:
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"
