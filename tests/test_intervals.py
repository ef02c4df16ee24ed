"""The statistics behind the verdicts, on synthetic results whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from bench.report.intervals import Term, contrast, difference
from bench.report.verdicts import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    equivalence,
    non_inferiority,
    superiority,
)

RNG = np.random.default_rng(20261129)


def _setting(mean: float, seed_sd: float, n: int, test_sd: float = 0.0, resamples: int = 1000):
    """n seeds of a setting scoring ``mean`` with seed noise ``seed_sd``; each run's score on
    ``resamples`` test-set resamples moves by a shared ``test_sd`` (resamples are paired)."""
    seeds = mean + seed_sd * RNG.standard_normal(n)
    shift = test_sd * RNG.standard_normal((resamples, 1))
    return seeds, seeds[None, :] + shift


def test_a_real_difference_of_5_with_small_noise_holds():
    a, ra = _setting(100.0, 0.5, 3, test_sd=0.3)
    b, rb = _setting(105.0, 0.5, 3, test_sd=0.3)
    iv = difference(Term.of(1, a, ra), Term.of(1, b, rb))
    assert iv.low > 0 and iv.high < 10 and abs(iv.estimate - 5) < 1.5
    assert superiority(iv) == HOLDS


def test_a_difference_of_half_a_point_under_seed_noise_3_is_inconclusive():
    verdicts = []
    for _ in range(20):
        a, _r = _setting(100.0, 3.0, 3)
        b, _r = _setting(100.5, 3.0, 3)
        verdicts.append(superiority(difference(a, b)))
    # a 95 % interval decides a wrong way at most ~1 in 20 times; here it must stay undecided
    assert verdicts.count(INCONCLUSIVE) >= 18
    assert FAILS not in verdicts


def test_a_small_certain_cost_holds_the_at_most_one_claim():
    full, _ = _setting(100.0, 0.1 / np.sqrt(2), 5)
    dropped, _ = _setting(99.8, 0.1 / np.sqrt(2), 5)
    cost = difference(dropped, full)  # full − dropped
    assert 0.0 < cost.high <= 1.0
    assert non_inferiority(cost, margin=1.0) == HOLDS


def test_a_cost_of_0_9_with_noise_2_does_not_decide_the_at_most_one_claim():
    full, _ = _setting(100.0, 2.0, 3)
    dropped, _ = _setting(99.1, 2.0, 3)
    cost = difference(dropped, full)
    assert cost.low < 1.0 < cost.high
    assert non_inferiority(cost, margin=1.0) == INCONCLUSIVE


def test_a_large_cost_does_not_hold_the_claim():
    full, _ = _setting(100.0, 1.0, 3)
    dropped, _ = _setting(80.0, 1.0, 3)
    assert non_inferiority(difference(dropped, full), margin=1.0) == FAILS


@pytest.mark.parametrize("gap", [0.5, 5.0, 50.0, -50.0])
def test_one_seed_never_decides_a_difference(gap):
    iv = difference([100.0], [100.0 + gap, 101.0, 99.0])
    assert not iv.known
    assert superiority(iv) == INCONCLUSIVE
    assert non_inferiority(iv, margin=1.0) == INCONCLUSIVE
    assert equivalence(iv, tolerance=2.0) == INCONCLUSIVE
    assert "one seed" in iv.fmt()


def test_seed_only_interval_is_welchs():
    """Without test-set resamples the interval is Welch's t interval of the two seed samples."""
    from scipy import stats

    a, b = np.array([1.0, 2.0, 4.0]), np.array([5.0, 7.0, 6.5, 8.0])
    iv = difference(a, b)
    res = stats.ttest_ind(b, a, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert iv.low == pytest.approx(ci.low) and iv.high == pytest.approx(ci.high)
    assert iv.test_se is None


def test_test_set_noise_widens_the_interval():
    seeds_a, seeds_b = np.array([10.0, 11.0, 12.0]), np.array([13.0, 14.0, 15.0])
    quiet = difference(seeds_a, seeds_b)
    noisy_a = seeds_a[None, :] + 2.0 * RNG.standard_normal((2000, 1))
    noisy_b = seeds_b[None, :] + 2.0 * RNG.standard_normal((2000, 1))
    loud = difference(Term.of(1, seeds_a, noisy_a), Term.of(1, seeds_b, noisy_b))
    assert loud.test_se == pytest.approx(2.0 * np.sqrt(2), rel=0.1)
    assert loud.high - loud.low > quiet.high - quiet.low


def test_paired_resamples_cancel_a_shared_test_set_effect():
    """Both settings are scored on the same resampled images: a shift that moves both runs alike
    (an easier resample) does not widen the interval of their difference."""
    seeds_a, seeds_b = np.array([10.0, 11.0, 12.0]), np.array([13.0, 14.0, 15.0])
    shared = 5.0 * RNG.standard_normal((1000, 1))
    iv = difference(Term.of(1, seeds_a, seeds_a + shared), Term.of(1, seeds_b, seeds_b + shared))
    assert iv.test_se == pytest.approx(0.0, abs=1e-9)


def test_difference_of_differences():
    """Out-of-domain gain minus in-domain gain: a four-term contrast."""
    gain = contrast(
        [
            Term.of(-1, [50.0, 51.0, 49.0]),  # base, out of domain
            Term.of(+1, [60.0, 61.0, 59.0]),  # large, out of domain
            Term.of(+1, [80.0, 81.0, 79.0]),  # base, in domain
            Term.of(-1, [82.0, 83.0, 81.0]),  # large, in domain
        ]
    )
    assert gain.estimate == pytest.approx(8.0)
    assert superiority(gain) == HOLDS


def test_equivalence_with_a_published_number():
    """Reproduced seeds against a published constant: the seeds' interval of the offset."""
    published = 120.0
    close = contrast([Term.of(1, np.array([119.5, 120.5, 120.2, 119.9]) - published)])
    assert equivalence(close, tolerance=2.0) == HOLDS
    far = contrast([Term.of(1, np.array([110.0, 111.0, 109.5]) - published)])
    assert equivalence(far, tolerance=2.0) == FAILS
    wide = contrast([Term.of(1, np.array([112.0, 128.0, 120.0]) - published)])
    assert equivalence(wide, tolerance=2.0) == INCONCLUSIVE
