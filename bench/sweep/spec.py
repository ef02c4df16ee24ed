"""Sweep specs: the declarative YAML files under ``sweeps/`` and their grid of points.

A spec names *what* to vary in the paper's own terms; a profile (``bench.sweep.profiles``) later says
*with what* (backbones, data, budget). The same spec therefore runs under ``mini`` and ``paper``.

Format (every key but ``name`` and ``axes`` is optional)::

    name: table1                      # letters, digits, '-', '_', '.'; its runs get tag spec.<name>
    description: Table 1 rows ...     # free text, shown by --dry-run; an MLflow experiment tag
    base:                             # the point every grid point starts from
      lm: base                        # LM: base | medium | large, llama-*, smollm2 (axes.LM_NAMES)
      lambda: null                    # λ of eq. (5): null = searched with the rate (bench.tune), or >= 1
      bottleneck: null                # r: null = d_lm/2 (the paper's), 0.25 = d_lm/4, {width: 64}
      drop: 0                         # dropped layers: 0.5 = half the depth, {layers: 18}
      vlp: false                      # vision-language pre-training first
      seed: 0
    axes:                             # the grid is the product of these lists
      lm: [base, medium, large]
      vlp: [false, true]
    exclude:                          # drop product points matching every key given
      - {lm: base, vlp: true}
    extra:                            # explicit points: base updated with the keys given, and
      - {lm: large, vlp: true, drop: 0.5}   # crossed with every grid axis they leave out (seed)
    overrides:                        # TrainConfig settings for every point (dotted or nested)
      eval.nocaps: true

The axes (their notation, defaults and rules of resolution) are declared once, in
``bench.sweep.axes``. Settings that an axis decides (``itune.scale``, ``itune.bottleneck``,
``itune.drop_first``, ``vlp``, ``seed``, ...) and profile-owned ones (``backbones.*``, ``data.*``,
and every path, e.g. ``feature_cache``) cannot be overridden: each has exactly one place where it
is set. Overrides are checked against :class:`TrainConfig` when the spec is loaded, before anything
runs; the method's own rules (e.g. λ >= 1) are checked by the library's config when the profile
resolves each point.

A spec is untrusted input with limits: a regular file of at most
:data:`~ituning.files.MAX_INPUT_BYTES` (:func:`ituning.files.read_text`), plain YAML of bounded
depth and expanded size with text keys (:mod:`ituning.yaml_input`), a name of at most
:data:`NAME_MAX` characters, and at most :data:`MAX_POINTS` points, counted from the axis lengths
before any point is enumerated.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.sweep import axes
from ituning.errors import ConfigError, printable, validation_line
from ituning.files import read_text
from ituning.yaml_input import load_yaml

TOP_KEYS = ("name", "description", "base", "axes", "exclude", "extra", "overrides")
_PROFILE_OWNED = ("backbones", "data", "clipcap")
#: Points a spec may have, counted from its axis lengths before any is enumerated; also the cap on
#: one axis, the extra and the exclude lists. Each point is a training run: the paper's tables
#: are a few dozen, and 10,000 runs is beyond any machine this harness targets.
MAX_POINTS = 10_000
NAME_MAX = 100  # its runs get the MLflow tag key spec.<name> (at most 250 characters)
DESCRIPTION_MAX = 5_000  # an MLflow experiment tag
_NAME_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{NAME_MAX - 1}}}")


@dataclass(frozen=True)
class Point:
    """One grid point in the spec's own (profile-independent) terms: a value for every axis."""

    values: tuple[tuple[str, Any], ...] = field(
        default_factory=lambda: tuple((a.name, a.default) for a in axes.AXES.values())
    )

    def __getitem__(self, axis: str) -> Any:
        return dict(self.values)[axis]

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.values)

    def replace(self, changes: Mapping[str, Any]) -> Point:
        merged = {**dict(self.values), **changes}
        return Point(tuple((name, merged[name]) for name in axes.AXES))

    def to_yaml(self) -> dict[str, Any]:
        """The point as a spec would write it (used for tags and the queue)."""
        return {name: axes.AXES[name].to_yaml(value) for name, value in self.values}

    def label(self, *, seed: bool = True) -> str:
        """A short human name: ``large λ=1 r=d/2 drop=0.5 vlp s0`` (without ``s0``: the name of
        the setting that its seeds share)."""
        method = self["method"]
        parts = (
            axes.AXES[name].label(value)
            for name, value in self.values
            if (seed or name != "seed") and axes.AXES[name].applies(method)
        )
        return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    description: str
    source: str
    base: Point
    axes: dict[str, tuple[Any, ...]]
    exclude: tuple[dict[str, Any], ...] = ()
    extra: tuple[dict[str, Any], ...] = ()  # partial points: the axis values each one sets
    overrides: dict[str, Any] = field(default_factory=dict)

    def points(self) -> list[Point]:
        """Product of the axes minus exclusions, then the extra points (each crossed with the
        grid axes it does not set, e.g. every seed); duplicates removed."""
        excluded = self._excluded()
        out = [point for point in self._product(self.base, set()) if not excluded(point)]
        for partial in self.extra:
            out.extend(self._product(self.base.replace(partial), set(partial)))
        return list(dict.fromkeys(out))

    def size(self) -> int:
        """The points before exclusions and duplicates are removed, from the axis lengths alone
        (no point is enumerated): the grid's product plus, for each extra point, the product of
        the grid axes it leaves out. What :data:`MAX_POINTS` bounds."""
        return math.prod(len(v) for v in self.axes.values()) + sum(
            math.prod(len(v) for a, v in self.axes.items() if a not in partial)
            for partial in self.extra
        )

    def _excluded(self) -> Callable[[Point], bool]:
        """Whether a point matches an exclusion: one set lookup per group of exclusions naming
        the same axes, instead of comparing every point with every exclusion."""
        groups: dict[tuple[str, ...], set[tuple[Any, ...]]] = {}
        for ex in self.exclude:
            names = tuple(sorted(ex))
            groups.setdefault(names, set()).add(tuple(ex[k] for k in names))

        def excluded(point: Point) -> bool:
            values = dict(point.values)
            return any(tuple(values[k] for k in names) in hit for names, hit in groups.items())

        return excluded

    def _product(self, start: Point, fixed: set[str]) -> Iterator[Point]:
        names = [a for a in axes.AXES if a in self.axes and a not in fixed]
        for combo in itertools.product(*(self.axes[a] for a in names)):
            yield start.replace(dict(zip(names, combo, strict=True)))

    def with_seeds(self, n: int) -> SweepSpec:
        """The same spec with its seed axis replaced by seeds ``0 .. n-1`` (``--seeds N``)."""
        if n < 1:
            raise ConfigError(f"--seeds must be >= 1, got {n}")
        if n > MAX_POINTS:
            raise ConfigError(f"--seeds {n}: a spec has at most {MAX_POINTS:,} points; use fewer")
        grid = {**self.axes, "seed": tuple(range(n))}
        extra = tuple({k: v for k, v in p.items() if k != "seed"} for p in self.extra)
        spec = dataclasses.replace(self, axes=grid, extra=extra)
        if spec.size() > MAX_POINTS:
            raise ConfigError(
                printable(
                    f"--seeds {n}: {spec.source} would have {spec.size():,} points, more than "
                    f"the {MAX_POINTS:,} a spec may have; use fewer seeds"
                )
            )
        return spec


