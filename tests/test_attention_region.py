"""Figure 3 on a non-square photo: the attention map lies over the centre square the encoder saw
(found by running the encoder's own preprocessing), not stretched over the whole photo."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ituning.attention import draw


def _source_columns(encoder, width: int, height: int) -> np.ndarray:
    """Which photo column each preprocessed column came from (the photo's red channel = x)."""
    xs = np.tile(np.arange(width, dtype=np.uint8), (height, 1))
    photo = Image.fromarray(np.stack([xs, xs, xs], axis=-1))
    pixels = encoder.preprocess(photo).numpy()
    cfg = encoder.preprocess_cfg
    red = pixels[0] * cfg["std"][0] + cfg["mean"][0]
    return red.mean(axis=0) * 255.0


@pytest.mark.parametrize(("width", "height"), [(150, 50), (96, 32), (40, 120)])
def test_the_seen_region_is_what_the_encoders_preprocessing_keeps(tiny_vision, width, height):
    left, top, right, bottom = tiny_vision.seen_region(width, height)
    side = tiny_vision.image_size
    assert right - left == pytest.approx(bottom - top)  # a square of the photo
    if width > height:
        cols = _source_columns(tiny_vision, width, height)
        scale = side / height
        # the first and last kept columns are centred half an output pixel inside the region
        assert cols[0] == pytest.approx(left + 0.5 / scale - 0.5, abs=1.0)
        assert cols[-1] == pytest.approx(right - 0.5 / scale - 0.5, abs=1.0)
        assert (top, bottom) == (0, height)
    else:
        assert (left, right) == (0, width) and 0 < top < bottom < height


def test_coco_sized_photo_region_matches_hand_computation(tiny_vision):
    """640 × 427 at a 224 crop: resized to 335 × 224, 56 columns cropped on the left."""
    tiny_vision.preprocess_cfg["size"] = 224
    left, top, right, bottom = tiny_vision.seen_region(640, 427)
    assert left == pytest.approx(56 * 427 / 224) and right == pytest.approx(280 * 427 / 224)
    assert (top, bottom) == (0, 427)


def test_the_figure_tints_only_the_region(tmp_path):
    photo = Image.new("RGB", (640, 427), (128, 128, 128))
    region = (106.75, 0.0, 533.75, 427.0)
    out = draw(photo, ["shape"], np.ones((1, 4, 4)), tmp_path / "fig.png", region)
    figure = np.asarray(Image.open(out).convert("RGB")).astype(int)
    middle = figure[figure.shape[0] // 2]
    photo_px = middle[(np.abs(middle - 255).sum(axis=1) > 30)]  # not the white page
    grey = (np.abs(photo_px - 128).sum(axis=1) < 12).sum()
    tinted = len(photo_px) - grey
    assert tinted / len(photo_px) == pytest.approx((533.75 - 106.75) / 640, abs=0.05)
    assert grey > 0.25 * len(photo_px)
