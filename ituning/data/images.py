"""Image decoding: one function, so every failure reads the same and names the file."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ituning.errors import DataError, first_line


def load_image(path: Path | str) -> Image.Image:
    """Open ``path`` fully decoded as RGB; a missing, truncated or non-image file is a DataError.

    The pixels are decoded here (not lazily) so that a truncated file fails at this call, with its
    path, rather than later inside a preprocessing transform.
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO would block forever
            raise DataError(
                f"cannot read image {path}: not a regular file (a folder, pipe or device)"
            )
        with warnings.catch_warnings():
            # Pillow warns (and later raises) on huge images; make both an error that names the file.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        ValueError,
        SyntaxError,
    ) as exc:
        reason = first_line(exc)
        raise DataError(f"cannot read image {path}: {reason} (corrupt or not an image?)") from None
