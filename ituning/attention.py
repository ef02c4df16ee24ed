"""Figure 3 of the paper: where the last I-Tuning module looks while each word is generated.

``python -m ituning.attention IMAGE --checkpoint DIR --out FILE.png``

The caption is decoded first (beam search, as evaluated), then re-read once with teacher forcing
while the last kept module's attention S (eq. 4) is recorded: the map drawn above a word is the
attention of the position that *predicted* that word. Reading the finished caption again avoids
following beams as they are reordered, and gives exactly the attention of the final sequence.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ituning.caption import decode_arguments, decode_settings  # noqa: E402
from ituning.checkpoint import build_from_checkpoint  # noqa: E402
from ituning.data.images import load_image  # noqa: E402
from ituning.decode import DecodeSettings, generate_captions  # noqa: E402
from ituning.errors import ArgumentParser, cli_main  # noqa: E402
from ituning.inject import ITuningModel  # noqa: E402
from ituning.text import CaptionCodec  # noqa: E402
from ituning.vision import VisionEncoder  # noqa: E402


@torch.inference_mode()
def attention_maps(
    model: ITuningModel, codec: CaptionCodec, visual: torch.Tensor, caption: str, include_cls: bool
) -> tuple[list[str], np.ndarray]:
    """Words of ``caption`` (as tokens, eos last) and their (T, g, g) maps over the patch grid."""
    ids, mask = (t.to(visual.device) for t in codec.encode([caption]))
    with model.capture_attention() as captured:
        model(input_ids=ids, attention_mask=mask, visual=visual)
    probs = next(iter(captured.values()))[0][0]  # (T, N) of the single row
    if include_cls:
        probs = probs[:, 1:]
    grid = math.isqrt(probs.shape[-1])
    if grid * grid != probs.shape[-1]:
        raise ValueError(f"{probs.shape[-1]} visual tokens do not form a square patch grid")
    tokens = [codec.tokenizer.decode([t]).strip() or "<eos>" for t in ids[0, 1:].tolist()]
    tokens[-1] = "<eos>"
    maps = probs[:-1].float().reshape(-1, grid, grid).cpu().numpy()  # position t predicts t+1
    return tokens, maps


def draw(
    image: Image.Image,
    tokens: list[str],
    maps: np.ndarray,
    out: Path,
    region: tuple[float, float, float, float] | None = None,
) -> Path:
    """One panel per generated word: the image with its attention map laid over ``region``
    (``(left, top, right, bottom)`` in image pixels: what the encoder saw; default the image)."""
    cols = min(6, len(tokens))
    rows = math.ceil(len(tokens) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    shown = np.asarray(image.convert("RGB"))
    height, width = shown.shape[:2]
    left, top, right, bottom = region or (0, 0, width, height)
    for ax in axes.flat:
        ax.axis("off")
    for ax, word, amap in zip(axes.flat, tokens, maps, strict=False):
        ax.imshow(shown)
        heat = amap / max(float(amap.max()), 1e-12)
        ax.imshow(
            heat,
            cmap="jet",
            alpha=0.5,
            extent=(left, right, bottom, top),
            interpolation="bilinear",
        )
        ax.set_xlim(0, width)  # the photo's frame, whatever the region's
        ax.set_ylim(height, 0)
        ax.set_title(word, fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def attention_figure(
    image_path: Path, checkpoint: Path, out: Path, settings: DecodeSettings
) -> str:
    """Figure 3 of one image for a saved checkpoint; returns the caption drawn."""
    model, tokenizer, encoder = build_from_checkpoint(checkpoint)
    return figure_for_image(model, CaptionCodec(tokenizer), encoder, image_path, out, settings)


def figure_for_image(
    model: ITuningModel,
    codec: CaptionCodec,
    encoder: VisionEncoder,
    image_path: Path,
    out: Path,
    settings: DecodeSettings,
) -> str:
    """Caption ``image_path`` (live encoder) and draw its attention maps to ``out``."""
    image = load_image(image_path)
    device = next(encoder.parameters()).device
    with torch.inference_mode():
        visual = encoder(encoder.preprocess(image).unsqueeze(0).to(device))
    caption = generate_captions(model, codec, visual, settings)[0]
    tokens, maps = attention_maps(model, codec, visual, caption, model.config.include_cls)
    draw(image, tokens, maps, out, encoder.seen_region(*image.size))
    return caption


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m ituning.attention", description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path, help="a JPEG/PNG file")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    decode_arguments(parser)
    args = parser.parse_args(argv)
    settings = decode_settings(parser, args)
    caption = attention_figure(args.image, args.checkpoint, args.out, settings)
    print(f"{caption}\n{args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
