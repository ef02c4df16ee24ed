"""The claims' verdicts on synthetic run sets whose truth is known (seeds, intervals, sources)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from test_report import make_run, runset

from bench.report import claims as C
from bench.report import paper_claims as P
from bench.report.intervals import Term
from bench.report.paper import load_paper_tables
from bench.report.verdicts import FAILS, HOLDS, INCONCLUSIVE, MISSING, NOT_CHECKED, VERDICTS

PAPER = load_paper_tables()
RNG = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def _fresh_seed_noise():
    """Each test draws its seed noise from the same start, whichever tests ran before it."""
    global RNG
    RNG = np.random.default_rng(7)


def seeds(lm="base", n=3, *, mean, sd, metric="test/cider", extra=None, **kw):
    """``n`` seeds of one setting whose ``metric`` is ``mean`` plus seed noise ``sd``."""
    out = []
    for s in range(n):
        metrics = {metric: mean + sd * RNG.standard_normal(), "trainable_params": 1e4}
        metrics.update({k: v + sd * RNG.standard_normal() for k, v in (extra or {}).items()})
        if "drop" in kw:
            metrics["trainable_params"] = 4e3
        out.append(make_run(lm, seed=s, metrics=metrics, **kw))
    return out


def ctx(*runs, profile="mini"):
    return C.ClaimContext(runset(*runs, profile=profile), PAPER)


def nocaps_seeds(lm, n, test, overall, in_d, out_d, sd, **kw):
    extra = {
        "nocaps/overall/cider": overall,
        "nocaps/in-domain/cider": in_d,
        "nocaps/out-of-domain/cider": out_d,
    }
    return seeds(lm, n, mean=test, sd=sd, extra=extra, **kw)


def test_larger_lm_holds_only_when_both_intervals_are_above_zero():
    base = nocaps_seeds("base", 3, 100, 80, 90, 60, 0.5)
    large = nocaps_seeds("large", 3, 110, 95, 95, 80, 0.5, n_layers=8)
    v = C.larger_lm(ctx(*base, *large))
    assert v.verdict == HOLDS and len(v.intervals) == 2
    assert all(iv.low > 0 for iv in v.intervals)
    assert "derived from Tables 1 and 2" in v.source and "116.7 → 120.0 → 119.4" in v.paper
    # out-of-domain gain (+20) against in-domain (+5), well outside the noise
    assert C.larger_lm_out_of_domain(ctx(*base, *large)).verdict == HOLDS
    noisy = nocaps_seeds("large", 3, 100.5, 80.5, 90, 60, 3.0, n_layers=8)
    assert C.larger_lm(ctx(*base, *noisy)).verdict == INCONCLUSIVE
    worse = nocaps_seeds("large", 3, 80, 60, 70, 40, 0.5, n_layers=8)
    assert C.larger_lm(ctx(*base, *worse)).verdict == FAILS


def test_one_seed_per_setting_never_decides():
    base = nocaps_seeds("base", 1, 100, 80, 90, 60, 0.0)
    large = nocaps_seeds("large", 1, 150, 120, 130, 110, 0.0, n_layers=8)
    for check in (C.larger_lm, C.larger_lm_out_of_domain):
        v = check(ctx(*base, *large))
        assert v.verdict == INCONCLUSIVE and "one seed" in v.evidence


def test_missing_runs_name_the_sweep():
    v = C.larger_lm(ctx(*seeds("base", mean=100, sd=1)))
    assert v.verdict == MISSING and "large LM" in v.evidence and "table2" in v.evidence
    v = C.vlp_helps(ctx(*seeds("base", mean=100, sd=1)))
    assert v.verdict == MISSING and "table1" in v.evidence


def _dropping(cost, sd, half_params=4e3, n=3):
    full = seeds("large", n, mean=100, sd=sd, n_layers=8)
    half = seeds("large", n, mean=100 - cost, sd=sd, n_layers=8, drop=4)
    for r in half:
        r.metrics["trainable_params"] = half_params
    return ctx(*full, *half)


def test_dropping_is_a_non_inferiority_test():
    assert C.dropping(_dropping(0.2, 0.05, n=5)).verdict == HOLDS  # cost 0.2 ± small
    assert C.dropping(_dropping(0.9, 2.0)).verdict == INCONCLUSIVE  # cost 0.9 ± 2: undecided
    assert C.dropping(_dropping(30.0, 1.0)).verdict == FAILS  # far beyond the margin
    assert C.dropping(_dropping(0.2, 0.05, half_params=8e3, n=5)).verdict == FAILS  # not halved
    v = C.dropping(_dropping(0.2, 0.05, n=5))
    assert "can even improve the performance" in v.source and "cost" in v.evidence
    assert C.dropping(ctx()).verdict == MISSING


def test_dropping_improves_needs_an_interval_above_zero_on_some_metric():
    assert C.dropping_improves(_dropping(-5.0, 0.3)).verdict == HOLDS
    assert C.dropping_improves(_dropping(5.0, 0.3)).verdict == FAILS
    assert C.dropping_improves(_dropping(0.1, 3.0)).verdict == INCONCLUSIVE


def test_flickr_claims_read_only_the_runs_trained_on_flickr30k():
    from bench.report import flickr_claims as F

    flickr = {"params": {"dataset": "flickr30k"}}
    base, large = (
        seeds("base", mean=60, sd=0.5, **flickr),
        seeds("large", mean=75, sd=0.5, n_layers=8, **flickr),
    )
    coco = seeds("base", mean=100, sd=0.5) + seeds("large", mean=90, sd=0.5, n_layers=8)
    v = F.larger_lm_flickr(ctx(*base, *large, *coco))
    assert v.verdict == HOLDS and "61.5 → 72.3 → 75.4" in v.paper
    assert "large − base +14.6" in v.evidence  # the flickr30k runs only
    assert C.larger_lm(ctx(*base, *large, *coco)).verdict == FAILS  # the coco runs only
    missing = F.larger_lm_flickr(ctx(*coco))
    assert missing.verdict == MISSING and "base LM on flickr30k" in missing.evidence
    assert "sweep `table1`" in missing.evidence

    def vlp_large(mean, **kw):
        return seeds("large", mean=mean, sd=0.05, n=5, n_layers=8, vlp=True, **flickr, **kw)

    v = F.dropping_flickr(ctx(*vlp_large(70.0), *vlp_large(69.8, drop=4)))
    assert (
        v.verdict == HOLDS
        and "77.2 → 79.2" in v.paper
        and "(×0.40, 4 of 8 layers dropped)" in v.evidence
    )
    assert F.dropping_flickr(ctx(*vlp_large(70.0), *vlp_large(60.0, drop=4))).verdict == FAILS
    assert F.dropping_flickr(ctx(*vlp_large(70.0))).verdict == MISSING


def test_vlp_mean_gain_over_sizes():
    runs = [
        *seeds("base", mean=100, sd=0.3),
        *seeds("base", mean=104, sd=0.3, vlp=True),
        *seeds("large", mean=120, sd=0.3, n_layers=8),
        *seeds("large", mean=123, sd=0.3, n_layers=8, vlp=True),
    ]
    v = C.vlp_helps(ctx(*runs))
    assert v.verdict == HOLDS and re.search(r"mean gain \+3\.\d \[\+3", v.evidence)
    flat = [
        *seeds("base", mean=100, sd=4),
        *seeds("base", mean=100.5, sd=4, vlp=True),
    ]
    assert C.vlp_helps(ctx(*flat)).verdict == INCONCLUSIVE


def test_test_set_resamples_enter_the_interval():
    """With paired resamples the interval also carries the test-set noise."""

    class FakeResamples:
        def matrix(self, runs, metric):
            shift = np.linspace(-5, 5, 400)  # a test-set spread that moves the LMs differently
            scale = {"base": 1.0, "large": 3.0}
            return np.stack([r.metrics[metric] + shift * scale[r.lm_size] for r in runs], axis=1)

    base = nocaps_seeds("base", 3, 100, 80, 90, 60, 0.3)
    large = nocaps_seeds("large", 3, 103, 83, 92, 63, 0.3, n_layers=8)
    quiet = C.larger_lm(ctx(*base, *large))
    loud = C.larger_lm(C.ClaimContext(runset(*base, *large), PAPER, resamples=FakeResamples()))
    assert loud.intervals[0].test_se is not None and quiet.intervals[0].test_se is None
    w = [iv.high - iv.low for iv in (quiet.intervals[0], loud.intervals[0])]
    assert w[1] > w[0]


def test_every_claim_quotes_the_paper_or_names_its_table():
    texts = C.claim_texts()
    for key, text in texts.items():
        source = text["source"]
        assert (
            source.startswith('"')
            or '"' in source
            or "derived from" in source
            or ("control of this harness" in source)
        ), key
    quoted = [t["source"] for t in texts.values() if '"' in t["source"]]
    assert any("agnostic to the pre-trained language model" in q for q in quoted)
    assert any("performance gap becomes larger" in q for q in quoted)
    assert any("10 times fewer trainable parameters" in q for q in quoted)


def test_mini_report_lists_every_claim_with_a_verdict():
    runs = nocaps_seeds("base", 3, 100, 80, 90, 60, 0.5) + nocaps_seeds(
        "large", 3, 110, 95, 95, 80, 0.5, n_layers=8
    )
    verdicts = C.check_claims(runset(*runs), PAPER)
    keys = [v.key for v in verdicts]
    assert keys == list(C.claim_texts())
    by = {v.key: v for v in verdicts}
    assert by["vs_clipcap"].verdict == MISSING and "clipcap" in by["vs_clipcap"].evidence
    assert by["gap_grows"].verdict == MISSING
    assert by["agnostic"].verdict == MISSING and "Llama" in by["agnostic"].evidence
    pretrained = by["pretrained_lm"]
    assert pretrained.verdict == MISSING and "lm_family_smollm2" in pretrained.evidence
    assert by["fewer_params"].verdict == MISSING and "base LM (full)" in by["fewer_params"].evidence
    assert by["vs_vlt5"].verdict == NOT_CHECKED and by["vs_oscar_nocaps"].verdict == NOT_CHECKED
    assert all(v.verdict in VERDICTS for v in verdicts)


def test_paper_profile_checks_published_rows():
    def paper_run(lm, layers, width, test, overall, s):
        return make_run(
            lm,
            n_layers=layers,
            d_lm=width,
            seed=s,
            profile="paper",
            metrics={
                "test/cider": test + 0.2 * s,
                "nocaps/overall/cider": overall + 0.2 * s,
                "trainable_params": 14e6,
            },
            params={"data.captions": "data/coco/dataset_coco.json"},
        )

    runs = [paper_run("base", 12, 768, 117.0, 70.0, s) for s in range(3)]
    runs += [paper_run("large", 36, 1280, 120.0, 79.0, s) for s in range(3)]
    verdicts = C.check_claims(runset(*runs, profile="paper"), PAPER)
    by = {v.key: v for v in verdicts if v.key != "published"}
    assert by["fewer_params"].verdict == HOLDS  # 117.2 vs OSCAR-base 115.6, within 2 or better
    assert by["vs_clipcap"].verdict == HOLDS  # 120.2 > 113.1 and 79.2 > 65.8
    assert by["vs_oscar_nocaps"].verdict == HOLDS  # 70.2 > 63.8
    assert by["gap_grows"].verdict == HOLDS
    assert by["vs_vlt5"].verdict == MISSING  # no medium run
    assert by["pretrained_lm"].verdict == NOT_CHECKED  # no random-weight LM at paper
    published = [v for v in verdicts if v.key == "published"]
    assert len(published) == len(PAPER.table1.ours()) + len(PAPER.table2.ours())
    base_row = published[0]
    assert "GPT2-Base" in base_row.claim and base_row.verdict == HOLDS  # 117.2 vs 116.7 ± 2
    assert sum(v.verdict == MISSING for v in published) == len(published) - 4


def test_controls_grounding_and_image_dependence():
    from bench.report import control_claims as K

    def scenes(recall, precision, repetition=0.0):
        extra = {"objects/test/n3/precision": precision, "objects/test/n3/repetition": repetition}
        metric = "objects/test/n3/recall"
        return seeds("large", mean=recall, sd=0.01, metric=metric, extra=extra, n_layers=8)

    assert K.grounding(ctx(*scenes(0.95, 0.97))).verdict == HOLDS
    # every name right, but one object of three named (three times): recall fails the claim
    v = K.grounding(ctx(*scenes(0.4, 0.98, repetition=0.6)))
    assert (
        v.verdict == FAILS
        and "object recall 0.4" in v.evidence
        and "repetition 0.6" in v.evidence  # 0.6 ± seed noise of 0.01
    )
    assert K.grounding(ctx(*scenes(0.95, 0.5))).verdict == FAILS  # names objects not there
    assert K.grounding(ctx(*scenes(0.86, 0.97))).verdict == INCONCLUSIVE  # recall ≈ threshold
    assert K.grounding(ctx(make_run())).verdict == MISSING
    paper = K.grounding(ctx(make_run(profile="paper"), profile="paper"))
    assert paper.verdict == NOT_CHECKED and "CHAIR" in paper.evidence

    def with_blank(ratio, n=3, **kw):
        out = []
        for s in range(n):
            m = {"test/cider": 90.0 + s, "control/test/blank_cider": (90.0 + s) / (ratio + 0.1 * s)}
            out.append(make_run("large", n_layers=8, seed=s, metrics=m, **kw))
        return out

    assert K.image_dependence(ctx(*with_blank(6.0))).verdict == HOLDS
    v = K.image_dependence(ctx(*with_blank(2.0)))
    assert v.verdict == FAILS and "2.1×" in v.evidence
    # a baseline that ignores the image is named, but I-Tuning's models decide
    blind = with_blank(0.7, params={"method": "clipcap-transformer"}, specs=("baselines",))
    v = K.image_dependence(ctx(*with_blank(6.0), *blind))
    assert v.verdict == HOLDS and "random-weight LMs below 3×: clipcap-transformer" in v.evidence
    # so is I-Tuning over an LM with random weights: the premise's control, not a captioner
    control = with_blank(1.1, params={"lm": "smollm2-random"}, specs=("lm_family_smollm2",))
    v = K.image_dependence(ctx(*with_blank(6.0), *control))
    assert v.verdict == HOLDS and "over 1 I-Tuning models" in v.evidence
    assert "below 3×: smollm2-random" in v.evidence


@pytest.mark.parametrize("check", [P.vs_clipcap, P.gap_grows])
def test_clipcap_claims_wait_for_clipcap_runs_at_mini(check):
    v = check(ctx(*nocaps_seeds("large", 3, 100, 80, 90, 60, 1.0, n_layers=8)))
    assert v.verdict == MISSING and "clipcap-transformer" in v.evidence
    assert "baselines" in v.evidence


def _clipcap(lm, test, overall, **kw):
    """ClipCap's transformer variant trained here: a method param, the baselines spec."""
    params = {"method": P.CLIPCAP_METHOD}
    return nocaps_seeds(lm, 3, test, overall, 0, 0, 1.0, params=params, specs=("baselines",), **kw)


