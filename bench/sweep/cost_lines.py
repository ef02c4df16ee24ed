"""The cost estimate as the dry run prints it: one cell per point, and a summary with its error.

The error is measured, not assumed: for every point already finished, the estimate is set against
what the run recorded for the same work (``time/train_s``, ``time/vlp_s`` and ``time/decode_s`` in
its ``result.json``), and the summary gives the median and range of estimate / recorded.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path

from bench.sweep import folders
from bench.sweep.cost import Cost, DataSizes, estimates, feature_images, machine_key
from bench.sweep.plan import RunPlan
from bench.sweep.profile import Profile
from bench.sweep.worker import torch_threads

#: What a run records of the work the estimate covers.
MEASURED = ("time/train_s", "time/vlp_s", "time/decode_s")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    hours = seconds / 3600
    return f"{hours:.1f} h" if hours < 100 else f"{hours:,.0f} h"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def point_costs(
    profile: Profile, plans: list[RunPlan], sizes: Mapping[str, DataSizes]
) -> dict[str, Cost]:
    with torch_threads(1 if profile.cpu_workers else None):  # as a worker of this profile
        return estimates(profile, plans, sizes)


def recorded_seconds(runs_dir: Path, plan: RunPlan) -> float | None:
    """The time a finished point recorded for the work the estimate covers."""
    result = folders.read_result(folders.run_dir(runs_dir, plan.run_id))
    metrics = (result or {}).get("metrics", {})
    if "time/train_s" not in metrics:
        return None
    return sum(float(metrics.get(key, 0.0)) for key in MEASURED)


def summary(
    profile: Profile, plans: list[RunPlan], costs: dict[str, Cost], sizes: Mapping[str, DataSizes]
) -> list[str]:
    known = [costs[p.run_id] for p in plans if costs[p.run_id].seconds is not None]
    machine = machine_key()
    threads = 1 if profile.cpu_workers else machine["threads"]
    lines = [
        f"  cost estimate (random-weight architectures timed on {machine['device']}, "
        f"{threads} thread(s) per worker): {duration(sum(c.seconds for c in known))} of worker "
        f"time for {len(known)} of {len(plans)} points (training, VLP, decoding; feature "
        "extraction, scoring and start-up not included)"
    ]
    used = sorted({p.point["dataset"] for p in plans})
    assumed = [name if len(used) == 1 else f"{d} {name}" for d in used for name in sizes[d].assumed]
    if assumed:
        lines.append(
            f"    image counts of {', '.join(assumed)}: the published sizes (files not in place)"
        )
    unknown = {costs[p.run_id].why_unknown for p in plans if costs[p.run_id].seconds is None}
    for why in sorted(unknown):
        lines.append(f"    ? {why}")
    images = feature_images(plans, sizes)
    rates = next((c.rates for c in known if c.rates is not None), None)
    if images is not None and rates is not None:
        lines.append(
            f"    feature cache, once for the sweep: {images:,} images, "
            f"{duration(images * rates.encode_image_s)} to encode, "
            f"{size(images * rates.feature_bytes_per_image)} on disk"
        )
    peaks = [c.peak_bytes for c in costs.values() if c.peak_bytes is not None]
    disk = sum(c.disk_bytes for c in costs.values())
    lines.append(
        f"    peak accelerator memory {size(max(peaks)) if peaks else '- (CPU)'}; checkpoints "
        f"and resumable state {size(disk)}"
    )
    ratios = []
    for plan in plans:
        recorded = recorded_seconds(profile.runs_dir, plan)
        estimated = costs[plan.run_id].seconds
        if recorded and estimated:
            ratios.append(estimated / recorded)
    if ratios:
        lines.append(
            f"    measured on {len(ratios)} finished point(s): estimate / recorded time median "
            f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})"
        )
    return lines
