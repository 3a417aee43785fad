"""YAML with line numbers: every mapping key and list item remembers where it was written.

PyYAML's composer gives nodes with marks; we build plain Python values from them and keep a map
from each value's path (a tuple of keys and indices) to its 1-based line, so a validation error can
say `dev.yaml:12: ...`. Duplicate keys, which PyYAML silently merges, are reported instead.

Merge keys (`<<: *base`, or `<<: [*a, *b]`) work as in YAML 1.1: the merged mappings' keys come
first, keys written next to `<<` override them, and a merged value keeps the line of the anchor
where it was written. A syntax error names where the broken construct starts (an unclosed `[`)
and where the parser gave up, in one line.
"""

from __future__ import annotations

from typing import Any

import yaml

from aitherctl.errors import ConfigError

Path = tuple[str | int, ...]

MERGE_TAG = "tag:yaml.org,2002:merge"
# Aliases can make a small file expand into a huge document ("billion laughs"); no profile
# comes near this many values.
MAX_VALUES = 100_000


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


# libyaml's loader when PyYAML was built with it (about 5x faster: `ps` reads every profile to
# name the active one); a syntax error is described by the pure-Python loader, whose messages
# say where the broken construct starts.
_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str, source: str) -> Located:
    if _FAST_LOADER is not yaml.SafeLoader:
        try:
            return _parse_with(_FAST_LOADER, text, source)
        except ConfigError:
            pass  # described below, with the pure-Python loader's messages
    return _parse_with(yaml.SafeLoader, text, source)


def _parse_with(loader_class: type[yaml.SafeLoader], text: str, source: str) -> Located:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        lines: dict[Path, int] = {}
        data = _Builder(loader, source, lines).build(node, ()) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        line, message = describe_syntax_error(exc)
        raise ConfigError(message, source=source, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", source=source) from None
    finally:
        loader.dispose()
    return Located(data, lines, source)


_OPENERS = {
    "while parsing a flow sequence": "unclosed '['",
    "while parsing a flow mapping": "unclosed '{'",
    "while scanning a quoted scalar": "unclosed quote",
    "while parsing a block mapping": "the mapping that starts here is broken",
    "while parsing a block collection": "the list that starts here is broken",
    "while scanning a simple key": "a key without ':'",
}


def describe_syntax_error(exc: yaml.MarkedYAMLError) -> tuple[int | None, str]:
    """(line, message) for a YAML syntax error: the line where the broken construct starts
    (PyYAML's `context_mark`) and, in the message, the line where parsing stopped
    (`problem_mark`), e.g. `unclosed '[' (parsing stopped at line 9: expected ',' or ']')`."""
    context, problem = exc.context_mark, exc.problem_mark
    reason = (exc.problem or "invalid YAML").strip()
    if context is None or problem is None or not exc.context:
        mark = problem or context
        return (mark.line + 1 if mark else None), f"YAML syntax error: {reason}"
    opener = _OPENERS.get(exc.context.strip())
    if opener == "unclosed quote" and context.buffer is not None:
        quote = context.buffer[context.pointer : context.pointer + 1]
        opener = f"unclosed {quote}" if quote in ("'", '"') else opener
    if opener is None:
        opener = f"YAML syntax error {exc.context.strip()}"
    if problem.line == context.line:
        return context.line + 1, f"{opener} (column {problem.column + 1}: {reason})"
    return context.line + 1, f"{opener} (parsing stopped at line {problem.line + 1}: {reason})"


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, source: str, lines: dict[Path, int]) -> None:
        self.loader = loader
        self.source = source
        self.lines = lines
        self.count = 0
        self.open: set[int] = set()  # the nodes being built: an alias to one of them is a loop

    def fail(self, message: str, node: yaml.Node) -> ConfigError:
        return ConfigError(message, source=self.source, line=node.start_mark.line + 1)

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise self.fail(f"more than {MAX_VALUES} values (aliases nested too deep?)", node)
        self.lines.setdefault(path, node.start_mark.line + 1)
        if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            return self.loader.construct_object(node, deep=True)
        if id(node) in self.open:
            raise self.fail("an alias refers to a value that contains it", node)
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def _key(self, key_node: yaml.Node) -> str:
        key = self.loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise self.fail("mapping keys must be plain names", key_node)
        return key if isinstance(key, str) else str(key)

    def _merged(
        self, node: yaml.MappingNode, seen: tuple[int, ...]
    ) -> list[tuple[str, int, yaml.Node]]:
        """The (key, line, value node) that `<<` brings into `node`, earlier sources winning."""
        pairs: list[tuple[str, int, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != MERGE_TAG:
                continue
            sources = (
                value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            )
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise self.fail(
                        "`<<` merges a mapping (an alias like *base, or a list of them)", key_node
                    )
                if id(source) in seen:
                    raise self.fail("`<<` merges a mapping into itself", key_node)
                own = [
                    (self._key(k), k.start_mark.line + 1, v)
                    for k, v in source.value
                    if k.tag != MERGE_TAG
                ]
                for pair in [*own, *self._merged(source, (*seen, id(source)))]:
                    if all(pair[0] != key for key, _, _ in pairs):
                        pairs.append(pair)
        return pairs

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        explicit: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self._key(key_node)
            if key in explicit:
                raise self.fail(
                    f"duplicate key {key!r} (the earlier one is on line {explicit[key]})", key_node
                )
            explicit[key] = key_node.start_mark.line + 1
        for key, line, value_node in self._merged(node, (id(node),)):
            if key not in explicit:
                self.lines[(*path, key)] = line
                result[key] = self.build(value_node, (*path, key))
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self._key(key_node)
            self.lines[(*path, key)] = explicit[key]
            result[key] = self.build(value_node, (*path, key))
        return result
