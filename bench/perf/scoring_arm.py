"""Row P5: scoring COCO Karpathy-test captions twice with one CaptionScorer.

The second call shows the cost without the METEOR JVM's start-up; the row is met when that JVM
started once for both calls. It needs Java and pycocoevalcap's data: without them the row says
why it did not run instead of failing the benchmark.
"""

from __future__ import annotations

import time

from bench.perf.results import Report, Row
from bench.perf.settings import Sizes
from ituning.errors import ConfigError


def measure_scoring(sizes: Sizes, report: Report) -> None:
    """P5: COCO metrics on Karpathy-test captions, first reference predicted against the rest."""
    what = f"scoring {sizes.score_captions:,} captions (BLEU, METEOR, ROUGE-L, CIDEr), wall time"
    try:
        from ituning.data.coco import build_coco_karpathy, pycocoevalcap_coco_archive
        from ituning.metrics import CaptionScorer

        archive = pycocoevalcap_coco_archive()
        if archive is None:
            raise ConfigError("pycocoevalcap's spice-1.0.jar (COCO annotations) is missing")
        data = build_coco_karpathy(archive, ".", splits=["test"], check_images=False)
        records = list(data)[: sizes.score_captions]
        preds = {r.image_id: r.captions[0] for r in records}
        refs = {r.image_id: list(r.captions[1:]) for r in records}
        with CaptionScorer(metrics=("bleu", "meteor", "rouge_l", "cider")) as scorer:
            t0 = time.perf_counter()
            first = scorer.score(preds, refs)
            t_first = time.perf_counter() - t0
            t0 = time.perf_counter()
            scorer.score(preds, refs)
            t_second = time.perf_counter() - t0
            starts = scorer.meteor_starts
    except Exception as exc:  # P5 needs Java and pycocoevalcap's data: report, don't crash
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        report.rows.append(Row("P5", what, "n/a", "n/a", f"not run: {reason}", "", False))
        return
    n_refs = sorted({len(v) for v in refs.values()})
    report.rows.append(
        Row(
            "P5",
            what,
            f"{t_first:.1f} s (first call, METEOR JVM start-up included)",
            f"{t_second:.1f} s (second call, same scorer)",
            f"METEOR started {starts}× for 2 evaluations",
            "wall time; METEOR started once",
            starts == 1,
            note=(
                f"{len(records):,} COCO Karpathy test images, reference 1 scored against the "
                f"other {'/'.join(map(str, n_refs))}: CIDEr {first.values['cider']:.1f}, "
                f"BLEU-4 {first.values['bleu4']:.1f}, METEOR {first.values['meteor']:.1f}, "
                f"ROUGE-L {first.values['rouge_l']:.1f}"
            ),
        )
    )
