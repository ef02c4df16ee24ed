"""Property-based fuzzing of what a user types (issue #16): generated specs, run configs and
``python -m bench.sweep`` command lines. Most generated values are valid for their place (drawn
from the settings' own types and bounds, so that the checks behind the first error are reached
too); about one in eight is hostile (huge integers, booleans where numbers go, NaN, deep nesting,
long or odd strings, unknown keys, paths, alias bombs). The contract: a spec or config either
loads (and then resolves) or is refused by one ``ConfigError`` line; the command exits 0 (a dry
run) or 2 with exactly one ``error:`` line, no traceback, and no runs folder.

Fixed seeds and bounded examples: the module takes seconds and writes no hypothesis database."""

from __future__ import annotations

import io
import os
import tempfile
import typing
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import annotated_types as at
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bench.sweep import axes
from bench.sweep.cli import main
from bench.sweep.profiles import get_profile
from bench.sweep.spec import MAX_POINTS, TOP_KEYS, parse_spec
from ituning.errors import ConfigError
from ituning.run_config import TrainConfig, set_dotted, validate_train_config

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def mostly(valid: st.SearchStrategy, hostile: st.SearchStrategy) -> st.SearchStrategy:
    """``valid`` seven times in eight, else ``hostile`` (valid is also what shrinking prefers)."""
    return st.integers(0, 7).flatmap(lambda i: hostile if i == 7 else valid)


# ----------------------------------------------------------------------------- values

ODD_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
HOSTILE = st.one_of(
    st.sampled_from(
        [
            -1,
            2**63,
            2**64,
            10**9,
            10**40,
            True,
            False,
            None,
            1e308,
            float("inf"),
            float("nan"),
            "",
            "1e-4",
            "table1\n",
            "/tmp/elsewhere",
            "../../x",
            "x" * 300,
            [],
            {},
        ]
    ),  # fmt: skip
    st.integers(-(2**70), 2**70),
    st.floats(),
    ODD_TEXT,
)
TREES = st.recursive(
    HOSTILE,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ODD_TEXT, inner, max_size=3),
    max_leaves=8,
)


def _valid(info: Any) -> st.SearchStrategy:
    """Values of a pydantic field's own type within its bounds (``Ge``, ``Lt``, ...)."""
    annotation = info.annotation
    args = typing.get_args(annotation)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if optional else annotation
    assert all(isinstance(m, at.Ge | at.Gt | at.Le | at.Lt) for m in info.metadata)
    bounds = {type(m).__name__.lower(): getattr(m, type(m).__name__.lower()) for m in info.metadata}
    if base is bool:
        out: st.SearchStrategy = st.booleans()
    elif base is int:
        lo = bounds.get("ge", bounds.get("gt", -11) + 1)
        out = st.integers(lo, bounds.get("le", lo + 10**6))
    elif base is float:
        lo, hi = bounds.get("ge", bounds.get("gt", -1e6)), bounds.get("le", bounds.get("lt", 1e6))
        out = st.floats(lo, hi, exclude_min="gt" in bounds, exclude_max="lt" in bounds)
    elif typing.get_origin(base) is typing.Literal:
        out = st.sampled_from(typing.get_args(base))
    elif typing.get_origin(base) is tuple:
        out = st.lists(st.sampled_from(["test", "val", "train"]), max_size=3)
    else:  # str, Path
        out = st.text("abc/._-", min_size=1, max_size=10)
    return st.one_of(out, st.none()) if optional else out


