"""Hostile-but-fair inputs (issue #16): files that are not specs, YAML resource bombs, grids too
large to run, and values that validate and then fail in training. Each is refused by one
``ConfigError`` line (a CLI: ``error: ...``, exit 2, nothing written), before anything runs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench import reproduce
from bench.sweep.axes import Bottleneck
from bench.sweep.cli import main
from bench.sweep.profiles import get_profile
from bench.sweep.spec import MAX_POINTS, load_spec, parse_spec, validate_spec
from ituning.config import ITuningConfig
from ituning.errors import ConfigError
from ituning.files import MAX_INPUT_BYTES, read_text
from ituning.run_config import SEED_MAX, TrainConfig, load_train_config, validate_train_config
from ituning.yaml_input import MAX_DEPTH, MAX_NODES, load_yaml

OK = "name: t\naxes: {lm: [base]}\n"
DATA = {"captions": "x.json", "image_root": "x"}


def _refused(text: str, *needles: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_spec(text, source="x.yaml")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("x.yaml: ")
    for needle in needles:
        assert needle in msg
    return msg


def _cli(argv: list[str], capsys, runs: Path) -> str:
    """Run ``python -m bench.sweep`` in-process; exit 2 with one error line, no runs folder."""
    try:
        rc = main([*argv, "--runs-dir", str(runs)])
    except SystemExit as exc:  # argparse's usage errors
        rc = exc.code
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert not runs.exists()
    return err[0]


# ----------------------------------------------------------------------------- files


@pytest.mark.timeout(30)  # before the fix: the open of a FIFO blocks forever
def test_a_fifo_is_refused_without_being_opened(tmp_path, capsys):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    line = _cli([str(fifo), "--dry-run"], capsys, tmp_path / "runs")
    assert (
        line
        == f"error: {fifo}: not a regular file (a pipe, device or socket); a sweep spec is a YAML text file"
    )


@pytest.mark.timeout(30)
@pytest.mark.parametrize("what", ["sweep spec", "config file"])
def test_devices_folders_and_huge_files_are_refused(tmp_path, what):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_INPUT_BYTES + "\n")
    cases = {
        "/dev/zero": "not a regular file",
        str(tmp_path): "is a folder",
        str(big): f"more than {MAX_INPUT_BYTES:,} bytes",
    }
    for path, needle in cases.items():
        with pytest.raises(ConfigError) as info:
            read_text(path, what)
        assert str(info.value).startswith(f"{path}: {needle}")


def test_special_files_are_one_line_errors_of_both_readers(tmp_path):
    with pytest.raises(ConfigError, match=r"^/dev/zero: not a regular file"):
        load_spec("/dev/zero")
    with pytest.raises(ConfigError, match=r"^/dev/zero: not a regular file"):
        load_train_config(Path("/dev/zero"))
    with pytest.raises(ConfigError, match=r": is a folder, not a YAML text file"):
        load_train_config(tmp_path)


def test_a_name_the_system_refuses_is_one_line(tmp_path, capsys):
    line = _cli(["x" * 5000 + ".yaml", "--dry-run"], capsys, tmp_path / "runs")
    assert "cannot read the sweep spec (File name too long)" in line
    assert "no such sweep spec" in _cli(["x" * 5000, "--dry-run"], capsys, tmp_path / "runs")


# ----------------------------------------------------------------------------- YAML bombs


def _laughs(levels: int = 9, under: str = "overrides") -> str:
    """The billion laughs: each anchor repeats the one before ten times."""
    text = OK + f"{under}:\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for i in range(1, levels):
        text += f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]\n"
    return text


def _mapping_laughs(levels: int = 9) -> str:
    text = OK + "overrides:\n  m0: &m0 {" + ", ".join(f"k{j}: 1" for j in range(10)) + "}\n"
    for i in range(1, levels):
        text += f"  m{i}: &m{i} {{" + ", ".join(f"k{j}: *m{i - 1}" for j in range(10)) + "}\n"
    return text


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bomb", [_laughs, _mapping_laughs])
def test_an_alias_bomb_is_refused_while_composing(bomb):
    started = time.perf_counter()
    _refused(bomb(), f"more than {MAX_NODES:,} values once its aliases are expanded")
    assert time.perf_counter() - started < 5


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        "{a: " * 100_000 + "1" + "}" * 100_000,
        "".join("  " * i + "- \n" for i in range(2000)),
        OK + "overrides: " + "{a: " * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1),
    ],
    ids=["flow lists", "flow mappings", "block lists", "just past the limit"],
)
def test_deep_nesting_is_refused_before_the_composer_recurses(text):
    _refused(text, f"nested deeper than {MAX_DEPTH} levels")


def test_nesting_through_aliases_counts_too():
    """Each anchor one level deeper than the last: flattening it would recurse 200 deep."""
    chain = "".join(f"  a{i}: &a{i} {{k: *a{i - 1}}}\n" for i in range(1, 200))
    _refused(OK + "overrides:\n  a0: &a0 {k: 1}\n" + chain, f"nested deeper than {MAX_DEPTH}")


def test_a_structure_that_contains_itself_is_refused():
    _refused(OK + "overrides: {eval.splits: &s [*s]}\n", "alias *s names the collection")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("? [a, b]\n: 1\n", "a mapping key must be text, got a list"),
        ("{[1]: 2}\n", "a mapping key must be text, got a list"),
        ("{{a: 1}: 2}\n", "a mapping key must be text, got a mapping"),
        (OK + "1: 2\n", "a mapping key must be text, got 1 (int)"),
        (OK + "overrides: {eval: {true: 1}}\n", "got True (bool)"),
    ],
)
def test_keys_are_text(text, needle):
    _refused(text, "line ", needle)


def test_an_integer_python_cannot_print_is_refused():
    _refused("name: t\naxes: {seed: [" + "9" * 5000 + "]}\n", "an integer of 5,000 digits")
    _refused("name: t\naxes: {seed: [0x" + "f" * 5000 + "]}\n", "an integer of 5,002 digits")


def test_the_loader_keeps_the_spec_rules():
    assert load_yaml("lr: 1e-4\nx: 1.0e30\n", "x") == {"lr": 1e-4, "x": 1e30}
    _refused("name: t\nname: u\n", "line 2: duplicate key 'name'")
    _refused("name: !!python/name:os.system\n", "YAML tag !!python/name:os.system is not allowed")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (_mapping_laughs().replace(OK + "overrides:\n", ""), "more than 100,000 values"),
        ("{a: " * 1000 + "1" + "}" * 1000, f"nested deeper than {MAX_DEPTH} levels"),
        ("data: {? [a]\n: 1}\n", "a mapping key must be text"),
        ("epochs: 1\nepochs: 2\n", "duplicate key 'epochs'"),
    ],
    ids=["alias bomb", "deep", "unhashable key", "duplicate key"],
)
def test_a_run_config_is_read_by_the_same_loader(tmp_path, text, needle):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_train_config(path)
    assert needle in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------- grid size


def _seeds(n: int) -> dict:
    return {"name": "t", "axes": {"seed": list(range(n))}}


@pytest.mark.timeout(60)
def test_a_spec_at_the_point_limit_validates_quickly():
    started = time.perf_counter()
    raw = {
        "name": "t",
        "axes": {"seed": list(range(MAX_POINTS // 2)), "vlp": [False, True]},
        "exclude": [{"seed": i, "vlp": True} for i in range(MAX_POINTS // 2 - 1)],
    }
    spec = validate_spec(raw)
    assert len(spec.points()) == MAX_POINTS // 2 + 1
    assert time.perf_counter() - started < 15  # seconds; quadratic exclusion took minutes


@pytest.mark.timeout(60)
def test_too_many_values_or_points_are_refused_before_enumerating():
    with pytest.raises(
        ConfigError, match=r"axes.seed: 1,000,000 values; a spec has at most 10,000"
    ):
        validate_spec(_seeds(10**6), source="x.yaml")
    grid = {"name": "t", "axes": {"seed": list(range(101)), "lambda": [1 + i for i in range(100)]}}
    with pytest.raises(ConfigError) as info:
        validate_spec(grid, source="x.yaml")
    assert str(info.value).startswith("x.yaml: axes: 10,100 points (the product of the axis")
    assert "more than the 10,000 a spec may have" in str(info.value)
    crossed = {**_seeds(5000), "extra": [{"lm": "large"}, {"lm": "medium"}]}
    with pytest.raises(ConfigError, match=r"axes: 15,000 points"):
        validate_spec(crossed)  # each extra point runs at every seed
    assert validate_spec(_seeds(MAX_POINTS)).size() == MAX_POINTS


@pytest.mark.timeout(30)
def test_seeds_option_respects_the_point_limit(tmp_path, capsys):
    spec = parse_spec("name: t\naxes: {lm: [base, large]}\n", source="x.yaml")
    assert len(spec.with_seeds(MAX_POINTS // 2).points()) == MAX_POINTS
    with pytest.raises(ConfigError, match=r"--seeds 5001: x.yaml would have 10,002 points"):
        spec.with_seeds(MAX_POINTS // 2 + 1)
    with pytest.raises(ConfigError, match=r"--seeds 1000000000000: a spec has at most 10,000"):
        spec.with_seeds(10**12)  # was a tuple of 10^12 seeds
    line = _cli(["smoke", "--dry-run", "--seeds", "100000"], capsys, tmp_path / "runs")
    assert "--seeds 100000" in line


def test_reproduce_seeds_respects_the_point_limit(tmp_path, capsys):
    rc = reproduce.main(["--seeds", "100000", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --seeds 100000")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--heartbeat", "0"], "--heartbeat must be >= 1"),
        (["--grace", "5"], "--grace must be"),
        (["--workers", "1000000"], "--workers 1000000: expected 0 to"),  # spawned them all
        (["--workers", "-1"], "--workers -1: expected 0 to"),
    ],
)
def test_worker_flags(flags, needle, tmp_path, capsys):
    assert needle in _cli(["smoke", *flags], capsys, tmp_path / "runs")


# ----------------------------------------------------------------------------- values


def test_seeds_fit_torch():
    _refused(
        "name: t\naxes: {seed: [9223372036854775808]}\n",
        "axes.seed[0]: expected an integer <= 2**63 - 1",
    )
    assert parse_spec(f"name: t\naxes: {{seed: [{SEED_MAX}]}}\n").points()[0]["seed"] == SEED_MAX
    for seed in (SEED_MAX + 1, -1):
        with pytest.raises(ConfigError, match=r"^config: seed: Input should be"):
            validate_train_config({"data": DATA, "seed": seed})


def test_an_absolute_bottleneck_is_bounded_by_the_lm():
    with pytest.raises(ConfigError) as info:
        Bottleneck(width=10**9).resolve(768)
    assert str(info.value) == (
        "bottleneck: {width: 1000000000} is wider than 4 x d_lm = 3072 of this LM (d_lm = 768); "
        "give a width <= 3072 or a fraction of d_lm"
    )
    assert Bottleneck(width=3072).resolve(768) == 3072
    _refused(
        "name: t\naxes: {bottleneck: [{width: 1000000000}]}\n",
        "width: expected an integer in 1..65536",
    )
    spec = parse_spec("name: t\naxes: {bottleneck: [{width: 4000}]}\n")
    with pytest.raises(ConfigError, match=r"d_lm = 768"):
        get_profile("paper", data_root="data").plan(spec)
    with pytest.raises(
        ConfigError, match=r"bottleneck: Input should be less than or equal to 65536"
    ):
        ITuningConfig(bottleneck=10**9)
    with pytest.raises(ConfigError, match=r"r = 4000 is wider than 4 x d_lm = 3072"):
        ITuningConfig(bottleneck=4000).resolved_bottleneck(768)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("eval.beam: 1000000", "overrides.eval.beam: Input should be less than or equal to 64"),
        ("eval.max_new_tokens: 100000", "overrides.eval.max_new_tokens: Input should be less"),
        ("eval.batch_images: 100000", "overrides.eval.batch_images: Input should be less"),
        ("max_caption_tokens: 100000", "overrides.max_caption_tokens: Input should be less"),
        ("micro_batch_images: 100000", "overrides.micro_batch_images: Input should be less"),
        ("batch_captions: 100000000", "overrides.batch_captions: Input should be less"),
        ("epochs: 1000000", "overrides.epochs: Input should be less than or equal to 10000"),
        ("epochs: true", "overrides.epochs: expected an integer, got true"),
        ("optim.lr: false", "overrides.optim.lr: expected a number, got false"),
        ("optim.lr: .nan", "overrides.optim.lr: Input should be a finite number"),
        ("eval.length_penalty: .inf", "overrides.eval.length_penalty: Input should be a finite"),
        ("feature_cache: /tmp/elsewhere", "overrides.feature_cache: a path, set by the profile"),
        ("feature_cache: ../../x", "overrides.feature_cache: a path"),
        ("{feature_cache: {x: 1}}", "overrides.feature_cache: a path"),
    ],
)
def test_override_values_that_would_fail_in_training(override, needle):
    body = override if override.startswith("{") else "{" + override + "}"
    _refused(OK + f"overrides: {body}\n", needle)


def test_booleans_are_not_numbers_anywhere_but_ints_are_floats():
    for raw in ({"epochs": True}, {"itune": {"drop_first": False}}, {"optim": {"lr": True}}):
        with pytest.raises(ConfigError, match=r"expected (an integer|a number), got (true|false)"):
            validate_train_config({"data": DATA, **raw})
    with pytest.raises(ConfigError, match=r"ITuningConfig.scale: expected a number, got true"):
        ITuningConfig(scale=True)
    cfg = validate_train_config({"data": DATA, "optim": {"lr": 1}, "vlp": False})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert TrainConfig.model_validate_json(cfg.canonical_json()) == cfg
    assert parse_spec(OK + "overrides: {itune.include_cls: true, eval.nocaps: false}\n")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('name: "table1\\n"\naxes: {lm: [base]}\n', r"name: expected a name of letters"),
        (f"name: {'a' * 101}\naxes: {{lm: [base]}}\n", "at most 100 characters"),
        (OK + f"description: {'x' * 5001}\n", "description: longer than 5,000 characters"),
        ('name: t\naxes: {lm: [base]}\n"a\\nb": 1\n', r"x.yaml: 'a\nb': unknown key"),
        ('name: t\naxes: {"lm\\n": [base]}\n', r"x.yaml: axes.'lm\n': unknown key"),
    ],
)
def test_names_and_keys_stay_on_one_line(text, needle):
    _refused(text, needle)
