"""YAML -> `MonitorConfig`: the one place that reads a config file.

`load_config(path)` composes the YAML node tree (so every value keeps its line)
and builds the frozen dataclasses of `config.py` from their type hints; a wrong
key, type or value, or a rule broken in a dataclass's `problems()`, is a
`ConfigError` naming the file, the field path and its line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Literal

import yaml

from .config import MonitorConfig, did_you_mean


class ConfigError(ValueError):
    """A config that cannot be used: `file`, dotted field `path`, 1-based `line` (None: the whole file)."""

    def __init__(self, file: str, path: str, line: int | None, message: str):
        self.file, self.path, self.line, self.message = file, path, line, message
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {path or '<top>'}: {message}")


def load_config(path: str | Path) -> MonitorConfig:
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(file, "", None, f"cannot read: {e.strerror}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(file, "", line, f"not a YAML text file: byte 0x{data[e.start]:02x} at offset {e.start} "
                                          "is not UTF-8") from None
    try:
        root = yaml.compose(text)
    except yaml.reader.ReaderError as e:  # a control character such as NUL: binary data that happens to be UTF-8
        line = text.count("\n", 0, e.position) + 1
        raise ConfigError(file, "", line, f"not a YAML text file: character U+{e.character:04X} "
                                          f"at offset {e.position} is not allowed in YAML") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ConfigError(file, "", line, f"invalid YAML: {getattr(e, 'problem', e)}") from e
    if root is None:
        raise ConfigError(file, "", 1, "the file is empty; it needs at least a 'labels:' section")
    return _Builder(file).build(MonitorConfig, root, "")


_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}


class _Builder:
    """Turns composed YAML nodes into dataclasses, remembering where each value was."""

    def __init__(self, file: str):
        self.file = file
        self.scalars = yaml.SafeLoader("")

    def error(self, path: str, node: yaml.Node, message: str) -> ConfigError:
        return ConfigError(self.file, path, node.start_mark.line + 1, message)

    def build(self, cls: type, node: yaml.Node, path: str):
        if _is_null(node):
            node = yaml.MappingNode("tag:yaml.org,2002:map", [], node.start_mark, node.end_mark)
        if not isinstance(node, yaml.MappingNode):
            raise self.error(path, node, "must be a mapping of settings")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        values, nodes = {}, {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            sub = f"{path}.{key}" if path else key
            if key not in fields:
                raise self.error(sub, key_node, f"unknown setting{did_you_mean(key, fields)}; allowed: {', '.join(fields)}")
            if key in values:
                raise self.error(sub, key_node, "given twice")
            values[key] = self.convert(hints[key], value_node, sub)
            nodes[key] = value_node
        for name, f in fields.items():
            if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise self.error(f"{path}.{name}" if path else name, node, "required setting is missing")
        obj = cls(**values)
        for name, message in getattr(obj, "problems", lambda: ())():
            raise self.error(f"{path}.{name}" if path else name, self.locate(name, nodes, node), message)
        return obj

    def locate(self, dotted: str, nodes: dict, fallback: yaml.Node) -> yaml.Node:
        """The node of a (possibly nested, e.g. 'labels[1].require') field for error lines."""
        head, _, rest = dotted.partition(".")
        name, _, index = head.partition("[")
        node = nodes.get(name, fallback)
        if index and isinstance(node, yaml.SequenceNode):
            node = node.value[int(index.rstrip("]"))]
        if rest and isinstance(node, yaml.MappingNode):
            inner = {str(k.value): v for k, v in node.value}
            return self.locate(rest, inner, node)
        return node

    def convert(self, hint, node: yaml.Node, path: str):
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            if _is_null(node) and type(None) in args:
                return None
            # str accepts any scalar's text, so it is tried last (device: 3 stays an int)
            options = sorted((a for a in args if a is not type(None)), key=lambda a: a is str)
            errors = []
            for option in options:
                try:
                    return self.convert(option, node, path)
                except ConfigError as e:
                    errors.append(e)
            if len(options) == 1:
                raise errors[0]
            raise self.error(path, node, "must be " + " or ".join(_describe(o) for o in options))
        if origin is Literal:
            value = self.scalar(node, path)
            if value not in args:
                raise self.error(path, node, f"{value!r} is not allowed; choose one of: {', '.join(map(str, args))}")
            return value
        if origin is tuple:
            if isinstance(node, yaml.ScalarNode) and not _is_null(node):
                node = yaml.SequenceNode("tag:yaml.org,2002:seq", [node], node.start_mark, node.end_mark)
            if not isinstance(node, yaml.SequenceNode):
                raise self.error(path, node, "must be a list")
            return tuple(self.convert(args[0], item, f"{path}[{i}]") for i, item in enumerate(node.value))
        if dataclasses.is_dataclass(hint):
            return self.build(hint, node, path)
        return self.primitive(hint, node, path)

    def primitive(self, hint: type, node: yaml.Node, path: str):
        value = self.scalar(node, path)
        if hint is str and node.tag != "tag:yaml.org,2002:null":
            return str(node.value)  # the text as written (e.g. "0123" or "22:00")
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        raise self.error(path, node, f"must be {_describe(hint)}, got {node.value!r}")

    def scalar(self, node: yaml.Node, path: str):
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(path, node, "must be a single value, not a list or mapping")
        return self.scalars.construct_object(node)


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _describe(hint) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return _TYPE_NAMES.get(hint, getattr(hint, "__name__", str(hint)))