def _fields(model: type, prefix: str = "") -> dict[str, Any]:
    """Every dotted TrainConfig setting and its pydantic field, nested models included."""
    out = {}
    for name, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and hasattr(sub, "model_fields"):
            out.update(_fields(sub, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = info
    return out


FIELDS = _fields(TrainConfig)
OWNED = set(axes.settings())
OVERRIDABLE = sorted(
    k for k in FIELDS if k not in OWNED and k.split(".")[0] not in ("data", "backbones")
)


@st.composite
def settings_of(draw: st.DrawFn, keys: list[str], max_size: int = 3) -> dict[str, Any]:
    """A few dotted settings, mostly with valid values; sometimes a key that is not one."""
    out = {}
    for _ in range(draw(st.integers(0, max_size))):
        key = draw(mostly(st.sampled_from(keys), st.sampled_from(sorted(FIELDS)) | ODD_TEXT))
        info = FIELDS.get(key)
        out[key] = draw(mostly(_valid(info), TREES) if info else TREES)
    return out


# ----------------------------------------------------------------------------- specs

AXIS_VALUES = {
    "lm": mostly(st.sampled_from(["base", "medium", "large"]), HOSTILE),
    "lambda": mostly(st.sampled_from([1, 1.0, 2, 2.5, 10, 0.5]), HOSTILE),
    "bottleneck": mostly(
        st.sampled_from([None, 0.25, 0.5, 1, 4, {"width": 64}, {"width": 4000}]),
        HOSTILE | st.builds(lambda w: {"width": w}, HOSTILE),
    ),
    "drop": mostly(
        st.sampled_from([0, 0.25, 0.5, 0.99, {"layers": 2}, {"layers": 12}]),
        HOSTILE | st.builds(lambda n: {"layers": n}, HOSTILE),
    ),
    "vlp": mostly(st.booleans(), HOSTILE),
    "seed": mostly(st.integers(0, 2**63 - 1), HOSTILE),
}
AXIS_NAMES = sorted(AXIS_VALUES)
NAMES = mostly(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True), ODD_TEXT)


@st.composite
def points(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(AXIS_NAMES), max_size=3, unique=True))
    return {name: draw(AXIS_VALUES[name]) for name in names}


