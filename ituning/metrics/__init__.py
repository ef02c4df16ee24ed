"""Caption evaluation: COCO metrics (pycocoevalcap), SPICE availability, results files, grounding."""

from __future__ import annotations

from ituning.metrics.grounding import NamingCounts, naming_precision
from ituning.metrics.results_file import read_coco_results, write_coco_results
from ituning.metrics.scorer import (
    METRIC_FAMILIES,
    METRIC_KEYS,
    METRIC_LABELS,
    NOCAPS_DOMAINS,
    OVERALL,
    CaptionScorer,
    Scores,
    sanitise_caption,
    validate_inputs,
)
from ituning.metrics.spice import SPICE_JARS_ENV, install_spice_jars, spice_status

__all__ = [
    "METRIC_FAMILIES",
    "METRIC_KEYS",
    "METRIC_LABELS",
    "NOCAPS_DOMAINS",
    "OVERALL",
    "SPICE_JARS_ENV",
    "CaptionScorer",
    "NamingCounts",
    "Scores",
    "install_spice_jars",
    "naming_precision",
    "read_coco_results",
    "sanitise_caption",
    "spice_status",
    "validate_inputs",
    "write_coco_results",
]
