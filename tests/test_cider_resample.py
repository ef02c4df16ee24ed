"""The vectorised CIDEr-D of resampled test sets equals pycocoevalcap's, resample by resample."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocoevalcap.cider.cider import Cider

from ituning.metrics.cider_resample import CiderResampler, bootstrap_weights

WORDS = ["a", "red", "blue", "big", "small", "circle", "square", "heart", "left", "of", "the"]
sentence = st.lists(st.sampled_from(WORDS), min_size=1, max_size=9).map(" ".join)
image = st.tuples(sentence, st.lists(sentence, min_size=1, max_size=4))


def _reference(refs: dict, hyps: dict, multiplicity: dict) -> float:
    """pycocoevalcap on a set where an image drawn k times is k distinct documents."""
    gts, res = {}, {}
    for i, k in multiplicity.items():
        for j in range(int(k)):
            gts[f"{i}#{j}"] = refs[i]
            res[f"{i}#{j}"] = [hyps[i]]
    return Cider().compute_score(gts, res)[0]


@settings(max_examples=40, deadline=None)
@given(st.lists(image, min_size=2, max_size=7), st.integers(0, 2**16))
def test_equals_pycocoevalcap_on_the_set_and_its_resamples(images, seed):
    refs = {f"im{i}": r for i, (_, r) in enumerate(images)}
    hyps = {f"im{i}": h for i, (h, _) in enumerate(images)}
    resampler = CiderResampler(refs)
    weights = np.vstack([np.ones(len(refs)), bootstrap_weights(len(refs), 3, seed)])
    got = resampler.scores(hyps, weights, block=2)
    for row, value in zip(weights, got, strict=True):
        expected = _reference(refs, hyps, dict(zip(resampler.ids, row, strict=True)))
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_bootstrap_weights_draw_every_image_count_with_replacement():
    w = bootstrap_weights(50, 200, seed=3)
    assert w.shape == (200, 50) and (w.sum(axis=1) == 50).all()
    assert (w == 0).any() and (w > 1).any()
    np.testing.assert_array_equal(w, bootstrap_weights(50, 200, seed=3))


def test_missing_hypothesis_or_reference_is_an_error():
    with pytest.raises(ValueError, match="at least one reference"):
        CiderResampler({"a": []})
    with pytest.raises(ValueError, match="no hypothesis"):
        CiderResampler({"a": ["x y"], "b": ["y"]}).scores({"a": "x"}, np.ones((1, 2)))
