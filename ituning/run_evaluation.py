"""The evaluation stage of a run: each split decoded and scored, then what the configuration asks
for beside the scores (naming precision and object metrics on scenes that list their objects,
CHAIR on COCO splits, the blank-image control) and Figure 3's attention map."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ituning.phase_clock import PhaseClock

if TYPE_CHECKING:
    from PIL import Image

    from ituning.data.records import CaptionDataset
    from ituning.train import LoadedData


def mean_colour_image(dataset: CaptionDataset, size: int, limit: int = 256) -> Image.Image:
    """A blank image filled with the mean colour of (up to ``limit``) training images."""
    import numpy as np
    from PIL import Image

    from ituning.data.images import load_image

    totals = np.zeros(3)
    recs = dataset.records[:limit]
    for rec in recs:
        totals += np.asarray(load_image(dataset.image_path(rec)), dtype=np.float64).mean(
            axis=(0, 1)
        )
    colour = tuple(int(round(c)) for c in totals / max(1, len(recs)))
    return Image.new("RGB", (size, size), colour)


def _shapes_lexicons(dataset: CaptionDataset) -> dict[str, dict[str, str]]:
    if not any("objects" in r.meta for r in dataset):
        return {}
    from ituning.data.shapes_vocab import attribute_words

    return {attribute: attribute_words(attribute) for attribute in ("shape", "colour")}


def evaluate_run(
    cfg,
    model,
    codec,
    encoder,
    visual,
    data: LoadedData,
    out_dir: Path,
    progress: bool,
    scorer,
    clock: PhaseClock,
):
    from contextlib import nullcontext

    from ituning.data.records import natural_id
    from ituning.decode import DecodeSettings
    from ituning.evaluate import EvalOutput, evaluate_split, grounding, hallucination
    from ituning.faultpoints import fault_point
    from ituning.metrics import CaptionScorer, write_coco_results

    settings = DecodeSettings(
        beam=cfg.eval.beam,
        max_new_tokens=cfg.eval.max_new_tokens,
        length_penalty=cfg.eval.length_penalty,
        batch_images=cfg.eval.batch_images,
    )
    out = EvalOutput()
    artifacts: dict[str, Path] = {}
    with nullcontext(scorer) if scorer is not None else CaptionScorer() as scorer:
        for name, dataset in data.evals.items():
            preds = evaluate_split(
                name,
                dataset,
                model,
                codec,
                visual,
                scorer,
                settings,
                out,
                progress=progress,
                clock=clock,
            )
            path = out_dir / f"predictions_{name}.json"
            write_coco_results({natural_id(k): v for k, v in preds.items()}, path)
            artifacts[f"predictions/{name}"] = path
            fault_point("evaluate.split")
            if cfg.eval.grounding and name != "nocaps":
                with clock("controls"):
                    grounding(name, dataset, preds, _shapes_lexicons(dataset), out)
            if name != "nocaps" and cfg.data.instances and cfg.data.chair_synonyms:
                with clock("controls"):
                    hallucination(
                        name, dataset, preds, cfg.data.instances, cfg.data.chair_synonyms, out
                    )
        first = next(iter(data.evals.values()), None)
        if first is not None and len(first) and hasattr(model, "capture_attention"):  # Figure 3
            from ituning.attention import figure_for_image

            figure = out_dir / "attention.png"
            with clock("attention"):
                figure_for_image(
                    model, codec, encoder, first.image_path(first[0]), figure, settings
                )
            artifacts["attention"] = figure
        if cfg.eval.blank_control:
            with clock("controls"):
                blank_controls(cfg, model, codec, encoder, data, scorer, settings, out)
    from ituning.train import RunResult

    return RunResult(metrics=out.metrics, unavailable=out.unavailable, artifacts=artifacts)


def blank_controls(cfg, model, codec, encoder, data: LoadedData, scorer, settings, out) -> None:
    import torch

    from ituning.evaluate import blank_image_control
    from ituning.train import feature_dtype

    blank = mean_colour_image(data.train, size=encoder.image_size)
    with torch.inference_mode():
        pixels = encoder.preprocess(blank).unsqueeze(0).to(next(encoder.parameters()).device)
        # rounded like the cached features of the real images it is compared with
        blank_visual = encoder(pixels).to(feature_dtype(cfg))
    for name, dataset in data.evals.items():
        if name != "nocaps":
            blank_image_control(name, dataset, model, codec, blank_visual, scorer, settings, out)
