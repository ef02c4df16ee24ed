"""What a sweep will cost before it runs: time, peak accelerator memory and disk, per point.

A GPU user should know before the first point whether Tables 1-2 take an afternoon or a week. The
estimate times the real architectures, with random weights (nothing downloaded, nothing trained),
on the machine at hand, for a few steps of each kind of work a run does, and scales them by the
counts the run will do:

* training and VLP: seconds per caption row of a training step (the point's method, LM, Dropping
  and bottleneck; a micro-batch of at most :data:`CALIBRATION_ROWS` rows of the captions' typical
  length) x epochs x images x captions per image;
* feature extraction: seconds per image of the vision encoder (a batch of the run's evaluation
  size, at most :data:`CALIBRATION_IMAGES` on a CPU), once per image for the sweep (the
  cache is shared), shown beside the points' total;
* evaluation: seconds per image decoded with the point's beam, length and batch.

Calibrations are remembered per device, thread count and architecture in the user's cache folder
(``$XDG_CACHE_HOME/ituning/cost_calibration.json``), so only the first dry run on a machine pays
for them. The estimate ignores scoring, start-up and checkpoints; how far off it is shows beside
every finished point (``bench.sweep.dry_run``), measured against the time the run recorded.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ituning.files import atomic_write_json, canonical_json, sha256_text, user_cache_file

if TYPE_CHECKING:
    import torch

    from bench.sweep.plan import RunPlan
    from bench.sweep.profile import Profile

#: Caption rows of the calibrated training step (time is scaled linearly to the real micro-batch).
CALIBRATION_ROWS = 32
#: Bump when what a calibration measures changes (older cached calibrations are then not used).
CALIBRATION_FORMAT = 2
#: Images of the calibrated encoding and decoding on a CPU (an accelerator uses the run's batch).
CALIBRATION_IMAGES = 32
#: Timed repetitions of each calibrated step after one warm-up; the fastest counts.
REPEATS = 2
#: Tokens of a typical training caption row (bos + caption + eos; COCO captions: ~12 words).
CAPTION_TOKENS = 16
#: Bytes per trainable parameter on disk: checkpoint weights (fp32), plus resumable training
#: state (weights and AdamW's two moments).
CHECKPOINT_BYTES_PER_PARAM = 4 * 4


@dataclass(frozen=True)
class DataSizes:
    """Images per split of the captioning data, of the NoCaps-style set and of the VLP set
    (``None``: unknown, e.g. before the data exists)."""

    splits: dict[str, int] | None
    nocaps: int | None
    vlp: int | None
    #: Datasets whose counts are published sizes, not counted from files in place.
    assumed: tuple[str, ...] = ()

    @classmethod
    def from_files(cls, data: dict[str, str | None]) -> DataSizes:
        """Counted from a profile's data files, where they exist."""

        def read(key: str):
            path = data.get(key)
            try:
                return json.loads(Path(path).read_text(encoding="utf-8")) if path else None
            except (OSError, ValueError):
                return None

        captions = read("captions")
        splits = None
        if isinstance(captions, dict) and isinstance(captions.get("images"), list):
            splits = {}
            for image in captions["images"]:
                split = image.get("split") if isinstance(image, dict) else None
                split = "train" if split == "restval" else split
                splits[split] = splits.get(split, 0) + 1
        nocaps = read("nocaps")
        vlp = read("vlp_image_data")
        return cls(
            splits,
            len(nocaps["images"]) if isinstance(nocaps, dict) and "images" in nocaps else None,
            len(vlp) if isinstance(vlp, list) else None,
        )

    def counts(self, plan: RunPlan) -> tuple[int | None, int | None, int | None]:
        """``(train, evaluated, vlp)`` images of ``plan``, its limits applied."""
        cfg = plan.config
        d = cfg.data

        def cap(n: int | None, limit: int | None) -> int | None:
            return n if n is None or not limit else min(n, limit)

        splits = self.splits or {}
        train = cap(splits.get("train"), d.limit_train_images)
        parts = [splits.get(split) for split in cfg.eval.splits]
        if cfg.eval.nocaps and d.nocaps is not None:
            parts.append(self.nocaps)
        parts = [cap(n, d.limit_eval_images) for n in parts]
        evaluated = None if None in parts else sum(parts)
        vlp = cap(self.vlp, d.limit_vlp_images) if cfg.vlp else 0
        return train, evaluated, vlp


