"""Caption image files with a trained checkpoint: ``python -m ituning.caption IMG... --checkpoint DIR``.

Uses the backbones and preprocessing recorded in the checkpoint, so any JPEG/PNG is captioned exactly
as the evaluation captions its test images. A file that cannot be read does not cost the others
their captions: every readable image is captioned, then the unreadable ones are listed (one line
each) and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ituning.checkpoint import build_from_checkpoint
from ituning.data.images import load_image
from ituning.decode import DecodeSettings, generate_captions
from ituning.errors import ArgumentParser, DataError, cli_main
from ituning.text import CaptionCodec


@dataclass(frozen=True)
class Captioned:
    """Captions of the readable images, and why each other image could not be read."""

    captions: dict[Path, str]
    unreadable: dict[Path, str]


def caption_files(
    paths: Sequence[Path], checkpoint: Path, settings: DecodeSettings | None = None
) -> Captioned:
    settings = settings or DecodeSettings()
    images, unreadable = {}, {}
    for path in paths:
        try:
            images[path] = load_image(path)
        except DataError as exc:
            unreadable[path] = str(exc)
    captions: dict[Path, str] = {}
    if images:
        model, tokenizer, encoder = build_from_checkpoint(checkpoint)
        codec = CaptionCodec(tokenizer)
        readable = list(images)
        for start in range(0, len(readable), settings.batch_images):
            batch = readable[start : start + settings.batch_images]
            pixels = torch.stack([encoder.preprocess(images[p]) for p in batch])
            with torch.inference_mode():
                visual = encoder(pixels)
            captions.update(
                zip(batch, generate_captions(model, codec, visual, settings), strict=True)
            )
    return Captioned(captions, unreadable)


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
    done = caption_files(args.images, args.checkpoint, settings)
    for path, caption in done.captions.items():
        print(f"{path}\t{caption}")
    for reason in done.unreadable.values():
        print(f"error: {reason}", file=sys.stderr)
    return 1 if done.unreadable else 0


if __name__ == "__main__":
    raise SystemExit(main())
