"""Every photo decodes as a viewer shows it, through the one function that training, cached
features, the caption command and the figures use: EXIF orientation, 16-bit greyscale,
transparency and CMYK, on small files written here."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ituning.data.images import load_image


def test_exif_orientation_turns_a_phone_photo_upright(tmp_path):
    # stored as the sensor saw it: 40 wide, 20 high, red on the left half
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    shown = np.asarray(load_image(path))
    assert shown.shape == (40, 20, 3)  # portrait, as the phone showed it
    assert shown[5, 10, 0] > 200 and shown[35, 10, 0] < 60  # the red half is now on top


def test_sixteen_bit_greyscale_keeps_its_shades(tmp_path):
    ramp = np.linspace(0, 65535, 256, dtype=np.float64).astype(np.uint16).reshape(16, 16)
    path = tmp_path / "depth.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == "I;16"
    assert np.asarray(Image.open(path).convert("RGB")).mean() > 250  # what a plain convert does
    pixels = np.asarray(load_image(path))
    assert pixels[..., 0].min() == 0 and pixels[..., 0].max() == 255
    assert abs(pixels.mean() - 127.5) < 1.0 and (pixels[..., 0] == pixels[..., 2]).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_are_white_and_opaque_ones_keep_their_colour(tmp_path, mode):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:, :4] = (0, 0, 200, 255)  # opaque blue on the left, transparent black on the right
    img = Image.fromarray(rgba, "RGBA")
    if mode == "LA":
        img = img.convert("LA")
    path = tmp_path / f"alpha_{mode}.png"
    if mode == "P":  # a palette whose transparent entry is the right half's
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
        img.save(path, transparency=img.getpixel((7, 7)))
    else:
        img.save(path)
    pixels = np.asarray(load_image(path))
    assert (pixels[:, 6] == 255).all()
    assert pixels[0, 0].tolist() != [255, 255, 255]


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path)  # full magenta + yellow: red
    r, g, b = np.asarray(load_image(path))[4, 4].tolist()
    assert r > 200 and g < 60 and b < 60


def test_an_ordinary_rgb_image_is_unchanged(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    path = tmp_path / "plain.png"
    Image.fromarray(rgb).save(path)
    assert (np.asarray(load_image(path)) == rgb).all()