@st.composite
def spec_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A spec: mostly the right shape with mostly valid values, sections present or not."""
    grid = {}
    for name in draw(st.lists(st.sampled_from(AXIS_NAMES), min_size=1, max_size=3, unique=True)):
        values = draw(st.lists(AXIS_VALUES[name], min_size=1, max_size=3, unique_by=repr))
        grid[name] = values if len(values) > 1 or draw(st.booleans()) else values[0]
    raw: dict[str, Any] = {"name": draw(NAMES), "axes": draw(mostly(st.just(grid), TREES))}
    sections = {
        "description": mostly(st.text(max_size=40), HOSTILE),
        "base": mostly(points(), TREES),
        "exclude": mostly(st.lists(points(), max_size=2), TREES),
        "extra": mostly(st.lists(points(), max_size=2), TREES),
        "overrides": mostly(settings_of(OVERRIDABLE), TREES),
    }
    for key in draw(st.lists(st.sampled_from(sorted(sections)), max_size=3, unique=True)):
        raw[key] = draw(sections[key])
    if draw(st.integers(0, 15)) == 15:
        raw[draw(ODD_TEXT.filter(lambda k: k not in TOP_KEYS))] = draw(TREES)
    return raw


def _bomb(levels: int, width: int) -> str:
    text = "name: t\naxes: {lm: [base]}\noverrides:\n  a0: &a0 [lol]\n"
    for i in range(1, levels):
        text += f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]\n"
    return text


HOSTILE_TEXT = st.one_of(
    st.builds(_bomb, st.integers(2, 12), st.integers(2, 12)),
    st.integers(1, 3000).map(lambda n: "name: t\naxes: {lm: " + "[" * n + "]" * n + "}\n"),
    st.integers(1, 3000).map(lambda n: "{a: " * n + "1" + "}" * n),
    st.text(st.sampled_from(list("[]{}:,-?&*!|>'\"#%@` \n\tab1")), max_size=60),
)


def _dump(raw: Any) -> str:
    return yaml.safe_dump(raw, allow_unicode=True, sort_keys=False)


SPEC_TEXTS = mostly(spec_dicts().map(_dump), HOSTILE_TEXT)


def _one_line(exc: ConfigError, source: str) -> None:
    msg = str(exc)
    assert "\n" not in msg and "\r" not in msg and msg.startswith(f"{source}: "), msg


@pytest.fixture(scope="module")
def paper():
    return get_profile("paper", data_root="data", runs_dir="runs")


@settings(FUZZ, max_examples=200)
@given(SPEC_TEXTS)
def test_a_spec_loads_and_resolves_or_is_one_error_line(paper, text):
    try:
        spec = parse_spec(text, source="fuzz.yaml")
    except ConfigError as exc:
        _one_line(exc, "fuzz.yaml")
        event("refused on load")
        return
    assert spec.size() <= MAX_POINTS and spec.points()
    try:
        plans = paper.plan(spec)  # the library's rules (λ >= 1, a layer kept) may still refuse
    except ConfigError as exc:
        _one_line(exc, "fuzz.yaml" if "point [" in str(exc) else "bottleneck")
        event("refused on resolution")
        return
    event("resolved")
    for plan in plans:  # what validated is what a worker reads back
        assert TrainConfig.model_validate_json(plan.config.canonical_json()) == plan.config


# ----------------------------------------------------------------------------- run configs


@settings(FUZZ, max_examples=200)
@given(settings_of(sorted(FIELDS), max_size=5))
def test_a_run_config_validates_or_is_one_error_line(overrides):
    raw: dict[str, Any] = {"data": {"captions": "x.json", "image_root": "x"}}
    try:
        for dotted, value in overrides.items():
            set_dotted(raw, dotted, value)
        cfg = validate_train_config(raw, source="fuzz.yaml")
    except ConfigError as exc:
        assert "\n" not in str(exc)
        event("refused")
        return
    event("valid")
    assert TrainConfig.model_validate_json(cfg.canonical_json()) == cfg
    for dotted, info in FIELDS.items():  # no boolean slipped into a number
        value: Any = cfg
        for part in dotted.split("."):
            value = getattr(value, part)
        if isinstance(value, bool):
            assert info.annotation is bool, dotted


# ----------------------------------------------------------------------------- the command

ARG_TEXT = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=15
)


def _flag(name: str, valid: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(st.just(name), mostly(valid, ARG_TEXT))


OPTIONS = st.one_of(
    _flag("--profile", st.sampled_from(["mini", "paper"])),
    _flag("--scale", st.sampled_from(["full", "tiny"])),
    _flag("--seeds", st.integers(-1, 2 * MAX_POINTS).map(str)),
    _flag("--workers", st.integers(-1, 10**6).map(str)),
    _flag("--heartbeat", st.integers(-1, 100).map(str)),
    _flag("--grace", st.integers(-1, 100).map(str)),
    _flag("--data-root", st.sampled_from(["data", "/nonexistent"])),
    _flag("--storage", st.just("sqlite:///x.db")),
    st.tuples(st.just("--quiet")),
)
SPEC_ARGS = mostly(
    st.sampled_from(["smoke", "bottleneck", "lambda", "table1"])
    | st.tuples(st.just("FILE"), SPEC_TEXTS),
    st.sampled_from(["nope", "", "sweeps/", "/dev/zero", ("FIFO",)]) | ARG_TEXT,
)


@settings(FUZZ, max_examples=80)
@given(SPEC_ARGS, st.lists(OPTIONS, max_size=4))
def test_the_sweep_command_dry_runs_or_exits_2_with_one_line(spec_arg, options):
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp) / "runs"
        if isinstance(spec_arg, tuple):  # a file of ours: generated text, or a FIFO
            path = Path(tmp) / "spec.yaml"
            if spec_arg[0] == "FIFO":
                os.mkfifo(path)
            else:
                path.write_text(spec_arg[1], encoding="utf-8")
            spec_arg = str(path)
        argv = [spec_arg, *(part for option in options for part in option)]
        argv += ["--dry-run", "--no-estimate", "--runs-dir", str(runs)]  # never a real sweep
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse's usage errors
                rc = exc.code
        lines = err.getvalue().splitlines()
        event(f"exit {rc}")
        if rc == 0:
            assert lines == [] and "runs" in out.getvalue()
        else:
            assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, lines)
        assert not runs.exists(), argv
