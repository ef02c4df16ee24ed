"""The ``mini`` profile's vision encoder: a small CLIP (open_clip ViT + text tower) pre-trained
contrastively on Shapes image-phrase pairs, saved in open_clip's hub layout.

What matters downstream is the ViT's *patch tokens*, which I-Tuning attends to. A prototype
trained with plain in-batch negatives learned colour at once but hardly shape: in a random batch,
colour alone tells most phrases apart. So every phrase here also brings *hard negatives*: the same
phrase with one colour, shape, size or position word swapped so that it is false for the image
(``ituning.data.shapes_swaps.swap``). Because the pooled (CLS) output alone left the patch tokens
poor in shape, a second, region-level term matches every patch token under an object to that
object's phrase ("a small red circle on the left") against the other objects' phrases and their
swapped twins. 2-D sin-cos position codes (instead of learned ones) made positions learnable in
the budget. Images are rendered on the fly from their own random streams, so the encoder never
sees an image twice. The encoder may see the out-of-domain shape and the
withheld pairs, as CLIP saw NoCaps' novel objects; only caption training must not.

The text tower uses the word-level Shapes tokenizer (saved in the folder, so
``open_clip.get_tokenizer('local-dir:<dir>')`` rebuilds it) and pools at ``<|endoftext|>``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.torch import save_file
from tokenizers import Tokenizer
from tqdm import tqdm

from bench.mini.lm import EOS, PAD, build_tokenizer, hf_tokenizer
from ituning.data.shapes_captions import canonical_phrase, describe
from ituning.data.shapes_render import render
from ituning.data.shapes_scene import Scene, WorldConfig, item_rng, sample_scene
from ituning.data.shapes_swaps import swap

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
SWAP_KINDS = ("colour", "shape", "size", "position")


class ClipSpec(BaseModel):
    """Architecture. ``pool_type='tok'`` (CLS) keeps the tower what ``ituning.vision`` expects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    embed_dim: int = Field(128, ge=8)
    image_size: int = Field(64, ge=16)
    patch_size: int = Field(8, ge=2)
    vision_width: int = Field(96, ge=8)
    vision_layers: int = Field(4, ge=1)
    vision_head_width: int = Field(32, ge=8)
    vision_mlp_ratio: float = Field(2.0, gt=0)
    #: "sin_cos_2d" fixes 2-D position codes, which a ViT trained from scratch on little data
    #: would otherwise have to learn; "learnable" is CLIP's choice.
    pos_embed_type: str = "sin_cos_2d"
    text_width: int = Field(64, ge=8)
    text_layers: int = Field(2, ge=1)
    text_heads: int = Field(4, ge=1)
    text_mlp_ratio: float = Field(2.0, gt=0)
    context_length: int = Field(32, ge=8)
    #: Per-channel statistics of Shapes images (light backgrounds), measured once.
    mean: tuple[float, float, float] = (0.85, 0.83, 0.81)
    std: tuple[float, float, float] = (0.17, 0.18, 0.21)


class ClipTrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: 550 steps left the patch-token shape probe at 0.937 and I-Tuning named a lone object's
    #: shape right only 0.75-0.89 of the time; 1,100 reach 0.985 and 0.99 (measured on the
    #: mini-large positions world, 4 epochs).
    steps: int = Field(1100, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(40, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    #: Which one-word swaps of each phrase join the batch as extra negatives.
    hard_negatives: tuple[str, ...] = ("colour", "shape", "shape", "shape", "size", "position")
    #: Weight of the region-level term: every patch token under an object (its centre within
    #: the object) is matched, on its own, to the object's canonical phrase against the batch's
    #: other region phrases and their hard negatives, so that each such token names the object
    #: (what I-Tuning's cross-attention reads). 0 disables it. A variant that matched the mean
    #: of an object's tokens instead left the centre token's shape probe at 0.75 (0.92 here).
    region_weight: float = Field(2.0, ge=0)
    #: Region phrases name the object's grid position too ("a small red circle on the left").
    region_position: bool = True
    region_hard_negatives: tuple[str, ...] = ("colour", "shape", "shape", "position")
    #: Probability of each phrase style (see ``ituning.data.shapes_captions.describe``).
    styles: tuple[tuple[str, float], ...] = (
        ("list", 0.35),
        ("object", 0.3),
        ("relation", 0.2),
        ("caption", 0.15),
    )

    @model_validator(mode="after")
    def _check(self) -> ClipTrainConfig:
        bad = [
            k for k in (*self.hard_negatives, *self.region_hard_negatives) if k not in SWAP_KINDS
        ]
        if bad:
            raise ValueError(f"unknown swap kinds {bad}; known: {list(SWAP_KINDS)}")
        styles = [name for name, _ in self.styles]
        if not set(styles) <= {"list", "object", "relation", "caption"} or not styles:
            raise ValueError(f"styles {styles}: use list, object, relation, caption")
        return self


def model_cfg(spec: ClipSpec) -> dict:
    """open_clip ``model_cfg`` (the ``CLIP`` constructor's keyword arguments)."""
    tok = build_tokenizer()
    return {
        "embed_dim": spec.embed_dim,
        "vision_cfg": {
            "image_size": spec.image_size,
            "patch_size": spec.patch_size,
            "width": spec.vision_width,
            "layers": spec.vision_layers,
            "head_width": spec.vision_head_width,
            "mlp_ratio": spec.vision_mlp_ratio,
            "pos_embed_type": spec.pos_embed_type,
            "pool_type": "tok",
        },
        "text_cfg": {
            "context_length": spec.context_length,
            "vocab_size": tok.get_vocab_size(),
            "width": spec.text_width,
            "heads": spec.text_heads,
            "layers": spec.text_layers,
            "mlp_ratio": spec.text_mlp_ratio,
            "pad_id": tok.token_to_id(PAD),
            "eos_id": tok.token_to_id(EOS),
            "pool_type": "eos",
            # non-empty: open_clip builds an HFTokenizer from the model folder itself
            "hf_tokenizer_name": "shapes-word-level",
        },
    }


def preprocess_cfg(spec: ClipSpec) -> dict:
    return {
        "size": spec.image_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }


def to_pixels(images: list[Image.Image], spec: ClipSpec) -> torch.Tensor:
    """What open_clip's preprocess does to an image already at ``image_size``: scale, normalise."""
    a = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 255.0
    a = (a - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()


class TextEncoder:
    """Shapes phrases -> fixed-length id tensors, as open_clip's HFTokenizer produces them."""

    def __init__(self, context_length: int) -> None:
        self.tok: Tokenizer = build_tokenizer(append_eos=True)
        self.pad = self.tok.token_to_id(PAD)
        self.eos = self.tok.token_to_id(EOS)
        self.context_length = context_length

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.full((len(texts), self.context_length), self.pad, dtype=torch.long)
        for i, enc in enumerate(self.tok.encode_batch(texts)):
            ids = enc.ids
            if len(ids) > self.context_length:  # truncate, keeping the eos (as HF does)
                ids = [*ids[: self.context_length - 1], self.eos]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


@dataclass
class _Batch:
    pixels: torch.Tensor
    texts: list[str]  # image phrases, then their hard negatives
    n_images: int
    region_texts: list[str]  # distinct region phrases and hard negatives
    region_image: torch.Tensor  # (rows,) image of each region row (one row per patch token)
    region_patch: torch.Tensor  # (rows,) patch index of each row
    region_target: torch.Tensor  # (rows,) index into region_texts
    row_weight: torch.Tensor  # (rows,) 1 / (patches of the row's object): objects weigh equally
    n_objects: int


def _object_patches(obj, spec: ClipSpec) -> torch.Tensor:
    """0/1 mask of the patches whose centre lies within the object (at least the centre one)."""
    grid = spec.image_size // spec.patch_size
    centres = (torch.arange(grid, dtype=torch.float32) + 0.5) * spec.patch_size
    d2 = (centres[None, :] - obj.x) ** 2 + (centres[:, None] - obj.y) ** 2
    mask = (d2 <= max(obj.radius, 0.5 * spec.patch_size) ** 2).flatten().float()
    r = min(grid - 1, int(obj.y // spec.patch_size))
    c = min(grid - 1, int(obj.x // spec.patch_size))
    mask[r * grid + c] = 1.0
    return mask


def _batch(step: int, seed: int, world: WorldConfig, train: ClipTrainConfig, spec: ClipSpec):
    styles = [s for s, _ in train.styles]
    probs = np.asarray([p for _, p in train.styles], dtype=np.float64)
    probs = probs / probs.sum()
    images, pos, neg = [], [], []
    index: dict[str, int] = {}  # distinct region texts
    rows_img, rows_patch, rows_t, rows_w = [], [], [], []
    n_objects = 0
    for b in range(train.batch_size):
        rng = item_rng(seed, "clip", step * train.batch_size + b)
        scene = sample_scene(rng, world, "any")
        images.append(render(scene, world))
        style = styles[int(rng.choice(len(styles), p=probs))]
        phrase = describe(scene, rng, style, world.mention_order, world.name_positions)
        pos.append(phrase.text)
        for kind in train.hard_negatives:
            s = swap(phrase, scene, kind, rng, world)  # type: ignore[arg-type]
            if s is not None:
                neg.append(s.text)
        if train.region_weight == 0:
            continue
        for obj in scene.objects:
            one = Scene((obj,), scene.background)
            rp = canonical_phrase(obj, with_position=train.region_position)
            target = index.setdefault(rp.text, len(index))
            for kind in train.region_hard_negatives:
                s = swap(rp, one, kind, rng, world)  # type: ignore[arg-type]
                if s is not None:
                    index.setdefault(s.text, len(index))
            patches = _object_patches(obj, spec).nonzero().flatten().tolist()
            n_objects += 1
            for p in patches:
                rows_img.append(b)
                rows_patch.append(p)
                rows_t.append(target)
                rows_w.append(1.0 / len(patches))
    return _Batch(
        pixels=to_pixels(images, spec),
        texts=pos + neg,
        n_images=len(pos),
        region_texts=list(index),
        region_image=torch.tensor(rows_img, dtype=torch.long),
        region_patch=torch.tensor(rows_patch, dtype=torch.long),
        region_target=torch.tensor(rows_t, dtype=torch.long),
        row_weight=torch.tensor(rows_w, dtype=torch.float32),
        n_objects=n_objects,
    )


def encode_text(model: open_clip.CLIP, ids: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` on ids cut after the last ``<|endoftext|>`` of the batch.

    Exactly equal to the full-length call: the text tower is causal and pools at the eos, so the
    padding after it never reaches the pooled vector; cutting it saves most of the text compute
    on short region phrases.
    """
    eos = model.text_eos_id
    if ids.shape[0] == 0:
        return torch.zeros(0, model.text_projection.shape[1])
    length = int((ids == eos).int().argmax(dim=1).max()) + 1
    ids = ids[:, :length]
    x = model.token_embedding(ids) + model.positional_embedding[:length]
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0]), (ids == eos).int().argmax(dim=1)]
    return x @ model.text_projection


def _contrastive(a: torch.Tensor, t: torch.Tensor, n: int, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between ``a`` (n rows) and the first n rows of ``t``; the remaining rows
    of ``t`` (hard negatives) only compete in the a -> t direction."""
    logits = scale * a @ t.T
    target = torch.arange(n)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :n].T, target)) / 2


def train_clip(
    spec: ClipSpec,
    train: ClipTrainConfig,
    world: WorldConfig,
    seed: int,
    progress: bool = True,
    on_step: Callable[[int, open_clip.CLIP], None] | None = None,
) -> tuple[open_clip.CLIP, dict]:
    """Contrastive pre-training; ``on_step(step, model)`` runs after every step (experiments)."""
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg(spec))
    model.visual.output_tokens = True
    enc = TextEncoder(spec.context_length)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": train.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=train.lr,
        betas=(0.9, 0.98),
    )
    model.train()
    t0 = time.perf_counter()
    data_seconds = 0.0
    bar = tqdm(range(train.steps), desc="pre-train mini-clip", unit="step", disable=not progress)
    loss_val = float("nan")
    for step in bar:
        warm = min(1.0, (step + 1) / max(1, train.warmup_steps))
        lr = train.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / train.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        td = time.perf_counter()
        batch = _batch(step, seed, world, train, spec)
        ids = enc(batch.texts + batch.region_texts)
        data_seconds += time.perf_counter() - td
        pooled, tokens = model.visual(batch.pixels)
        fi = F.normalize(pooled, dim=-1)
        n_img_txt = len(batch.texts)
        ft = torch.cat([encode_text(model, ids[:n_img_txt]), encode_text(model, ids[n_img_txt:])])
        ft = F.normalize(ft, dim=-1)
        scale = model.logit_scale.exp().clamp(max=100.0)
        loss = _contrastive(fi, ft[:n_img_txt], batch.n_images, scale)
        if batch.n_objects:
            region = tokens[batch.region_image, batch.region_patch]
            fr = F.normalize(region @ model.visual.proj, dim=-1)
            logits = scale * fr @ ft[n_img_txt:].T
            ce = F.cross_entropy(logits, batch.region_target, reduction="none")
            loss = loss + train.region_weight * (ce * batch.row_weight).sum() / batch.n_objects
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_val = float(loss.detach())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss_val:.3f}")
        if on_step is not None:
            on_step(step, model)
    model.visual.output_tokens = False
    model.eval()
    return model, {
        "params": sum(p.numel() for p in model.parameters()),
        "vision_params": sum(p.numel() for p in model.visual.parameters()),
        "final_train_loss": round(loss_val, 4),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "data_seconds": round(data_seconds, 1),
    }


def save_clip(model: open_clip.CLIP, spec: ClipSpec, folder: Path) -> None:
    """open_clip hub layout, loadable by ``create_model_and_transforms('local-dir:<folder>')``."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"model_cfg": model_cfg(spec), "preprocess_cfg": preprocess_cfg(spec)}
    (folder / CONFIG_FILE).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    hf_tokenizer(append_eos=True, max_length=spec.context_length).save_pretrained(folder)
