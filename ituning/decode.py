"""Caption generation: transformers' ``generate`` on the wrapped LM (beam search, KV cache).

The visual keys/values of every module depend on the image only, so ``ITuningModel.generate``
computes them once per image before decoding starts; beams of an image share them (rows
``[i*beam, (i+1)*beam)`` belong to image ``i``), so no step and no beam recomputes them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ituning.methods.base import Captioner
from ituning.text import CaptionCodec


@dataclass(frozen=True)
class DecodeSettings:
    beam: int = 5
    max_new_tokens: int = 20
    length_penalty: float = 1.0
    batch_images: int = 32


@torch.inference_mode()
def generate_captions(
    model: Captioner,
    codec: CaptionCodec,
    visual: torch.Tensor,
    settings: DecodeSettings = DecodeSettings(),
) -> list[str]:
    """One caption per image of ``visual`` (B, N, d_vis)."""
    rows = visual.shape[0]
    device = next(model.parameters()).device
    prompt = codec.prompt(rows).to(device)
    beam = settings.beam
    out = model.generate(
        visual.to(device),
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        num_beams=beam,
        early_stopping=beam > 1,
        length_penalty=settings.length_penalty,
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=codec.eos_id,
        pad_token_id=codec.pad_id,
        bos_token_id=codec.bos_id,
    )
    return codec.decode(out)


def caption_dataset(
    model: Captioner,
    codec: CaptionCodec,
    image_ids: Sequence[str],
    visual: Callable[[Sequence[str]], torch.Tensor],
    settings: DecodeSettings = DecodeSettings(),
    *,
    desc: str = "captioning",
    progress: bool = True,
) -> dict[str, str]:
    """Caption many images in batches; ``visual`` maps image ids to their tokens."""
    model.eval()
    dtype = model.visual_dtype
    captions: dict[str, str] = {}
    bs = settings.batch_images
    for start in tqdm(
        range(0, len(image_ids), bs), desc=desc, unit="batch", disable=not progress, leave=False
    ):
        ids = list(image_ids[start : start + bs])
        captions.update(
            zip(ids, generate_captions(model, codec, visual(ids).to(dtype), settings), strict=True)
        )
    return captions