# --------------------------------------------------------------------------- loading


def load_spec(path: Path | str) -> SweepSpec:
    """Read and validate a spec file; any problem is a ConfigError naming file and field."""
    path = Path(path)
    text = read_text(path, "sweep spec")
    return parse_spec(text, source=str(path))


def parse_spec(text: str, *, source: str = "spec") -> SweepSpec:
    raw = load_yaml(text, printable(source), "spec")
    return validate_spec(raw, source=source)


def validate_spec(raw: Any, *, source: str = "spec") -> SweepSpec:
    def fail(where: str, msg: str) -> ConfigError:
        return ConfigError(printable(f"{source}: {where}: {msg}"))

    if not isinstance(raw, dict):
        raise ConfigError(
            printable(f"{source}: expected a mapping with keys {', '.join(TOP_KEYS)}")
        )
    _no_unknown(raw, TOP_KEYS, "", fail)
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise fail(
            "name",
            f"expected a name of letters, digits, '-', '_', '.' (at most {NAME_MAX} characters; "
            f"got {name!r})",
        )
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise fail("description", f"expected text, got {_typename(description)}")
    if len(description) > DESCRIPTION_MAX:
        raise fail("description", f"longer than {DESCRIPTION_MAX:,} characters; shorten it")

    base_raw = raw.get("base", {}) or {}
    if not isinstance(base_raw, dict):
        raise fail("base", f"expected a mapping of axis values, got {_typename(base_raw)}")
    base = Point().replace(_partial(base_raw, "base", fail))

    axes_raw = raw.get("axes")
    if not isinstance(axes_raw, dict) or not axes_raw:
        raise fail("axes", f"expected a mapping of one or more of {', '.join(axes.AXES)} to lists")
    _no_unknown(axes_raw, axes.AXES, "axes", fail)
    grid: dict[str, tuple[Any, ...]] = {}
    for key, values in axes_raw.items():
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise fail(f"axes.{key}", "empty axis; give at least one value")
        if len(values) > MAX_POINTS:
            raise fail(
                f"axes.{key}", f"{len(values):,} values; a spec has at most {MAX_POINTS:,} points"
            )
        parsed = [_axis_value(key, v, f"axes.{key}[{i}]", fail) for i, v in enumerate(values)]
        seen: set[Any] = set()
        for i, v in enumerate(parsed):
            if v in seen:
                raise fail(f"axes.{key}[{i}]", f"duplicate value {values[i]!r}")
            seen.add(v)
        grid[key] = tuple(parsed)

    exclude = tuple(
        _partial(item, f"exclude[{i}]", fail) for i, item in enumerate(_list(raw, "exclude", fail))
    )
    for i, ex in enumerate(exclude):
        if not ex:
            raise fail(f"exclude[{i}]", "an empty exclusion would remove every point")
    extra = tuple(
        _partial(item, f"extra[{i}]", fail) for i, item in enumerate(_list(raw, "extra", fail))
    )
    overrides = _overrides(raw.get("overrides", {}) or {}, fail)

    spec = SweepSpec(
        name=name,
        description=description.strip(),
        source=source,
        base=base,
        axes=grid,
        exclude=exclude,
        extra=extra,
        overrides=overrides,
    )
    if spec.size() > MAX_POINTS:
        raise fail(
            "axes",
            f"{spec.size():,} points (the product of the axis lengths, plus each extra point "
            f"crossed with the axes it leaves out), more than the {MAX_POINTS:,} a spec may have; "
            "split it into several specs",
        )
    if not spec.points():
        raise fail("exclude", "the exclusions remove every point of the grid")
    return spec