def test_clipcap_claims_compare_with_clipcap_trained_here_at_mini():
    ours = [
        *nocaps_seeds("base", 3, 100, 80, 90, 60, 1.0),
        *nocaps_seeds("large", 3, 120, 100, 110, 90, 1.0, n_layers=8),
    ]
    theirs = [*_clipcap("base", 95, 78), *_clipcap("large", 100, 80, n_layers=8)]
    v = P.vs_clipcap(ctx(*ours, *theirs))
    assert v.verdict == HOLDS and len(v.intervals) == 2
    assert all(15 < iv.estimate < 25 for iv in v.intervals)  # +20 on test and NoCaps overall
    grows = P.gap_grows(ctx(*ours, *theirs))  # lead +2 at base, +20 at large
    assert grows.verdict == HOLDS and 14 < grows.intervals[0].estimate < 22
    worse = [*_clipcap("base", 95, 78), *_clipcap("large", 140, 120, n_layers=8)]
    assert P.vs_clipcap(ctx(*ours, *worse)).verdict == FAILS
    # ClipCap's runs never stand in for I-Tuning's rows
    assert (
        C.larger_lm(ctx(*nocaps_seeds("base", 3, 100, 80, 90, 60, 1.0), *theirs)).verdict == MISSING
    )


def _full(lm, test, params, **kw):
    """I-Tuning with every LM weight trained, run here: its params count ``params``."""
    runs = seeds(lm, mean=test, sd=1.0, params={"method": "full"}, specs=("baselines",), **kw)
    return [dataclasses.replace(r, metrics={**r.metrics, "trainable_params": params}) for r in runs]


