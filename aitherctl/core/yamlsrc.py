"""YAML with line numbers: every mapping key and list item remembers where it was written.

PyYAML's composer gives nodes with marks; we build plain Python values from them and keep a map
from each value's path (a tuple of keys and indices) to its 1-based line, so a validation error can
say `dev.yaml:12: ...`. Duplicate keys, which PyYAML silently merges, are reported instead.
"""

from __future__ import annotations

from typing import Any

import yaml

from aitherctl.errors import ConfigError

Path = tuple[str | int, ...]


class Located:
    """Parsed YAML data plus the line of every path in it."""

    def __init__(self, data: Any, lines: dict[Path, int], source: str) -> None:
        self.data = data
        self.lines = lines
        self.source = source

    def line(self, path: Path) -> int | None:
        """The line of `path`, or of its nearest parent that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def error(self, message: str, path: Path) -> ConfigError:
        return ConfigError(message, source=self.source, line=self.line(path))


def parse_yaml(text: str, source: str) -> Located:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Path, int] = {}
        data = _build(loader, node, (), lines, source) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"YAML syntax error: {problem}", source=source, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", source=source) from None
    finally:
        loader.dispose()
    return Located(data, lines, source)


def _build(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path, lines: dict[Path, int], source: str
) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise ConfigError(
                    "mapping keys must be plain names",
                    source=source,
                    line=key_node.start_mark.line + 1,
                )
            key = str(key) if not isinstance(key, str) else key
            if key in result:
                raise ConfigError(
                    f"duplicate key {key!r} (the earlier one is on line {lines[(*path, key)]})",
                    source=source,
                    line=key_node.start_mark.line + 1,
                )
            lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _build(loader, value_node, (*path, key), lines, source)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, (*path, index), lines, source)
            for index, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)
