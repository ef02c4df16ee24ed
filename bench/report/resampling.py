"""Paired test-set resamples of the runs' CIDEr: the test-set half of every claim's interval.

For one evaluation set (the test split, or one NoCaps-style domain, or all of NoCaps), the same
``N_RESAMPLES`` draws of its images with replacement are applied to every run evaluated on it,
so two runs are compared on the same resampled images (a *paired* bootstrap). Each resample is
re-scored at corpus level, with CIDEr's document frequencies recomputed from the resampled
references (``ituning.metrics.cider_resample``); the scores are cached per run (``cache`` below,
beside the tracking store: a finished run's predictions never change), so a report rebuild only
computes the runs it has not seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.report.artifacts import fetch_artifact
from bench.report.results import Run
from ituning.errors import ITuningError, first_line

N_RESAMPLES = 1000
SEED = 0
#: Part of every cache key: bump it when the resampled scores would change for the same run.
CACHE_VERSION = 1
METHOD = (
    f"paired bootstrap over test images ({N_RESAMPLES} resamples, the same for every run, each "
    "re-scored at corpus level with CIDEr's document frequencies recomputed)"
)


@dataclass(frozen=True)
class EvalSet:
    """Which images a metric is computed on: a split's file, and a NoCaps domain or all."""

    split: str  # "test" | "nocaps"
    domain: str | None  # None: the whole split ("overall" for NoCaps)

    @classmethod
    def of(cls, metric: str) -> EvalSet | None:
        """``test/cider`` -> test; ``nocaps/out-of-domain/cider`` -> that domain; other metrics
        (BLEU, METEOR, controls) have no resamples."""
        parts = metric.split("/")
        if parts[-1] != "cider" or parts[0] not in ("test", "val", "nocaps"):
            return None
        if len(parts) == 2:
            return cls(parts[0], None)
        if len(parts) == 3 and parts[0] == "nocaps":
            return cls("nocaps", None if parts[1] == "overall" else parts[1])
        return None


class Resamples:
    """Per-run CIDEr (×100) on each resample of an evaluation set; ``None`` where it cannot be
    computed (the reason is kept in :attr:`problems`)."""

    def __init__(self, uri: str, scratch: Path, cache: Path | None) -> None:
        self.uri = uri
        self.scratch = scratch
        self.cache = cache
        self.problems: dict[str, str] = {}
        self._refs: dict[tuple, tuple] = {}  # (file, split, domain) -> (resampler, weights)
        self._hyps: dict[tuple[str, str], dict[str, str]] = {}  # (run, split) -> captions

    def of(self, run: Run, metric: str) -> np.ndarray | None:
        where = EvalSet.of(metric)
        if where is None:
            return None
        cached = self._cache_file(run, metric)
        if cached is not None and cached.is_file():
            return np.load(cached)
        try:
            scores = self._compute(run, where)
        except (ITuningError, OSError, ValueError, KeyError) as exc:
            self.problems[f"{run.config_hash} {metric}"] = first_line(exc)
            return None
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp.npy")
            np.save(tmp, scores)
            tmp.replace(cached)
        return scores

    def matrix(self, runs: Iterable[Run], metric: str) -> np.ndarray | None:
        """``(resamples, runs)``, or None when any run lacks its resamples."""
        cols = [self.of(r, metric) for r in runs]
        if not cols or any(c is None for c in cols):
            return None
        return np.stack(cols, axis=1)

    def _cache_file(self, run: Run, metric: str) -> Path | None:
        if self.cache is None:
            return None
        slug = hashlib.sha256(
            f"{metric}|{N_RESAMPLES}|{SEED}|{CACHE_VERSION}".encode()
        ).hexdigest()[:10]
        return self.cache / f"{run.config_hash}-{slug}.npy"

    def _compute(self, run: Run, where: EvalSet) -> np.ndarray:
        from ituning.data.records import natural_id

        hyps = self._hypotheses(run, where.split)
        resampler, weights, ids = self._references(run, where)
        missing = [i for i in ids if natural_id(i) not in hyps]
        if missing:
            raise ValueError(
                f"{len(missing)} evaluated images have no prediction in "
                f"predictions_{where.split}.json"
            )
        return 100.0 * resampler.scores({i: hyps[natural_id(i)] for i in ids}, weights)

    def _hypotheses(self, run: Run, split: str) -> dict[str, str]:
        """A run's PTB-tokenised captions of one split, read and tokenised once for all the
        evaluation sets (NoCaps domains) drawn from it."""
        from ituning.metrics.results_file import read_coco_results
        from ituning.metrics.scorer import ptb_tokenize

        key = (run.config_hash, split)
        if key not in self._hyps:
            name = f"predictions_{split}.json"
            scratch = self.scratch / "resamples" / run.config_hash
            path = fetch_artifact(self.uri, run, name, f"predictions/{name}", scratch)
            tokens, _ = ptb_tokenize(read_coco_results(path), {})
            self._hyps[key] = {i: t[0] for i, t in tokens.items()}
        return self._hyps[key]

    def _references(self, run: Run, where: EvalSet):
        from ituning.metrics.cider_resample import CiderResampler, bootstrap_weights
        from ituning.metrics.scorer import ptb_tokenize

        if where.split == "nocaps":
            source = run.params.get("data.nocaps")
        else:
            source = run.params.get("data.captions")
        if not source or source == "null":
            raise ValueError(f"run {run.config_hash} names no {where.split} file")
        key = (source, where.split, where.domain, run.params.get("data.limit_eval_images"))
        if key not in self._refs:
            records = _records(run, where, source)
            _, refs = ptb_tokenize({}, {r.image_id: list(r.captions) for r in records})
            resampler = CiderResampler(refs)
            weights = bootstrap_weights(len(resampler.ids), N_RESAMPLES, SEED)
            self._refs[key] = (resampler, weights, resampler.ids)
        return self._refs[key]


def _records(run: Run, where: EvalSet, source: str) -> list:
    """The evaluated records, as the run's evaluation read them (same loader, same limit)."""
    from ituning.data.karpathy import read_karpathy
    from ituning.data.nocaps import read_nocaps
    from ituning.train import first_images

    if where.split == "nocaps":
        root = run.params.get("data.nocaps_image_root") or run.params.get("data.image_root")
        ds = read_nocaps(source, root, check_images=False)
    else:
        ds = read_karpathy(
            source, run.params["data.image_root"], splits=[where.split], check_images=False
        ).split(where.split)
    records = list(ds.records)
    limit = run.params.get("data.limit_eval_images")
    if limit and limit != "null":
        records = list(first_images(records, int(limit)))
    if where.domain is not None:
        records = [r for r in records if r.domain == where.domain]
    if not records:
        raise ValueError(f"no {where.split} images{' of ' + where.domain if where.domain else ''}")
    return records