def find_spec(name_or_path: str, search_dir: Path) -> Path:
    """``table1`` -> ``<search_dir>/table1.yaml``; an existing path is returned unchanged."""
    path = Path(name_or_path)
    if _exists(path) or path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return path
    candidate = search_dir / f"{name_or_path}.yaml"
    if _exists(candidate):
        return candidate
    known = sorted(p.stem for p in search_dir.glob("*.yaml"))
    raise ConfigError(
        printable(
            f"{name_or_path}: no such sweep spec (give a YAML path or one of: {', '.join(known)})"
        )
    )


def _exists(path: Path) -> bool:
    """``path.exists()``, False for a name the system refuses (too long): read_text says why."""
    try:
        return path.exists()
    except OSError:
        return False


# --------------------------------------------------------------------------- helpers


def _no_unknown(raw: Mapping, allowed: Iterable[str], where: str, fail) -> None:
    for key in raw:
        if key not in allowed:
            plain = isinstance(key, str) and key.isprintable() and key.strip() == key != ""
            shown = key if plain else repr(key)  # '' or ' lm' or 'a\nb': quoted
            at = f"{where}.{shown}" if where else shown
            raise fail(at, f"unknown key (allowed: {', '.join(allowed)})")


def _list(raw: Mapping, key: str, fail) -> list:
    value = raw.get(key, []) or []
    if not isinstance(value, list):
        raise fail(key, f"expected a list of points, got {_typename(value)}")
    if len(value) > MAX_POINTS:
        raise fail(key, f"{len(value):,} points; a spec has at most {MAX_POINTS:,}")
    return value


