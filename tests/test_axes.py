"""Sweep axes are declared once (``bench.sweep.axes``): a new axis is one declaration, and the spec
schema, the resolved config (hence the run id), the override guard, the dry run, the MLflow params
and the report's table all follow from it."""

from __future__ import annotations

import pytest

from bench.report.results import Run, RunSet
from bench.sweep import axes, worker
from bench.sweep.dry_run import describe
from bench.sweep.profiles import get_profile
from bench.sweep.spec import parse_spec
from ituning.errors import ConfigError


def _positive(value) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise ValueError(f"expected a number >= 0, got {value!r}")
    return float(value)


@pytest.fixture
def weight_decay_axis(monkeypatch):
    """A toy axis over an optimiser setting, registered the way a real one is declared."""
    axis = axes.Axis(
        name="weight_decay",
        title="wd",
        doc="AdamW weight decay",
        kind=float,
        setting="optim.weight_decay",
        default=0.01,
        parse=_positive,
        label=lambda value: f"wd={value:g}",
        cell=lambda value, resolved: f"{resolved:g}",
    )
    monkeypatch.setitem(axes.AXES, axis.name, axis)
    return axis


def test_a_declared_axis_runs_through_spec_config_params_dry_run_and_report(
    weight_decay_axis, tmp_path
):
    spec = parse_spec("name: wd\naxes: {weight_decay: [0, 0.1]}\n", source="wd.yaml")
    assert [p["weight_decay"] for p in spec.points()] == [0.0, 0.1]
    profile = get_profile("mini", runs_dir=tmp_path, scale="tiny")
    plans = profile.plan(spec)
    assert [p.config.optim.weight_decay for p in plans] == [0.0, 0.1]
    assert len({p.run_id for p in plans}) == 2  # the run id follows the resolved config
    assert plans[0].point.label() == "base r=d/2 drop=0 s0 wd=0"

    with pytest.raises(
        ConfigError, match=r"overrides.optim.weight_decay: set by the 'weight_decay'"
    ):
        parse_spec("name: x\naxes: {lm: [base]}\noverrides: {optim.weight_decay: 0.5}\n")
    with pytest.raises(ConfigError, match=r"axes.weight_decay\[0\]: expected a number >= 0"):
        parse_spec("name: x\naxes: {weight_decay: [-1]}\n")

    lines = describe(spec, profile, plans, estimate=False).splitlines()
    header = next(line for line in lines if line.strip().startswith("run id"))
    assert header.split()[-4:] == ["wd", "lr", "trainable", "state"]
    rows = [line.split() for line in lines if line.strip()[:12] in {p.run_id for p in plans}]
    assert [row[-4] for row in rows] == ["0", "0.1"]
    assert [row[-3] for row in rows] == [f"{profile.budget.lr:g}"] * 2  # no searched rate at tiny

    params = plans[1].axis_params()
    assert params["weight_decay"] == 0.1 and params["lm"] == "base"
    claim = type("Claim", (), {"attrs": plans[1].queue_attrs(["wd"])})()
    ctx = type("Ctx", (), {"profile": "mini", "scale": "tiny"})()
    logged = worker.run_params(ctx, claim, plans[1].config)
    assert logged["weight_decay"] == 0.1 and "optim.weight_decay" not in logged
    settings = {a.setting for a in axes.AXES.values()}
    assert [k for k in logged if k in settings and k not in axes.AXES] == []  # each value once

    runs = [
        Run(
            f"m{i}",
            p.run_id,
            "FINISHED",
            ("wd",),
            {k: str(v) for k, v in logged.items()}
            | {"weight_decay": str(p.config.optim.weight_decay)},
            {"test/cider": 10.0 * i},
            {},
            0,
        )
        for i, p in enumerate(plans)
    ]
    table = RunSet("sqlite:///x.db", "mini", "tiny", runs=runs).summary(["test/cider"])
    assert list(table["weight_decay"]) == [0.0, 0.1]
    assert list(table["test/cider mean"]) == [0.0, 10.0]
