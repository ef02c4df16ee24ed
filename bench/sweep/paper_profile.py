"""The ``paper`` profile: GPT-2 base/medium/large (SmolLM2 as the Llama family) and CLIP ViT-B/16
(``openai``) from the Hugging Face cache, and the real datasets under ``--data-root``, laid out as::

    DATA_ROOT/coco/dataset_coco.json                Karpathy's split file (caption_datasets.zip)
    DATA_ROOT/coco/images/train2014/, val2014/       COCO 2014 images (the file's filepath/filename)
    DATA_ROOT/flickr30k/dataset_flickr30k.json      Karpathy's Flickr30k split file (same zip)
    DATA_ROOT/flickr30k/flickr30k-images/            Flickr30k images (the file's filename)
    DATA_ROOT/nocaps/nocaps_val_4500_captions.json   NoCaps validation annotations
    DATA_ROOT/nocaps/images/                         NoCaps validation images (file_name)
    DATA_ROOT/visual_genome/region_descriptions.json  Visual Genome v1.2 regions (VLP only)
    DATA_ROOT/visual_genome/image_data.json
    DATA_ROOT/visual_genome/VG_100K/, VG_100K_2/      Visual Genome images
    DATA_ROOT/coco/annotations/instances_val2014.json  COCO 2014 instances (CHAIR; optional)
    DATA_ROOT/coco/annotations/synonyms.txt           the CHAIR authors' synonym list (optional)

Without the last two, a run reports CHAIR as unavailable and says where they belong.

The backbones come from the Hugging Face cache by name, or, with ``--weights WEIGHTS``, from local
folders (each run records the folder and a digest of its weights as the backbone identity)::

    WEIGHTS/gpt2/, gpt2-medium/, gpt2-large/      hf download gpt2 --local-dir WEIGHTS/gpt2 ...
    WEIGHTS/HuggingFaceTB/SmolLM2-135M/ ...      the Llama-family LMs, only for points using them
    WEIGHTS/vit_base_patch16_clip_224.openai/     hf download timm/vit_base_patch16_clip_224.openai
                                                  --local-dir WEIGHTS/vit_base_patch16_clip_224.openai
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from bench.sweep.budgets import budget_of
from bench.sweep.cost import DataSizes
from bench.sweep.plan import RunPlan
from bench.sweep.profile import LMChoice, Profile
from ituning.errors import ConfigError

LAYOUT_DOC = "bench/sweep/paper_profile.py"

PAPER_LMS = {
    "base": LMChoice("gpt2", 12, 768),
    "medium": LMChoice("gpt2-medium", 24, 1024),
    "large": LMChoice("gpt2-large", 36, 1280),
}
#: Llama-family LMs of about GPT-2's sizes (124M / 355M / 774M), pre-trained on web text as GPT-2
#: was: I-Tuning is agnostic to the LM. The instruction-tuned 135M one is the mini profile's
#: ``smollm2`` at its real scale (``smollm2-random`` is the mini profile's alone). Unlike
#: :data:`PAPER_LMS`, ``--weights`` needs these only for points that use them.
LLAMA_FAMILY_LMS = {
    "llama-base": LMChoice("HuggingFaceTB/SmolLM2-135M", 30, 576),
    "llama-medium": LMChoice("HuggingFaceTB/SmolLM2-360M", 32, 960),
    "llama-large": LMChoice("HuggingFaceTB/SmolLM2-1.7B", 24, 2048),
    "smollm2": LMChoice("HuggingFaceTB/SmolLM2-135M-Instruct", 30, 576),
}

#: ``--weights`` folder names: each LM size's Hub id, and the open_clip repository of ViT-B/16.
VISION_FOLDER = "vit_base_patch16_clip_224.openai"

_VLP_LAYOUT = {
    "vlp_regions": ("visual_genome/region_descriptions.json", "Visual Genome regions"),
    "vlp_image_data": ("visual_genome/image_data.json", "Visual Genome image list"),
    "vlp_image_root": ("visual_genome", "Visual Genome images (VG_100K/, VG_100K_2/)"),
}
#: Each dataset's ``data`` settings under the data root: (path, what belongs there). Both start
#: VLP from the same Visual Genome set; NoCaps and CHAIR are COCO's (NoCaps scores models trained
#: on COCO; CHAIR needs COCO's instance annotations).
PAPER_LAYOUT: dict[str, dict[str, tuple[str, str]]] = {
    "coco": {
        "captions": ("coco/dataset_coco.json", "Karpathy's COCO split file"),
        "image_root": ("coco/images", "COCO 2014 images (train2014/, val2014/)"),
        "nocaps": ("nocaps/nocaps_val_4500_captions.json", "NoCaps validation annotations"),
        "nocaps_image_root": ("nocaps/images", "NoCaps validation images"),
        **_VLP_LAYOUT,
        "instances": ("coco/annotations/instances_val2014.json", "COCO 2014 instance annotations"),
        "chair_synonyms": ("coco/annotations/synonyms.txt", "the CHAIR authors' synonym list"),
    },
    "flickr30k": {
        "captions": ("flickr30k/dataset_flickr30k.json", "Karpathy's Flickr30k split file"),
        "image_root": ("flickr30k/flickr30k-images", "the Flickr30k images"),
        **_VLP_LAYOUT,
    },
}

#: Images per split of Karpathy's COCO split (113,287 train with restval) and Flickr30k split,
#: NoCaps validation and Visual Genome: what the paper's setup section gives (113.2k / 5k / 5k and
#: 29.8k / 1k / 1k, 4.5k, ~108k).
PUBLISHED_SIZES = {
    "coco": DataSizes({"train": 113_287, "val": 5_000, "test": 5_000}, nocaps=4_500, vlp=108_077),
    "flickr30k": DataSizes(
        {"train": 29_000, "val": 1_014, "test": 1_000}, nocaps=None, vlp=108_077
    ),
}


@dataclass(frozen=True)
class PaperProfile(Profile):
    paper_task: ClassVar[bool] = True

    def problems(self, plans: Sequence[RunPlan] = (), *, progress: bool = True) -> list[str]:
        """The data root, every dataset file read as the runs read it, every image decoded, the
        weights of every point present locally, and disk for the feature cache
        (``bench.sweep.paper_checks``)."""
        from bench.sweep.paper_checks import paper_problems

        return paper_problems(self, plans, progress=progress)

    def data_sizes(self) -> dict[str, DataSizes]:
        """Counted from the files; where a file is not in place yet, the dataset's published size
        (:data:`PUBLISHED_SIZES`), so that a sweep can be costed before the data is downloaded."""
        from dataclasses import replace

        names = {"splits": "captions", "nocaps": "NoCaps", "vlp": "Visual Genome"}
        out = {}
        for name, counted in super().data_sizes().items():
            published = PUBLISHED_SIZES[name]
            missing = [
                field
                for field in names
                if getattr(counted, field) is None and getattr(published, field) is not None
            ]
            out[name] = replace(
                counted,
                **{field: getattr(published, field) for field in missing},
                assumed=tuple(names[field] for field in missing),
            )
        return out


def paper_profile(
    runs_dir: Path, data_root: Path | str | None, scale: str, *, weights: Path | str | None = None
) -> PaperProfile:
    if data_root is None:
        raise ConfigError(
            "profile paper needs --data-root DIR holding coco/dataset_coco.json, coco/images/, "
            f"nocaps/, visual_genome/ and, for Flickr30k points, flickr30k/ (layout: {LAYOUT_DOC})"
        )
    root = Path(data_root)
    lms, vision, pretrained = {**PAPER_LMS, **LLAMA_FAMILY_LMS}, "ViT-B-16", "openai"
    unavailable: dict[str, str] = {}
    if weights is not None:
        lms, unavailable = _local_weights(Path(weights))
        vision, pretrained = str(Path(weights) / VISION_FOLDER), None
    return PaperProfile(
        name="paper",
        scale=scale,
        runs_dir=runs_dir,
        lms=lms,
        vision=vision,
        vision_pretrained=pretrained,
        vision_width=768,
        datasets={
            name: {key: str(root / rel) for key, (rel, _) in layout.items()}
            for name, layout in PAPER_LAYOUT.items()
        },
        budget=budget_of("paper", scale),
        unavailable=unavailable,
    )


def _local_weights(folder: Path) -> tuple[dict[str, LMChoice], dict[str, str]]:
    """Each LM from ``folder/<hub id>``; one line naming the first folder of the paper's LMs or
    the vision encoder missing and the command that fills it. Another LM whose folder is missing
    is left out, with that line kept for a point that names it."""
    needed = [*(folder / lm.name for lm in PAPER_LMS.values()), folder / VISION_FOLDER]
    for path in needed:
        if not _holds_model(path):
            raise ConfigError(_fill(folder, path))
    from ituning.backbones import lm_config

    out, unavailable = {}, {}
    for name, lm in {**PAPER_LMS, **LLAMA_FAMILY_LMS}.items():
        path = folder / lm.name
        if name in LLAMA_FAMILY_LMS and not _holds_model(path):
            unavailable[name] = _fill(folder, path, lm.name)
            continue
        config = lm_config(str(path))  # the folder's own depth and width
        out[name] = LMChoice(str(path), config.num_hidden_layers, config.hidden_size)
    return out, unavailable


def _holds_model(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "open_clip_config.json").is_file()


def _fill(folder: Path, path: Path, hub: str | None = None) -> str:
    hub = hub or (f"timm/{VISION_FOLDER}" if path.name == VISION_FOLDER else path.name)
    return (
        f"--weights {folder}: {path} holds no model; fill it with `hf download {hub} "
        f"--local-dir {path}` (layout: {LAYOUT_DOC})"
    )
