"""YAML that a user wrote (a sweep spec, a run config, a ``--set`` value), read as plain data.

``yaml.safe_load`` constructs no code, but a hostile-but-fair document still reaches a traceback
or exhausts the machine: nesting ``[[[[...]]]]`` 100,000 deep overflows the recursive composer; an
alias bomb ("billion laughs": nine levels of anchors that each repeat the one before ten times)
is a few hundred bytes that every consumer walking it (flattening, validation, JSON) expands to
10^9 values; ``? [a, b]`` makes an unhashable mapping key. :class:`LimitedLoader` therefore checks
while it composes, before anything is built: the nesting depth (also as aliases expand it), the
size the document has once every alias is expanded, and that an alias never names the collection
that holds it. A spec or a config is a few levels and a few hundred values, far below the limits.

It also keeps what the sweep specs rely on: duplicate keys are refused (a silently shadowed axis
is a lost run), mapping keys are names (text), YAML tags are refused (plain data only) and YAML 1.2
floats such as ``1e-4`` are floats (PyYAML's YAML 1.1 reads them as text).
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

from ituning.errors import ConfigError, printable

MAX_DEPTH = 32  # nested mappings and lists; a spec or a run config has three or four
MAX_NODES = 100_000  # values once every alias is expanded; a spec or a run config has hundreds
MAX_INT_BITS = 128  # seeds, the largest integers a spec or config holds, have 63


class LimitedLoader(yaml.SafeLoader):
    """A SafeLoader with the limits and rules of the module docstring."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._values = 0  # composed so far, each alias counted as the values it repeats
        # id(node) -> (values, depth) of a composed node with its aliases expanded; a collection
        # is entered here once complete, so an alias to one that is not here is recursive.
        self._expanded: dict[int, tuple[int, int]] = {}

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._expanded:
                raise ConstructorError(
                    None,
                    None,
                    f"alias *{event.anchor} names the collection that holds it (a structure "
                    "that contains itself is not plain data)",
                    event.start_mark,
                )
            self._count(self._expanded[id(node)][0], event)
            return node
        self._count(1, event)
        nests = isinstance(event, yaml.CollectionStartEvent)
        self._depth += nests
        if self._depth > MAX_DEPTH:  # checked before the recursive composer goes one level down
            raise ConstructorError(None, None, _too_deep(), event.start_mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= nests
        self._expanded[id(node)] = self._measure(node)
        return node

    def _count(self, values: int, event: yaml.Event) -> None:
        """Checked as the document is composed, so that a long one fails at the limit."""
        self._values += values
        if self._values > MAX_NODES:
            raise ConstructorError(
                None,
                None,
                f"more than {MAX_NODES:,} values once its aliases are expanded (an alias bomb?); "
                "a spec or config has a few hundred",
                event.start_mark,
            )

    def _measure(self, node: Node) -> tuple[int, int]:
        if isinstance(node, SequenceNode):
            children = node.value
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            return 1, 0
        sizes = [self._expanded[id(child)] for child in children]
        depth = 1 + max((d for _, d in sizes), default=0)
        if depth > MAX_DEPTH:  # through aliases: each repeats a nested collection one level down
            raise ConstructorError(None, None, _too_deep(), node.start_mark)
        return 1 + sum(size for size, _ in sizes), depth


def _too_deep() -> str:
    return f"nested deeper than {MAX_DEPTH} levels; a spec or config has three or four"


def _construct_mapping(loader: LimitedLoader, node: MappingNode, deep: bool = False) -> dict:
    seen: set[str] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, str):
            raise ConstructorError(
                None,
                None,
                f"a mapping key must be text, got {_shown_key(key)} (quote it if it is a name)",
                key_node.start_mark,
            )
        if key in seen:
            raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


def _construct_int(loader: LimitedLoader, node: yaml.ScalarNode) -> int:
    """An int of at most :data:`MAX_INT_BITS` bits: messages quote values, and Python refuses to
    print (or parse, in decimal) an int of more than 4300 digits."""
    try:
        value = loader.construct_yaml_int(node)
    except ValueError:
        value = None
    if value is None or value.bit_length() > MAX_INT_BITS:
        raise ConstructorError(
            None,
            None,
            f"an integer of {len(node.value):,} digits; no setting is near {MAX_INT_BITS} bits",
            node.start_mark,
        )
    return value


def _shown_key(key: Any) -> str:
    kind = {list: "a list", dict: "a mapping", type(None): "null"}.get(type(key))
    return kind or f"{key!r} ({type(key).__name__})"


LimitedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
LimitedLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
# YAML 1.2 floats: PyYAML (YAML 1.1) reads ``1e-4`` and ``1.0e30`` as strings.
LimitedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str, source: str, what: str = "spec") -> Any:
    """``text`` as plain data, or a one-line :class:`ConfigError` ``source: line N: problem``;
    ``what`` names the kind of document in the message about tags ("a spec is plain data")."""
    try:
        return yaml.load(text, Loader=LimitedLoader)  # noqa: S506 - a SafeLoader subclass
    except ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        problem = exc.problem or ""
        if "constructor for the tag" in problem:
            tag = problem.split("tag", 1)[1].strip().strip("'").replace("tag:yaml.org,2002:", "!!")
            raise ConfigError(
                printable(
                    f"{source}: line {line}: YAML tag {tag} is not allowed; a {what} is plain "
                    "data (mappings, lists, numbers, strings)"
                )
            ) from None
        raise ConfigError(printable(f"{source}: line {line}: {problem}")) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(printable(f"{source}: {where}not valid YAML ({problem})")) from None
