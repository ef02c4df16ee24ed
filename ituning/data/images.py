"""Image decoding: one function, so every failure reads the same and names the file, and training,
cached features, the caption command and the figures see the same pixels of every photo."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ituning.errors import DataError, first_line


def load_image(path: Path | str) -> Image.Image:
    """Open ``path`` fully decoded as 8-bit RGB, upright; a missing, truncated or non-image file
    is a DataError.

    The pixels are decoded here (not lazily) so that a truncated file fails at this call, with its
    path, rather than later inside a preprocessing transform. What a photo's file says about how to
    show it is applied (:func:`to_rgb`): its EXIF orientation, its bit depth, its palette, colour
    space and transparency.
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
                return to_rgb(img)
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


#: The background that transparent pixels are composed over (what a viewer shows on a page).
ALPHA_BACKGROUND = (255, 255, 255)


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB as a viewer shows ``img``: turned by its EXIF orientation (phone photos store
    the sensor's rows); 16- and 32-bit greyscale scaled to 8 bits (``convert("RGB")`` clips every
    value above 255 to white); transparency (RGBA, LA, palette with a transparent index) composed
    over white; CMYK and other colour spaces through Pillow's conversion."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        grey = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return img if img.mode == "RGB" else img.convert("RGB")