def test_fewer_params_at_mini_is_non_inferiority_against_full_fine_tuning_at_each_size():
    sizes = {"base": {}, "medium": {"n_layers": 6}, "large": {"n_layers": 8}}
    ours = [r for lm, kw in sizes.items() for r in seeds(lm, mean=100, sd=1.0, **kw)]
    close = [r for lm, kw in sizes.items() for r in _full(lm, 99, 8e4, **kw)]
    v = P.fewer_params(ctx(*ours, *close))
    assert v.verdict == HOLDS and len(v.intervals) == 3  # 1 below I-Tuning: comparable
    assert "full trains 8.0× I-Tuning's parameters" in v.evidence
    far = [r for lm, kw in sizes.items() for r in _full(lm, 110, 8e4, **kw)]
    assert P.fewer_params(ctx(*ours, *far)).verdict == FAILS  # 10 above: not comparable
    partial = P.fewer_params(ctx(*ours, *(r for r in close if r.lm_size != "medium")))
    assert partial.verdict == MISSING and "medium LM (full)" in partial.evidence


def test_term_offsets_a_published_constant():
    group = runset(*seeds("base", mean=100, sd=0.0)).groups()[0]
    term = C.ClaimContext(runset(), PAPER).term(group, "test/cider", offset=90.0)
    assert isinstance(term, Term) and term.seeds == pytest.approx([10.0] * 3)