@dataclass(frozen=True)
class Rates:
    """A calibration: seconds per unit of work, and the training step's peak accelerator memory
    (``None`` on the CPU, which has none)."""

    train_row_s: float
    encode_image_s: float
    decode_image_s: float
    peak_bytes: int | None
    device: str
    feature_bytes_per_image: int = 0  # one cached (tokens x width) array at the cache's dtype


@dataclass(frozen=True)
class Cost:
    """One point's estimate."""

    seconds: float | None
    peak_bytes: int | None
    disk_bytes: int
    why_unknown: str = ""
    rates: Rates | None = None  # the calibration it came from (the feature cache's costs too)


def calibration_cache() -> Path:
    return user_cache_file("cost_calibration.json")


def _device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def machine_key() -> dict:
    """What a calibration is valid for: the device, its thread count and torch."""
    import torch

    device = _device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "threads": torch.get_num_threads(), "torch": torch.__version__}


def calibration_key(plan: RunPlan) -> dict:
    """The architecture facts a point's speed depends on (not its seed, λ or learning rate)."""
    cfg = plan.config
    return {
        "format": CALIBRATION_FORMAT,
        "lm": plan.arch.lm_name,
        "vision": cfg.backbones.vision,
        "method": cfg.method,
        "drop": cfg.itune.drop_first,
        "bottleneck": cfg.itune.bottleneck,
        "include_cls": cfg.itune.include_cls,
        "clipcap": cfg.clipcap.model_dump() if cfg.clipcap is not None else None,
        "micro_rows": calibration_rows(plan, _device()),
        "beam": cfg.eval.beam,
        "eval_batch": cfg.eval.batch_images,
        "max_new_tokens": cfg.eval.max_new_tokens,
        "precision": cfg.precision,
        "feature_dtype": cfg.feature_dtype,
        "machine": machine_key(),
    }


def calibration_rows(plan: RunPlan, device: torch.device) -> int:
    """The real micro-batch on an accelerator (its peak memory is the run's); on the CPU at most
    :data:`CALIBRATION_ROWS` rows, time scaled linearly (a CPU has no accelerator memory)."""
    rows = plan.config.micro_batch_images * plan.config.captions_per_image
    return rows if device.type == "cuda" else min(rows, CALIBRATION_ROWS)