def _partial(item: Any, where: str, fail) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise fail(where, f"expected a mapping of axis values, got {_typename(item)}")
    _no_unknown(item, axes.AXES, where, fail)
    return {k: _axis_value(k, v, f"{where}.{k}", fail) for k, v in item.items()}


def _axis_value(key: str, value: Any, where: str, fail) -> Any:
    try:
        return axes.AXES[key].parse(value)
    except ValueError as exc:
        sub, _, msg = str(exc).rpartition(": expected ")
        if sub and " " not in sub:  # a sub-key's problem, e.g. "layers: expected ..."
            raise fail(f"{where}.{sub}", f"expected {msg}") from None
        raise fail(where, str(exc)) from None


def _overrides(raw: Any, fail) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise fail("overrides", f"expected a mapping of TrainConfig settings, got {_typename(raw)}")
    flat = _flatten(raw)
    # Imported here so that the spec schema can be read without the training stack.
    from ituning.run_config import TrainConfig

    owned = axes.settings()
    for key in flat:
        if key.split(".")[0] in _PROFILE_OWNED:
            raise fail(f"overrides.{key}", "set by the profile (--profile), not by a spec")
        if key in owned:
            raise fail(f"overrides.{key}", f"set by the '{owned[key]}' axis, not by an override")
        _check_path(TrainConfig, key, fail)
    _check_values(flat, fail)
    return flat


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _check_path(model: type, dotted: str, fail) -> None:
    """``dotted`` names a TrainConfig setting that a spec may set. No path is one: the profile
    puts every path a run uses under its own folders (``feature_cache`` under ``--runs-dir``, the
    data under ``--data-root``), and a spec runs unchanged under every profile, so a path in a
    spec would be wrong under one of them (and an absolute or ``..`` one would write outside the
    runs folder). Refusing paths outright is simpler to state and check than judging them."""
    from pydantic import BaseModel

    node: Any = model
    for i, part in enumerate(dotted.split(".")):
        fields = getattr(node, "model_fields", None)
        where = ".".join(dotted.split(".")[: i + 1])
        if fields is None or part not in fields:
            allowed = ", ".join(
                k for k, f in (fields or {}).items() if k not in _PROFILE_OWNED and not _is_path(f)
            )
            raise fail(f"overrides.{where}", f"unknown setting (allowed here: {allowed})")
        if _is_path(fields[part]):
            raise fail(
                f"overrides.{where}",
                "a path, set by the profile under --runs-dir or --data-root, not by a spec",
            )
        annotation = fields[part].annotation
        node = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )


def _is_path(field: Any) -> bool:
    annotation = field.annotation
    return annotation is Path or Path in typing.get_args(annotation)


def _check_values(flat: dict[str, Any], fail) -> None:
    """Validate override values against TrainConfig with placeholder data paths."""
    from pydantic import ValidationError

    from ituning.run_config import TrainConfig, set_dotted

    tree: dict[str, Any] = {"data": {"captions": "x.json", "image_root": "x"}}
    try:
        for dotted, value in flat.items():
            set_dotted(tree, dotted, value)
        TrainConfig.model_validate(tree)
    except ValidationError as exc:
        where, _, msg = validation_line(exc, prefix="overrides").partition(": ")
        raise fail(where, msg) from None
    except ConfigError as exc:
        raise fail("overrides", str(exc)) from None


def _typename(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", type(None): "null"}.get(
        type(value), type(value).__name__
    )
