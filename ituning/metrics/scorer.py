"""COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE) through pycocoevalcap 1.2.

One :class:`CaptionScorer` owns one METEOR JVM and reuses it for every evaluation (a NoCaps domain
breakdown is four evaluations). Captions go through pycocoevalcap's PTB tokenizer, as on the COCO
server. Reported ``values`` are pycocoevalcap's numbers ×100, the scale of the paper's tables
(CIDEr 119.4, not 1.194); ``raw`` keeps the unscaled ones.

CIDEr-D's document frequencies come from the references of the evaluated set itself, so a score on a
subset is not comparable with one on the full split, and a single-image set always scores CIDEr 0
(every n-gram then has idf log(1/1) = 0).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer

from ituning.errors import ConfigError, DataError
from ituning.metrics.jvm import ptb_lines
from ituning.metrics.meteor import MeteorProcess
from ituning.metrics.spice import install_spice_jars, run_spice, spice_status

METRIC_FAMILIES = ("bleu", "meteor", "rouge_l", "cider", "spice")
METRIC_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider", "spice")
METRIC_LABELS = {
    "bleu1": "BLEU-1",
    "bleu2": "BLEU-2",
    "bleu3": "BLEU-3",
    "bleu4": "BLEU-4",
    "meteor": "METEOR",
    "rouge_l": "ROUGE-L",
    "cider": "CIDEr",
    "spice": "SPICE",
}
NOCAPS_DOMAINS = ("in-domain", "near-domain", "out-of-domain")
OVERALL = "overall"


@dataclass(frozen=True)
class Scores:
    """One evaluation.

    ``values``: metric -> score ×100 (paper scale). ``raw``: the same, as pycocoevalcap returns it.
    ``per_image``: metric -> image id -> raw per-image score (METEOR's corpus score is not the mean of
    these; BLEU's per-image scores are sentence-level BLEU). ``unavailable``: metric -> why it was
    not computed.
    """

    values: dict[str, float]
    unavailable: dict[str, str] = field(default_factory=dict)
    raw: dict[str, float] = field(default_factory=dict)
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    n_images: int = 0

    def summary(self) -> str:
        parts = [f"{METRIC_LABELS[k]} {v:.1f}" for k, v in self.values.items()]
        parts += [f"{METRIC_LABELS.get(k, k)} n/a" for k in self.unavailable]
        return f"{', '.join(parts)} ({self.n_images} images)"


def sanitise_caption(text: str) -> str:
    """Collapse all whitespace (incl. CR, U+2028, U+0085) and drop control characters and ``|||``.

    The PTB tokenizer is fed one caption per line and METEOR one ``|||``-separated item per line; a
    stray line break would silently shift every later caption onto the wrong image.
    """
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(text.replace("|||", " ").split())


def _preview(ids: Iterable[str], limit: int = 3) -> str:
    ids = sorted(ids)
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (", ..." if len(ids) > limit else "")


def _normalise_ids(mapping: Mapping, what: str) -> dict[str, object]:
    out = {str(k): v for k, v in mapping.items()}
    if len(out) != len(mapping):
        raise DataError(
            f"{what} has image ids that collide once written as strings (e.g. 1 and '1')"
        )
    return out


def validate_inputs(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Check that every image has exactly one prediction and at least one reference (ids as str)."""
    preds = _normalise_ids(predictions, "predictions")
    refs = _normalise_ids(references, "references")
    if not preds:
        raise DataError("no predictions to score: the predictions mapping is empty")
    bad_pred = [i for i, c in preds.items() if not isinstance(c, str)]
    if bad_pred:
        raise DataError(
            f"{len(bad_pred)} predictions are not strings (e.g. {_preview(bad_pred)}): "
            "give one caption string per image"
        )
    extra = preds.keys() - refs.keys()
    if extra:
        raise DataError(
            f"{len(extra)} predictions have no references (e.g. {_preview(extra)}): "
            "predict only images of the evaluated split"
        )
    missing = refs.keys() - preds.keys()
    if missing:
        raise DataError(
            f"{len(missing)} of {len(refs)} images with references have no prediction "
            f"(e.g. {_preview(missing)}): predict every image, or pass only the references scored"
        )
    bad_refs = [
        i
        for i, r in refs.items()
        if isinstance(r, str)
        or not isinstance(r, Sequence)
        or not r
        or not all(isinstance(x, str) for x in r)
    ]
    if bad_refs:
        raise DataError(
            f"{len(bad_refs)} images have no usable references (e.g. {_preview(bad_refs)}): "
            "each image needs a non-empty list of caption strings"
        )
    return preds, {i: list(r) for i, r in refs.items()}  # type: ignore[arg-type]


class CaptionScorer:
    """Scores captions against references; holds one METEOR JVM for its lifetime.

    ``metrics`` picks families from ``("bleu", "meteor", "rouge_l", "cider", "spice")``; SPICE is
    computed only when Stanford CoreNLP 3.6.0 is present (see :func:`spice_status`), else it is listed
    in ``Scores.unavailable`` with the reason. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        *,
        metrics: Sequence[str] = METRIC_FAMILIES,
        spice_jars: str | os.PathLike[str] | None = None,
        java: str = "java",
    ) -> None:
        unknown = [m for m in metrics if m not in METRIC_FAMILIES]
        if unknown or not metrics:
            raise ConfigError(
                f"unknown or no caption metrics {unknown or list(metrics)}; choose from "
                f"{', '.join(METRIC_FAMILIES)}"
            )
        if shutil.which(java) is None:
            raise ConfigError(
                f"`{java}` not found on PATH: the COCO caption metrics need a Java runtime "
                "(e.g. Debian package openjdk-17-jre-headless)"
            )
        tokenizer_dir = os.path.dirname(os.path.abspath(ptbtokenizer.__file__))
        if not os.access(tokenizer_dir, os.W_OK):
            raise ConfigError(
                f"pycocoevalcap's PTB tokenizer writes temporary files next to its jar, but "
                f"{tokenizer_dir} is not writable: install pycocoevalcap in a writable environment"
            )
        self.metrics = tuple(dict.fromkeys(metrics))
        self.java = java
        self.unavailable: dict[str, str] = {}
        self.spice_enabled = False
        if "spice" in self.metrics:
            ok, reason = spice_status(spice_jars)
            if ok:
                install_spice_jars(spice_jars)
                self.spice_enabled = True
            else:
                self.unavailable["spice"] = reason
        self._meteor: MeteorProcess | None = None
        self.meteor_starts = 0
        self._lock = threading.Lock()
        self._closed = False

    # ----------------------------------------------------------------------------- lifecycle
    def _ensure_meteor(self) -> MeteorProcess:
        if self._closed:
            raise ConfigError("this CaptionScorer was closed; create a new one")
        if self._meteor is None or not self._meteor.alive:
            self._meteor = MeteorProcess(self.java)
            self.meteor_starts += 1
        return self._meteor

    def close(self) -> None:
        """Stop the METEOR JVM (idempotent)."""
        self._closed = True
        if self._meteor is not None:
            self._meteor.close()

    def __enter__(self) -> CaptionScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------- scoring
    def score(
        self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
    ) -> Scores:
        """Score one prediction per image against that image's references."""
        preds, refs = validate_inputs(predictions, references)
        return self._score_groups(preds, refs, {OVERALL: sorted(preds)})[OVERALL]

    def score_by_domain(
        self,
        predictions: Mapping[str, str],
        references: Mapping[str, Sequence[str]],
        domains: Mapping[str, str],
    ) -> dict[str, Scores]:
        """Scores per domain and ``"overall"``, as the NoCaps evaluation reports them.

        Each domain is scored as its own evaluation set: CIDEr's document frequencies come from that
        domain's references only, as the official NoCaps evaluation computes them per domain. Keys:
        the NoCaps domains present (in-domain, near-domain, out-of-domain), any other labels sorted,
        then ``"overall"``. Tokenisation and METEOR matching run once for all of them.
        """
        preds, refs = validate_inputs(predictions, references)
        labels = {str(k): v for k, v in domains.items()}
        unlabelled = preds.keys() - labels.keys()
        if unlabelled:
            raise DataError(
                f"{len(unlabelled)} scored images have no domain (e.g. {_preview(unlabelled)}): "
                "give every image a domain such as in-domain / near-domain / out-of-domain"
            )
        groups: dict[str, list[str]] = {}
        for image_id in sorted(preds):
            groups.setdefault(str(labels[image_id]), []).append(image_id)
        if OVERALL in groups:
            raise DataError(f"domain label {OVERALL!r} is reserved for the whole set; rename it")
        order = [d for d in NOCAPS_DOMAINS if d in groups]
        order += sorted(d for d in groups if d not in NOCAPS_DOMAINS)
        ordered = {d: groups[d] for d in order}
        ordered[OVERALL] = sorted(preds)
        return self._score_groups(preds, refs, ordered)

    def _score_groups(
        self, preds: dict[str, str], refs: dict[str, list[str]], groups: dict[str, list[str]]
    ) -> dict[str, Scores]:
        with self._lock:
            # Start the JVM first: it loads its paraphrase table while the tokenizer runs.
            meteor = self._ensure_meteor() if "meteor" in self.metrics else None
            res_tok, gts_tok = self._tokenize(preds, refs)
            ids = sorted(preds)
            meteor_stats: dict[str, str] = {}
            if meteor is not None:
                stats = meteor.stats_many([(res_tok[i][0], gts_tok[i]) for i in ids])
                meteor_stats = dict(zip(ids, stats, strict=True))
            spice_scores: dict[str, float] = {}
            unavailable = dict(self.unavailable)
            if self.spice_enabled:
                try:
                    spice_scores = run_spice(
                        gts_tok, {i: res_tok[i][0] for i in ids}, java=self.java
                    )
                except Exception as exc:  # SPICE is optional: report why, keep the others
                    unavailable["spice"] = str(exc)
            return {
                name: self._aggregate(
                    members, gts_tok, res_tok, meteor_stats, spice_scores, unavailable
                )
                for name, members in groups.items()
            }

    def _tokenize(
        self, preds: dict[str, str], refs: dict[str, list[str]]
    ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        return ptb_tokenize(preds, refs, self.java)

    def _aggregate(
        self,
        ids: list[str],
        gts_tok: dict[str, list[str]],
        res_tok: dict[str, list[str]],
        meteor_stats: dict[str, str],
        spice_scores: dict[str, float],
        unavailable: dict[str, str],
    ) -> Scores:
        gts = {i: gts_tok[i] for i in ids}
        res = {i: res_tok[i] for i in ids}
        raw: dict[str, float] = {}
        per_image: dict[str, dict[str, float]] = {}

        def put(key: str, corpus: float, per: Sequence[float]) -> None:
            raw[key] = float(corpus)
            per_image[key] = {i: float(s) for i, s in zip(ids, per, strict=True)}

        if "bleu" in self.metrics:
            corpus, per = Bleu(4).compute_score(gts, res, verbose=0)
            for n in range(4):
                put(f"bleu{n + 1}", corpus[n], per[n])
        if "meteor" in self.metrics:
            assert self._meteor is not None
            corpus, per = self._meteor.evaluate([meteor_stats[i] for i in ids])
            put("meteor", corpus, per)
        if "rouge_l" in self.metrics:
            corpus, per = Rouge().compute_score(gts, res)
            put("rouge_l", corpus, per)
        if "cider" in self.metrics:
            corpus, per = Cider().compute_score(gts, res)
            put("cider", corpus, per)
        if "spice" in self.metrics and "spice" not in unavailable:
            per = [spice_scores[i] for i in ids]
            finite = [s for s in per if s == s]
            put("spice", sum(finite) / len(finite) if finite else float("nan"), per)
        values = {k: 100.0 * raw[k] for k in METRIC_KEYS if k in raw}
        return Scores(
            values=values,
            unavailable={k: v for k, v in unavailable.items() if k in self.metrics},
            raw={k: raw[k] for k in values},
            per_image=per_image,
            n_images=len(ids),
        )


def ptb_tokenize(
    preds: Mapping[str, str], refs: Mapping[str, Sequence[str]], java: str = "java"
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """PTB-tokenise predictions and references in one JVM call (it is line-wise), as the COCO
    evaluation does before every metric; ids may be any hashable keys."""
    keys = [("res", i) for i in preds] + [("gts", i) for i, caps in refs.items() for _ in caps]
    sentences = [sanitise_caption(c) for c in preds.values()]
    sentences += [sanitise_caption(c) for caps in refs.values() for c in caps]
    res: dict[str, list[str]] = {i: [] for i in preds}
    gts: dict[str, list[str]] = {i: [] for i in refs}
    for (side, i), line in zip(keys, ptb_lines(sentences, java), strict=True):
        (res if side == "res" else gts)[i].append(line)
    return res, gts
