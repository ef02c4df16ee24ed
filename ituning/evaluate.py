"""Evaluation of a trained model the way the paper does it, plus two controls for the mini world.

* Karpathy splits: BLEU-1..4, METEOR, ROUGE-L, CIDEr (SPICE when its jars exist), beam search.
* NoCaps-style sets: the same per domain (in / near / out) and overall.
* Image-ablation control (on request): the same model captioning a blank image filled with the
  training set's mean colour. If captions did not depend on the image, its CIDEr would match the
  real one; the ratio measures how much the image matters.
* Grounding (on request, where records carry ``objects``): the fraction of shape and colour words in
  generated captions whose object is really in the image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ituning.data.records import CaptionDataset
from ituning.decode import DecodeSettings, caption_dataset, generate_captions
from ituning.methods.base import Captioner
from ituning.metrics import CaptionScorer, naming_precision
from ituning.metrics.objects import object_scores
from ituning.phase_clock import PhaseClock
from ituning.text import CaptionCodec

VisualFn = Callable[[Sequence[str]], torch.Tensor]


@dataclass
class EvalOutput:
    metrics: dict[str, float] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    predictions: dict[str, dict[str, str]] = field(default_factory=dict)


def references(dataset: CaptionDataset) -> dict[str, list[str]]:
    return {r.image_id: list(r.captions) for r in dataset}


def _flat(prefix: str, values: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}/{k}": float(v) for k, v in values.items()}


def evaluate_split(
    name: str,
    dataset: CaptionDataset,
    model: Captioner,
    codec: CaptionCodec,
    visual: VisualFn,
    scorer: CaptionScorer,
    settings: DecodeSettings,
    out: EvalOutput,
    *,
    progress: bool = True,
    clock: PhaseClock | None = None,
) -> dict[str, str]:
    clock = clock or PhaseClock()
    ids = [r.image_id for r in dataset]
    with clock("decode"):
        preds = caption_dataset(
            model, codec, ids, visual, settings, desc=f"captioning {name}", progress=progress
        )
    out.predictions[name] = preds
    with clock("score"):
        _score_split(name, dataset, preds, scorer, out)
    return preds


def _score_split(
    name: str,
    dataset: CaptionDataset,
    preds: dict[str, str],
    scorer: CaptionScorer,
    out: EvalOutput,
) -> None:
    refs = references(dataset)
    if any(r.domain for r in dataset):
        domains = {r.image_id: r.domain for r in dataset}
        for domain, scores in scorer.score_by_domain(preds, refs, domains).items():
            out.metrics.update(_flat(f"{name}/{domain}", scores.values))
            out.unavailable.update(scores.unavailable)
    else:
        scores = scorer.score(preds, refs)
        out.metrics.update(_flat(name, scores.values))
        out.unavailable.update(scores.unavailable)


def blank_image_control(
    name: str,
    dataset: CaptionDataset,
    model: Captioner,
    codec: CaptionCodec,
    blank_visual: torch.Tensor,
    scorer: CaptionScorer,
    settings: DecodeSettings,
    out: EvalOutput,
) -> None:
    """CIDEr of the caption the model gives a mean-colour blank image, against every reference."""
    dtype = model.visual_dtype
    caption = generate_captions(model, codec, blank_visual.to(dtype), settings)[0]
    preds = {r.image_id: caption for r in dataset}
    scores = scorer.score(preds, references(dataset))
    out.metrics[f"control/{name}/blank_cider"] = scores.values["cider"]
    real = out.metrics.get(f"{name}/cider")
    if real is not None and scores.values["cider"] > 0:
        out.metrics[f"control/{name}/image_ratio"] = real / scores.values["cider"]
    out.predictions[f"{name}_blank"] = {"*": caption}


def grounding(
    name: str,
    dataset: CaptionDataset,
    predictions: Mapping[str, str],
    lexicons: Mapping[str, Mapping[str, str]],
    out: EvalOutput,
) -> None:
    """Naming precision per attribute (e.g. shape, colour), over records that list their objects;
    with shape and colour lexicons, object recall, precision and repetition too."""
    with_objects = [r for r in dataset if "objects" in r.meta]
    if not with_objects:
        out.unavailable[f"grounding/{name}"] = "records carry no 'objects' annotation"
        return
    for attribute, lexicon in lexicons.items():
        present = {r.image_id: {str(o[attribute]) for o in r.meta["objects"]} for r in with_objects}
        preds = {i: predictions[i] for i in present}
        result = naming_precision(preds, present, lexicon)
        if result.precision is not None:
            out.metrics[f"grounding/{name}/{attribute}_precision"] = result.precision
        out.metrics[f"grounding/{name}/{attribute}_mentions"] = float(result.mentions)
    if {"shape", "colour"} <= lexicons.keys():
        objects = {
            r.image_id: [(o["shape"], o["colour"]) for o in r.meta["objects"]] for r in with_objects
        }
        preds = {i: predictions[i] for i in objects}
        scores = object_scores(preds, objects, lexicons["shape"], lexicons["colour"])
        out.metrics.update(scores.metrics(f"objects/{name}"))


def hallucination(
    name: str,
    dataset: CaptionDataset,
    predictions: Mapping[str, str],
    instances: Path,
    synonyms: Path,
    out: EvalOutput,
) -> None:
    """CHAIR-i and CHAIR-s of a COCO split (``ituning.metrics.chair``); without the instance
    annotations or the synonym list, the reason (where the file belongs) is recorded instead."""
    from ituning.data.records import natural_id
    from ituning.metrics.chair import Chair, read_instances

    missing = [p for p in (instances, synonyms) if not Path(p).is_file()]
    if missing:
        chair_missing = Path(synonyms) in map(Path, missing)
        what = "the CHAIR synonym list" if chair_missing else "COCO's instances_val2014.json"
        out.unavailable[f"chair/{name}"] = f"{missing[0]}: missing; put {what} there"
        return
    chair = Chair.from_file(synonyms)
    refs = {natural_id(r.image_id): list(r.captions) for r in dataset}
    objects = chair.image_objects(read_instances(instances, refs), refs)
    scores = chair.score({natural_id(k): v for k, v in predictions.items()}, objects)
    for key, value in (("chair_i", scores.chair_i), ("chair_s", scores.chair_s)):
        if value is not None:
            out.metrics[f"chair/{name}/{key}"] = value
    out.metrics[f"chair/{name}/mentions"] = float(scores.mentions)
