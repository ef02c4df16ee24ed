"""The dry run's cost estimate: counts, arithmetic, calibration cache, and its measured error."""

from __future__ import annotations

import json

import pytest

from bench.sweep import cost, folders
from bench.sweep.cost import DataSizes, Rates, estimate
from bench.sweep.cost_lines import summary
from bench.sweep.profiles import get_profile
from bench.sweep.spec import load_spec

RATES = Rates(
    train_row_s=0.01, encode_image_s=0.002, decode_image_s=0.05, peak_bytes=None, device="cpu"
)


def _plans(tmp_path, spec_text: str):
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text)
    profile = get_profile("mini", runs_dir=tmp_path / "runs", scale="tiny")
    return profile, profile.plan(load_spec(path))


def test_counts_follow_the_runs_limits_splits_nocaps_and_vlp(tmp_path) -> None:
    profile, (plain, vlp) = _plans(tmp_path, "name: c\naxes: {vlp: [false, true]}\n")
    sizes = DataSizes({"train": 100, "val": 10, "test": 20}, nocaps=12, vlp=40)
    limits = plain.config.data  # tiny: 32 training images, evaluation and VLP 16
    assert (limits.limit_train_images, limits.limit_eval_images) == (32, 16)
    assert limits.limit_vlp_images == 16
    assert sizes.counts(plain) == (32, 16 + 12, 0)
    assert sizes.counts(vlp) == (32, 16 + 12, 16)
    assert DataSizes(None, None, None).counts(plain) == (None, None, 0)
    # the sweep's feature cache holds each image once, whichever points use it
    assert cost.feature_images([plain, vlp], {"coco": sizes}) == 32 + 28 + 16
    assert cost.feature_images([plain], {"coco": DataSizes(None, 12, None)}) is None


def test_each_dataset_is_counted_apart_and_the_shared_vlp_set_once(tmp_path) -> None:
    spec = "name: c\naxes: {dataset: [coco, flickr30k]}\nbase: {vlp: true}\n"
    profile, (coco, flickr) = _plans(tmp_path, spec)
    assert flickr.config.data.captions.name == "dataset_shapes_flickr.json"
    assert coco.config.data.nocaps is not None and flickr.config.data.nocaps is None
    sizes = profile.data_sizes()  # tiny: Shapes 48/8/8 + NoCaps 12, Shapes-Flickr 12/4/4, VLP 16
    assert sizes["coco"].counts(coco) == (32, 8 + 12, 16)
    assert sizes["flickr30k"].counts(flickr) == (12, 4, 16)
    assert cost.feature_images([coco, flickr], sizes) == (32 + 20) + (12 + 4) + 16


def test_estimate_is_rows_times_step_time_plus_decoding(tmp_path) -> None:
    _, (plain, vlp) = _plans(tmp_path, "name: c\naxes: {vlp: [false, true]}\n")
    sizes = DataSizes({"train": 100, "test": 20}, nocaps=12, vlp=40)
    c = plain.config
    rows = c.epochs * 32 * c.captions_per_image
    assert estimate(plain, sizes, RATES).seconds == pytest.approx(rows * 0.01 + 28 * 0.05)
    rows += c.vlp_epochs * 16 * c.captions_per_image
    assert estimate(vlp, sizes, RATES).seconds == pytest.approx(rows * 0.01 + 28 * 0.05)
    unknown = estimate(plain, DataSizes(None, 12, None), RATES)
    assert unknown.seconds is None and "train, evaluation" in unknown.why_unknown
    assert estimate(plain, sizes, None, "why").why_unknown == "why"
    # the point's own disk: checkpoint and resumable state of its trainable parameters
    assert unknown.disk_bytes == plain.arch.trainable_params * cost.CHECKPOINT_BYTES_PER_PARAM


def test_a_calibration_is_measured_once_per_machine_and_architecture(tmp_path, monkeypatch) -> None:
    profile, (plan,) = _plans(tmp_path, "name: c\naxes: {lm: [base]}\n")
    cache = tmp_path / "calibration.json"
    rates = cost.rates_for(plan, profile, cache)
    assert rates.train_row_s > 0 and rates.decode_image_s > 0 and rates.encode_image_s > 0
    assert rates.peak_bytes is None and rates.device == "cpu"

    def refuse(*_):
        raise AssertionError("calibrated again")

    monkeypatch.setattr(cost, "calibrate", refuse)
    assert cost.rates_for(plan, profile, cache) == rates
    assert len(json.loads(cache.read_text())) == 1


def test_the_summary_sets_the_estimate_against_what_finished_points_recorded(tmp_path) -> None:
    profile, plans = _plans(tmp_path, "name: c\naxes: {lm: [base, large]}\n")
    costs = {
        p.run_id: cost.Cost(seconds=s, peak_bytes=None, disk_bytes=1000)
        for p, s in zip(plans, (30.0, 90.0), strict=True)
    }
    folder = folders.run_dir(profile.runs_dir, plans[0].run_id)
    folder.mkdir(parents=True)
    metrics = {"time/train_s": 40.0, "time/decode_s": 10.0, "time/score_s": 99.0}
    (folder / "result.json").write_text(json.dumps({"metrics": metrics}))
    sizes = DataSizes({"train": 10}, None, None, assumed=("NoCaps",))
    lines = "\n".join(summary(profile, plans, costs, {"coco": sizes}))
    assert "image counts of NoCaps: the published sizes" in lines
    assert "2 min of worker time for 2 of 2 points" in lines
    # 30 s estimated against 40 + 10 s recorded for the same work (scoring is not estimated)
    assert "measured on 1 finished point(s): estimate / recorded time median 0.60" in lines
