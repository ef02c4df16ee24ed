"""Sweep specs: the declarative YAML files under ``sweeps/`` and their grid of points.

A spec names *what* to vary in the paper's own terms; a profile (``bench.sweep.profiles``) later says
*with what* (backbones, data, budget). The same spec therefore runs under ``mini`` and ``paper``.

Format (every key but ``name`` and ``axes`` is optional)::

    name: table1                      # letters, digits, '-', '_', '.'; its runs get tag spec.<name>
    description: Table 1 rows ...     # free text, shown by --dry-run; an MLflow experiment tag
    base:                             # the point every grid point starts from
      lm: base                        # LM size: base | medium | large
      lambda: 1.0                     # lambda of eq. (5), >= 1 (see overrides below)
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
``itune.drop_first``, ``vlp``, ``seed``, ...) and profile-owned ones (``backbones.*``, ``data.*``)
cannot be overridden: each has exactly one place where it is set. Overrides are checked against
:class:`TrainConfig` when the spec is loaded, before anything runs; the method's own rules (e.g.
λ >= 1) are checked by the library's config when the profile resolves each point.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.sweep import axes
from ituning.errors import ConfigError, validation_line
from ituning.files import read_text

TOP_KEYS = ("name", "description", "base", "axes", "exclude", "extra", "overrides")
_PROFILE_OWNED = ("backbones", "data")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
        parts = (
            axes.AXES[name].label(value) for name, value in self.values if seed or name != "seed"
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
        out: list[Point] = []
        for point in self._product(self.base, set()):
            if any(all(point[k] == v for k, v in ex.items()) for ex in self.exclude):
                continue
            out.append(point)
        for partial in self.extra:
            out.extend(self._product(self.base.replace(partial), set(partial)))
        return list(dict.fromkeys(out))

    def _product(self, start: Point, fixed: set[str]) -> Iterator[Point]:
        names = [a for a in axes.AXES if a in self.axes and a not in fixed]
        for combo in itertools.product(*(self.axes[a] for a in names)):
            yield start.replace(dict(zip(names, combo, strict=True)))

    def with_seeds(self, n: int) -> SweepSpec:
        """The same spec with its seed axis replaced by seeds ``0 .. n-1`` (``--seeds N``)."""
        if n < 1:
            raise ConfigError(f"--seeds must be >= 1, got {n}")
        grid = {**self.axes, "seed": tuple(range(n))}
        extra = tuple({k: v for k, v in p.items() if k != "seed"} for p in self.extra)
        return dataclasses.replace(self, axes=grid, extra=extra)


# --------------------------------------------------------------------------- loading


def load_spec(path: Path | str) -> SweepSpec:
    """Read and validate a spec file; any problem is a ConfigError naming file and field."""
    path = Path(path)
    text = read_text(path, "sweep spec")
    return parse_spec(text, source=str(path))


def parse_spec(text: str, *, source: str = "spec") -> SweepSpec:
    raw = _safe_load(text, source)
    return validate_spec(raw, source=source)


def validate_spec(raw: Any, *, source: str = "spec") -> SweepSpec:
    def fail(where: str, msg: str) -> ConfigError:
        return ConfigError(f"{source}: {where}: {msg}")

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with keys {', '.join(TOP_KEYS)}")
    _no_unknown(raw, TOP_KEYS, "", fail)
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise fail(
            "name",
            f"expected a name of letters, digits, '-', '_', '.' (got {name!r})",
        )
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise fail("description", f"expected text, got {_typename(description)}")

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
    if not spec.points():
        raise fail("exclude", "the exclusions remove every point of the grid")
    return spec


def find_spec(name_or_path: str, search_dir: Path) -> Path:
    """``table1`` -> ``<search_dir>/table1.yaml``; an existing path is returned unchanged."""
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".yaml", ".yml") or "/" in name_or_path:
        return path
    candidate = search_dir / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in search_dir.glob("*.yaml"))
    raise ConfigError(
        f"{name_or_path}: no such sweep spec (give a YAML path or one of: {', '.join(known)})"
    )


# --------------------------------------------------------------------------- helpers


class _SpecLoader(yaml.SafeLoader):
    """safe_load that also refuses duplicate keys (a silently shadowed axis is a lost run)."""


def _construct_mapping(loader: _SpecLoader, node: yaml.MappingNode, deep: bool = False):
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# YAML 1.2 floats: PyYAML (YAML 1.1) reads ``1e-4`` and ``1.0e30`` as strings.
_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _safe_load(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.constructor.ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        problem = exc.problem or ""
        if "constructor for the tag" in problem:
            tag = problem.split("tag", 1)[1].strip().strip("'").replace("tag:yaml.org,2002:", "!!")
            raise ConfigError(
                f"{source}: line {line}: YAML tag {tag} is not allowed; a spec is plain data "
                "(mappings, lists, numbers, strings)"
            ) from None
        raise ConfigError(f"{source}: line {line}: {problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: {where}not valid YAML ({problem})") from None


def _no_unknown(raw: Mapping, allowed: Iterable[str], where: str, fail) -> None:
    for key in raw:
        if key not in allowed:
            at = f"{where}.{key}" if where else str(key)
            raise fail(at, f"unknown key (allowed: {', '.join(allowed)})")


def _list(raw: Mapping, key: str, fail) -> list:
    value = raw.get(key, []) or []
    if not isinstance(value, list):
        raise fail(key, f"expected a list of points, got {_typename(value)}")
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
    from pydantic import BaseModel

    node: Any = model
    for i, part in enumerate(dotted.split(".")):
        fields = getattr(node, "model_fields", None)
        if fields is None or part not in fields:
            allowed = ", ".join(k for k in (fields or {}) if k not in _PROFILE_OWNED)
            where = ".".join(dotted.split(".")[: i + 1])
            raise fail(f"overrides.{where}", f"unknown setting (allowed here: {allowed})")
        annotation = fields[part].annotation
        node = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )


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
