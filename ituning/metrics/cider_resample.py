"""CIDEr-D of many resamples of one evaluation set at once, for bootstrap intervals.

A test-set bootstrap must re-score the *corpus-level* metric on every resample: CIDEr's document
frequencies (its idf) come from the evaluated set's references, so a resample that holds an image
twice counts that image's references twice. Re-running pycocoevalcap a thousand times per run is
too slow; this module computes exactly the same numbers from sparse n-gram count matrices, where
a resample is a vector of per-image multiplicities and the idf is a matrix product.

Equal to ``pycocoevalcap.cider.Cider`` (to rounding) on the full set and on any resample whose
repeated images are given as distinct ids, including its quirks: the length penalty compares the
*bigram* counts of hypothesis and reference, and an n-gram in no reference has df = 1.
Inputs are PTB-tokenised strings, as the scorer produces them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import sparse

N_MAX = 4
SIGMA = 6.0


def _ngrams(sentence: str) -> Counter:
    words = sentence.split()
    return Counter(
        tuple(words[i : i + k]) for k in range(1, N_MAX + 1) for i in range(len(words) - k + 1)
    )


def bootstrap_weights(n_images: int, n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, n_images)`` multiplicities: each row draws ``n_images`` images with
    replacement. The same matrix applied to two models' captions gives a *paired* bootstrap."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_images, size=(n_resamples, n_images))
    return np.stack([np.bincount(row, minlength=n_images) for row in draws]).astype(np.float64)


class CiderResampler:
    """The references of one evaluation set, prepared for :meth:`scores` of any hypotheses."""

    def __init__(self, references: Mapping[str, Sequence[str]]) -> None:
        self.ids = sorted(references)
        if not self.ids or any(not references[i] for i in self.ids):
            raise ValueError("every image needs at least one reference caption")
        vocab: dict[tuple, int] = {}
        ref_counts = [[_ngrams(r) for r in references[i]] for i in self.ids]
        for refs in ref_counts:
            for counts in refs:
                for g in counts:
                    vocab.setdefault(g, len(vocab))
        self.vocab = vocab
        self.order = np.array([len(g) - 1 for g in vocab], dtype=np.int64)
        rows, cols, vals, owner, bigrams = [], [], [], [], []
        presence_rows, presence_cols = [], []
        for i, refs in enumerate(ref_counts):
            seen: set[int] = set()
            for counts in refs:
                r = len(owner)
                owner.append(i)
                bigrams.append(sum(c for g, c in counts.items() if len(g) == 2))
                for g, c in counts.items():
                    rows.append(r)
                    cols.append(vocab[g])
                    vals.append(float(c))
                    seen.add(vocab[g])
            presence_rows.extend([i] * len(seen))
            presence_cols.extend(seen)
        shape = (len(owner), len(vocab))
        self.refs = sparse.csr_matrix((vals, (rows, cols)), shape=shape)
        self.presence = sparse.csr_matrix(
            (np.ones(len(presence_rows)), (presence_rows, presence_cols)),
            shape=(len(self.ids), len(vocab)),
        )
        self.owner = np.array(owner)
        self.ref_bigrams = np.array(bigrams, dtype=np.float64)
        self.per_image = np.bincount(self.owner, minlength=len(self.ids)).astype(np.float64)

    def scores(
        self, hypotheses: Mapping[str, str], weights: np.ndarray, *, block: int = 64
    ) -> np.ndarray:
        """Corpus CIDEr-D (0-10 scale, as pycocoevalcap returns it) for each row of ``weights``
        (``(resamples, images)`` multiplicities over :attr:`ids`; ``np.ones((1, n))`` is the
        plain score of the whole set)."""
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        if weights.shape[1] != len(self.ids):
            raise ValueError(f"weights have {weights.shape[1]} columns for {len(self.ids)} images")
        missing = [i for i in self.ids if i not in hypotheses]
        if missing:
            raise ValueError(f"{len(missing)} images have no hypothesis (e.g. {missing[0]})")
        hyp, outside, hyp_bigrams = self._hypotheses(hypotheses)
        hyp_rows = hyp[self.owner]  # each reference row paired with its image's hypothesis
        clipped = hyp_rows.minimum(self.refs).multiply(self.refs).tocsr()
        hyp_sq = hyp.multiply(hyp).tocsr()
        ref_sq = self.refs.multiply(self.refs).tocsr()
        delta = hyp_bigrams[self.owner] - self.ref_bigrams
        penalty = np.exp(-(delta**2) / (2 * SIGMA**2))[:, None]
        out = np.empty(len(weights))
        for start in range(0, len(weights), block):
            w = weights[start : start + block]
            n_docs = w.sum(axis=1)
            log_n = np.log(n_docs)
            df = np.asarray(self.presence.T @ w.T).T  # (b, vocab)
            idf_sq = (log_n[:, None] - np.log(np.maximum(df, 1.0))) ** 2
            per_image = np.zeros((len(self.ids), len(w)))
            for n in range(N_MAX):
                v = np.where(self.order[None, :] == n, idf_sq, 0.0).T  # (vocab, b)
                num = clipped @ v
                norm_hyp = np.sqrt(hyp_sq @ v + outside[:, n : n + 1] * log_n[None, :] ** 2)
                norm_ref = np.sqrt(ref_sq @ v)
                denom = norm_hyp[self.owner] * norm_ref
                val = np.divide(num, denom, out=np.zeros_like(num), where=denom > 0) * penalty
                np.add.at(per_image, self.owner, val)
            per_image *= 10.0 / (N_MAX * self.per_image[:, None])
            out[start : start + len(w)] = (w * per_image.T).sum(axis=1) / n_docs
        return out

    def _hypotheses(self, hypotheses: Mapping[str, str]):
        rows, cols, vals = [], [], []
        outside = np.zeros((len(self.ids), N_MAX))  # squared counts of n-grams in no reference
        bigrams = np.zeros(len(self.ids))
        for i, image_id in enumerate(self.ids):
            for g, c in _ngrams(hypotheses[image_id]).items():
                if len(g) == 2:
                    bigrams[i] += c
                j = self.vocab.get(g)
                if j is None:
                    outside[i, len(g) - 1] += float(c) ** 2
                else:
                    rows.append(i)
                    cols.append(j)
                    vals.append(float(c))
        hyp = sparse.csr_matrix((vals, (rows, cols)), shape=(len(self.ids), len(self.vocab)))
        return hyp, outside, bigrams
