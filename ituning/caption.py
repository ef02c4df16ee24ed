"""Caption image files with a trained checkpoint: ``python -m ituning.caption IMG... --checkpoint DIR``.

Uses the backbones and preprocessing recorded in the checkpoint, so any JPEG/PNG is captioned exactly
as the evaluation captions its test images.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from ituning.checkpoint import build_from_checkpoint
from ituning.data.images import load_image
from ituning.decode import DecodeSettings, generate_captions
from ituning.errors import ArgumentParser, cli_main
from ituning.text import CaptionCodec


def caption_files(
    paths: Sequence[Path], checkpoint: Path, settings: DecodeSettings | None = None
) -> list[str]:
    settings = settings or DecodeSettings()
    model, tokenizer, encoder = build_from_checkpoint(checkpoint)
    codec = CaptionCodec(tokenizer)
    captions: list[str] = []
    for start in range(0, len(paths), settings.batch_images):
        batch = paths[start : start + settings.batch_images]
        pixels = torch.stack([encoder.preprocess(load_image(p)) for p in batch])
        with torch.inference_mode():
            visual = encoder(pixels)
        captions.extend(generate_captions(model, codec, visual, settings))
    return captions


def decode_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by the captioning and attention commands."""
    parser.add_argument("--checkpoint", type=Path, required=True, help="run's checkpoint/ folder")
    parser.add_argument("--beam", type=int, default=5, help="beam size (1 = greedy)")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--length-penalty", type=float, default=1.0)


def decode_settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> DecodeSettings:
    """The :class:`DecodeSettings` of parsed :func:`decode_arguments` (usage error if out of range)."""
    if args.beam < 1:
        parser.error("--beam must be >= 1")
    if args.max_new_tokens < 1:
        parser.error("--max-new-tokens must be >= 1")
    return DecodeSettings(
        beam=args.beam, max_new_tokens=args.max_new_tokens, length_penalty=args.length_penalty
    )


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m ituning.caption", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="JPEG/PNG files")
    decode_arguments(parser)
    args = parser.parse_args(argv)
    settings = decode_settings(parser, args)
    for path, caption in zip(
        args.images, caption_files(args.images, args.checkpoint, settings), strict=True
    ):
        print(f"{path}\t{caption}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
