"""Caption data: one record type for every source, its readers, and the frozen-feature cache.

Readers (one file each): :mod:`~ituning.data.karpathy` (COCO / Flickr30k / Shapes Karpathy
files), :mod:`~ituning.data.coco` (the same COCO split from the official annotations),
:mod:`~ituning.data.nocaps`, :mod:`~ituning.data.visual_genome`. The feature cache and the visual
sources live in :mod:`~ituning.data.features` (imported on demand: it needs torch).
"""

from __future__ import annotations

from ituning.data.coco import build_coco_karpathy
from ituning.data.karpathy import read_karpathy
from ituning.data.nocaps import read_nocaps
from ituning.data.records import CaptionDataset, CaptionRecord
from ituning.data.visual_genome import read_visual_genome

__all__ = [
    "CaptionDataset",
    "CaptionRecord",
    "build_coco_karpathy",
    "read_karpathy",
    "read_nocaps",
    "read_visual_genome",
]
