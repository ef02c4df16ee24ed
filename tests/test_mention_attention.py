"""The diagnostic of where modules look before naming an object: patch masks, masses, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ituning.mention_attention import main, mention_masses, object_masks


def test_object_masks_cover_the_patches_under_each_object() -> None:
    # a 4x4 grid over a 64-pixel image: patch centres at 8, 24, 40, 56
    objects = [{"x": 8.0, "y": 8.0, "radius": 4.0}, {"x": 56.0, "y": 40.0, "radius": 12.0}]
    first, second = object_masks(objects, 4, (0.0, 0.0, 64.0, 64.0))
    assert np.flatnonzero(first).tolist() == [0]  # within 4 + 8 of (8, 8): only its own patch
    # within 12 + 8 = 20 of (56, 40): the patches centred at (56, 24), (40, 40), (56, 40), (56, 56)
    assert np.flatnonzero(second).tolist() == [7, 10, 11, 15]
    # a region the encoder saw (a centre crop) moves the patch centres with it
    (shifted,) = object_masks([{"x": 40.0, "y": 8.0, "radius": 4.0}], 4, (32.0, 0.0, 96.0, 64.0))
    assert np.flatnonzero(shifted).tolist() == [0]


def test_mention_masses_split_each_positions_attention() -> None:
    masks = [np.array([1, 1, 0, 0, 0], bool), np.array([0, 1, 1, 0, 0], bool)]  # overlapping
    probs = np.array([[0.1, 0.2, 0.3, 0.4, 0.0], [0.5, 0.0, 0.0, 0.0, 0.5]])
    got = mention_masses(probs, masks, [(0, 1), (1, 0)])
    # mention 0 names object 1: its own patches 1, 2; the other's patch 0 (patch 1 is its own)
    assert got[0] == (0, 1, pytest.approx(0.5), pytest.approx(0.1))
    assert got[1] == (1, 0, pytest.approx(0.5), pytest.approx(0.0))


def test_a_dataset_without_object_lists_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    images = [
        {
            "filename": "a.png",
            "split": "test",
            "sentences": [{"raw": "a cat.", "tokens": ["a", "cat"]}],
        }
    ]
    (tmp_path / "a.png").write_bytes(b"")
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"dataset": "photos", "images": images}))
    args = ["--checkpoint", str(tmp_path / "nowhere"), "--captions", str(path)]
    assert main([*args, "--image-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "three objects of three colours" in err[0], err