def _best(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    fn()  # warm-up
    sync()
    best = math.inf
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def calibrate(plan: RunPlan, profile: Profile) -> Rates:
    """Time a training step, an image encoding and a decoding of ``plan``'s architecture with
    random weights (the profile's :meth:`~bench.sweep.profile.Profile.lm_architecture` and
    ``vision_architecture``); raises what those raise when the architecture cannot be read."""
    import torch
    from transformers import AutoModelForCausalLM

    from ituning.decode import DecodeSettings, generate_captions
    from ituning.methods.registry import build_captioner, clip_projection, is_clipcap
    from ituning.stage_loop import autocast_for

    cfg = plan.config
    device = _device()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    lm_cfg = profile.lm_architecture(plan.arch.lm_name)
    lm = AutoModelForCausalLM.from_config(lm_cfg).to(device).eval()
    needs_cls = cfg.itune.include_cls or is_clipcap(cfg.method)
    encoder = profile.vision_architecture(needs_cls).to(device).eval()
    projection = clip_projection(encoder.visual) if is_clipcap(cfg.method) else None
    model = build_captioner(
        cfg.method, lm, encoder.width, itune=cfg.itune, clipcap=cfg.clipcap, projection=projection
    ).to(device)
    rows = calibration_rows(plan, device)
    images = max(1, rows // cfg.captions_per_image)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(images, 3, encoder.image_size, encoder.image_size, generator=gen)
    pixels = pixels.to(device)
    with torch.no_grad():
        visual = encoder(pixels)
    ids = torch.randint(3, lm_cfg.vocab_size - 1, (images * (rows // images), CAPTION_TOKENS))
    ids, mask = ids.to(device), torch.ones_like(ids, device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        with autocast_for(device, cfg.precision):
            nll = model(input_ids=ids, attention_mask=mask, visual=visual, return_nll=True)
        nll.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_s = _best(step, sync)
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None

    batch = cfg.eval.batch_images
    batch = batch if device.type == "cuda" else min(batch, CALIBRATION_IMAGES)
    size = encoder.image_size
    pixels = torch.randn(batch, 3, size, size, generator=gen).to(device)

    def encode() -> torch.Tensor:
        with torch.no_grad():
            return encoder(pixels)

    encode_s = _best(encode, sync)
    visual = encode()

    class _Codec:  # what generate_captions needs of a codec: token ids only, no text
        bos_id, pad_id = 0, 0
        eos_id = lm_cfg.vocab_size - 1  # rarely drawn by random weights: full-length captions

        @staticmethod
        def prompt(n: int) -> torch.Tensor:
            return torch.zeros((n, 1), dtype=torch.long)

        @staticmethod
        def decode(out) -> list[str]:
            return [""] * len(out)

    settings = DecodeSettings(
        beam=cfg.eval.beam, max_new_tokens=cfg.eval.max_new_tokens, batch_images=batch
    )
    model.eval()
    decode_s = _best(lambda: generate_captions(model, _Codec, visual, settings), sync)
    dtype_bytes = 2 if cfg.feature_dtype == "float16" else 4
    return Rates(
        feature_bytes_per_image=int(visual.shape[1] * visual.shape[2]) * dtype_bytes,
        train_row_s=train_s / ids.shape[0],
        encode_image_s=encode_s / batch,
        decode_image_s=decode_s / batch,
        peak_bytes=peak,
        device=machine_key()["device"],
    )


def rates_for(plan: RunPlan, profile: Profile, cache: Path | None = None) -> Rates:
    """``plan``'s calibration, from the cache when this machine measured it before."""
    cache = cache or calibration_cache()
    key = sha256_text(canonical_json(calibration_key(plan)), 16)
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), dict):
        try:
            return Rates(**known[key])
        except TypeError:
            pass
    rates = calibrate(plan, profile)
    known = known if isinstance(known, dict) else {}
    known[key] = asdict(rates)
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cache, known)
    return rates


def estimate(plan: RunPlan, sizes: DataSizes, rates: Rates | None, why: str = "") -> Cost:
    """The point's training, VLP and evaluation time, peak memory and its own disk (checkpoint
    and resumable state; the shared feature cache is counted by :func:`feature_images`)."""
    cfg = plan.config
    disk = plan.arch.trainable_params * CHECKPOINT_BYTES_PER_PARAM
    if rates is None:
        return Cost(None, None, disk, why)
    train, evaluated, vlp = sizes.counts(plan)
    missing = [
        n for n, v in (("train", train), ("evaluation", evaluated), ("VLP", vlp)) if v is None
    ]
    if missing:
        why = f"image counts unknown: {', '.join(missing)}"
        return Cost(None, rates.peak_bytes, disk, why, rates)
    rows = (cfg.epochs * train + cfg.vlp_epochs * vlp) * cfg.captions_per_image
    seconds = rows * rates.train_row_s + evaluated * rates.decode_image_s
    return Cost(seconds, rates.peak_bytes, disk, rates=rates)


def feature_images(plans: list[RunPlan], sizes: Mapping[str, DataSizes]) -> int | None:
    """Images the sweep's feature cache will hold: each image is encoded once for every point;
    each dataset's own images, the VLP set's once."""
    by_dataset: dict[str, list] = {}
    for plan in plans:
        dataset = plan.point["dataset"]
        by_dataset.setdefault(dataset, []).append(sizes[dataset].counts(plan))
    counts = [c for cs in by_dataset.values() for c in cs]
    if not counts or any(None in c for c in counts):
        return None
    own = sum(max(c[k] for c in cs) for cs in by_dataset.values() for k in range(2))
    return own + max(c[2] for c in counts)


def estimates(
    profile: Profile, plans: list[RunPlan], sizes: Mapping[str, DataSizes]
) -> dict[str, Cost]:
    """Every plan's :class:`Cost`; an architecture that cannot be read gives an unknown time with
    the reason."""
    out: dict[str, Cost] = {}
    for plan in plans:
        try:
            rates = rates_for(plan, profile)
            why = ""
        except Exception as exc:  # noqa: BLE001 - any loader error means "not measurable yet"
            rates, why = None, f"architecture not readable ({str(exc).splitlines()[0][:120]})"
        out[plan.run_id] = estimate(plan, sizes[plan.point["dataset"]], rates, why)
    return out
