"""The paper profile's preflight: what its points need from the data root, the weights and the disk.

Each check returns problems (one line each, naming the path and the fix) rather than raising, so
that one preflight reports all of them. The dataset files are read exactly as a run reads them
(``ituning.train.load_data``), once per file state per process.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.sweep.preflight import bad_image_lines
from ituning.data.readable_images import unreadable_images
from ituning.errors import DataError

if TYPE_CHECKING:
    from bench.sweep.paper_profile import PaperProfile
    from bench.sweep.plan import RunPlan
    from ituning.run_config import TrainConfig
    from ituning.train import LoadedData

#: Feature bytes per visual token and channel (the cache stores fp16 unless told otherwise).
FEATURE_BYTES = {"float16": 2, "float32": 4}
#: Leave this much more free than the feature cache needs.
DISK_MARGIN = 1.1

_LOADED: dict[str, LoadedData] = {}


def paper_problems(
    profile: PaperProfile, plans: Sequence[RunPlan], *, progress: bool = True
) -> list[str]:
    out = _layout_problems(profile, plans)
    datasets: dict[str, LoadedData] = {}
    if not out:
        for plan in plans:
            try:
                key, data = _load(plan.config)
            except DataError as exc:
                if str(exc) not in out:
                    out.append(str(exc))
                continue
            datasets.setdefault(key, data)
    if datasets:
        paths = [
            ds.image_path(rec)
            for data in datasets.values()
            for ds in (data.train, *data.evals.values(), *([data.vlp] if data.vlp else []))
            for rec in ds
        ]
        if not all(p.config.data.skip_bad_images for p in plans):  # else load_data dropped them
            out += bad_image_lines(unreadable_images(paths, progress=progress))
        out += _disk_problems(profile, plans, len(set(paths)))
    return out + _weight_problems(plans)


def _layout_problems(profile: PaperProfile, plans: Sequence[RunPlan]) -> list[str]:
    """The data root, and each file or folder the plans' datasets need, in place."""
    from bench.sweep.paper_profile import LAYOUT_DOC, PAPER_LAYOUT

    root = Path(profile.datasets["coco"]["captions"]).parent.parent
    if not root.is_dir():
        return [
            f"--data-root {root}: no such folder; it must hold coco/, nocaps/ and visual_genome/ "
            f"(and flickr30k/ for Flickr30k points; layout: {LAYOUT_DOC})"
        ]
    missing: dict[str, str] = {}  # path -> what belongs there (VLP's are shared: named once)
    for dataset in sorted({p.point["dataset"] for p in plans}):
        needed = ["captions", "image_root"]
        chosen = [p for p in plans if p.point["dataset"] == dataset]
        if any(p.config.eval.nocaps and p.config.data.nocaps for p in chosen):
            needed += ["nocaps", "nocaps_image_root"]
        if any(p.config.vlp for p in chosen):
            needed += ["vlp_regions", "vlp_image_data", "vlp_image_root"]
        data, layout = profile.datasets[dataset], PAPER_LAYOUT[dataset]
        for key in needed:
            if not Path(data[key]).exists():
                missing.setdefault(data[key], layout[key][1])
    return [
        f"{path}: missing; put {what} there (data root layout: {LAYOUT_DOC})"
        for path, what in missing.items()
    ]


def _load(config: TrainConfig) -> tuple[str, LoadedData]:
    """``load_data`` as a run calls it (and CHAIR's inputs when supplied), once per data setup and
    state of its files."""
    from ituning.train import load_data

    files = [config.data.captions]
    if config.eval.nocaps and config.data.nocaps is not None:
        files.append(config.data.nocaps)
    if config.vlp:
        files += [config.data.vlp_regions, config.data.vlp_image_data]
    chair = [p for p in (config.data.instances, config.data.chair_synonyms) if p and p.is_file()]
    stamps = []
    for path in [*files, *chair]:
        try:
            st = Path(path).stat()
            stamps.append((str(path), st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append((str(path), None, None))
    key = repr(
        (config.data.model_dump_json(), config.eval.nocaps, config.eval.splits, config.vlp, stamps)
    )
    if key not in _LOADED:
        data = load_data(config)
        if len(chair) == 2:  # CHAIR's inputs, when supplied, are read before any training
            from ituning.metrics.chair import Chair, read_instances

            Chair.from_file(config.data.chair_synonyms)
            read_instances(config.data.instances)
        _LOADED[key] = data
    return key, _LOADED[key]


def _weight_problems(plans: Sequence[RunPlan]) -> list[str]:
    """Every LM and vision encoder of the plans present locally (a folder, or the Hugging Face
    cache): a run must never be the first to find that a download is missing."""
    out = []
    for name in dict.fromkeys(p.config.backbones.lm for p in plans):
        problem = _lm_problem(name)
        if problem:
            out.append(problem)
    for vision in dict.fromkeys(
        (p.config.backbones.vision, p.config.backbones.vision_pretrained) for p in plans
    ):
        problem = _vision_problem(*vision)
        if problem:
            out.append(problem)
    return out


def _lm_problem(name: str) -> str | None:
    from ituning.backbones import is_local_name

    if is_local_name(name):
        folder = Path(name).expanduser()
        if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
            return None
        return f"language model folder {folder}: no config.json and *.safetensors weights; fill it with `hf download <model id> --local-dir {folder}`"
    weights = ("model.safetensors", "model.safetensors.index.json")
    if _cached(name, "config.json") and any(_cached(name, f) for f in weights):
        return None
    return (
        f"language model {name}: not in the Hugging Face cache; fetch it once with `hf download "
        f"{name} --include '*.json' '*.safetensors' '*.txt'` (or pass --weights)"
    )


def _vision_problem(name: str, pretrained: str | None) -> str | None:
    import open_clip

    folder = Path(name).expanduser()
    if folder.is_dir():
        if any(folder.glob("*.safetensors")):
            return None
        return f"vision encoder folder {folder}: no *.safetensors weights"
    if pretrained is None:
        return None
    repo = (open_clip.get_pretrained_cfg(name, pretrained).get("hf_hub") or "").strip("/")
    if not repo:  # fetched by URL into open_clip's own cache: nothing to look up here
        return None
    if any(
        _cached(repo, f) for f in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    ):
        return None
    return (
        f"vision encoder {name} ({pretrained}): not in the Hugging Face cache; fetch it once with "
        f"`hf download {repo} --include 'open_clip_*'` (or pass --weights)"
    )


def _cached(repo: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, filename), str)


def _disk_problems(profile: PaperProfile, plans: Sequence[RunPlan], images: int) -> list[str]:
    """The feature cache holds every image's visual tokens: ViT-B/16 at fp16 is ~300 KB an image,
    ~65-70 GB for COCO and Visual Genome."""
    from ituning.vision import vision_from_config

    config = plans[0].config if plans else None
    if config is None:
        return []
    encoder = vision_from_config(profile.vision, include_cls=config.include_cls)
    per_image = encoder.num_tokens * encoder.width * FEATURE_BYTES.get(config.feature_dtype, 4)
    needed = images * per_image * DISK_MARGIN
    folder = Path(config.feature_cache)
    held = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free + held >= needed:
        return []
    return [
        f"{folder}: the feature cache needs {_size(needed)} for {images} images "
        f"({_size(per_image)} each) but {_size(free + held)} are free there; free space or put "
        "--runs-dir on a larger disk"
    ]


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} bytes"
