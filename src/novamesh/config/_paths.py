"""Field paths such as ``spec.http[0].route[1].weight`` and the YAML line each path came from.

A path is built the way Istio prints one: mapping keys joined with ``.``, list indices as
``[i]``. Keys of free-form maps (header names, labels) are joined the same way, so a header
match reads ``spec.http[0].match[0].headers.end-user.exact``.

:func:`map_lines` walks a composed YAML node tree (PyYAML's ``compose`` API keeps a position
on every node) and records the 1-based line of every path, so a violation found later, on the
plain Python data, can still point at the line the user wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import yaml

__all__ = [
    "Problem",
    "join",
    "format_loc",
    "parent",
    "LineMap",
    "map_lines",
    "MAX_NODES",
    "MAX_DEPTH",
    "yaml_error_problem",
]

MAX_NODES = 100_000
"""Most YAML nodes one document may expand to (aliases included); guards against alias bombs."""

MAX_DEPTH = 64
"""Deepest nesting accepted; Istio config needs about 10, and a recursive alias never ends."""


class Problem(NamedTuple):
    """One problem inside a document, before it is placed in a file (see ``Violation``)."""

    path: str
    message: str
    hint: str = ""
    line: int | None = None
    """Set when the line is not the line of ``path`` (e.g. the second of two duplicate keys)."""


def join(path: str, part: str | int) -> str:
    """``path`` extended by a mapping key (``.key``) or a list index (``[i]``)."""
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def format_loc(loc: Sequence[str | int], prefix: str = "") -> str:
    """A pydantic error location as a field path under ``prefix``."""
    path = prefix
    for part in loc:
        path = join(path, part)
    return path


def parent(path: str) -> str | None:
    """The path one level up (``a.b[2]`` -> ``a.b`` -> ``a`` -> ``""``), None above the root."""
    if not path:
        return None
    if path.endswith("]"):
        return path[: path.rindex("[")]
    dot = path.rfind(".")
    return path[:dot] if dot >= 0 else ""


@dataclass
class LineMap:
    """Line numbers of one document's field paths, plus structural problems met on the way."""

    lines: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    too_large: bool = False

    def line(self, path: str) -> int | None:
        """Line of ``path``, or of its nearest ancestor that appears in the document."""
        current: str | None = path
        while current is not None:
            found = self.lines.get(current)
            if found is not None:
                return found
            current = parent(current)
        return None


def map_lines(root: yaml.Node, prefix: str = "", max_nodes: int = MAX_NODES) -> LineMap:
    """Record the line of every key and list item under ``root``; flag duplicate keys.

    Iterative (no recursion limit) and bounded by ``max_nodes`` and :data:`MAX_DEPTH`, so
    recursive or exponentially repeated aliases stop the walk instead of hanging it;
    ``too_large`` is then set and the document should not be read further.
    """
    result = LineMap()
    result.lines[prefix] = root.start_mark.line + 1
    stack: list[tuple[yaml.Node, str, int]] = [(root, prefix, 0)]
    visited = 0
    while stack:
        node, path, depth = stack.pop()
        visited += 1
        if visited > max_nodes or depth > MAX_DEPTH:
            result.too_large = True
            what = (
                f"more than {max_nodes} YAML nodes"
                if visited > max_nodes
                else (f"more than {MAX_DEPTH} levels of nesting")
            )
            result.problems.append(
                Problem(
                    prefix,
                    f"document expands to {what}",
                    "split the document, or remove recursive/repeated YAML aliases (*name)",
                )
            )
            return result
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                    continue  # complex keys fail later in construction; merges keep parent line
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                child = join(path, key)
                if key in seen:
                    result.problems.append(
                        Problem(
                            child,
                            f"duplicate key '{key}' (first on line {seen[key]}); "
                            "YAML would silently keep only the last one",
                            f"remove one of the two '{key}' entries",
                            line,
                        )
                    )
                    continue
                seen[key] = line
                result.lines[child] = line
                stack.append((value_node, child, depth + 1))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = join(path, index)
                result.lines[child] = item.start_mark.line + 1
                stack.append((item, child, depth + 1))
    return result


def yaml_error_problem(exc: yaml.YAMLError, content: str) -> Problem:
    """The problem in ``content`` PyYAML could not parse, at the line and column it stopped."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        line, column = mark.line + 1, mark.column + 1
    else:  # ReaderError: a character YAML does not allow; it knows only the offset
        position = int(getattr(exc, "position", 0))
        line = content.count("\n", 0, position) + 1
        column = position - content.rfind("\n", 0, position)
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark.line + 1 != line:
        context = f"{context} (line {context_mark.line + 1})"
    detail = f"{context}, {problem}" if context else str(problem)
    text = str(problem)
    if "\\t" in text:
        hint = "indent with spaces, not tabs"
    elif "mapping values are not allowed" in text:
        hint = "check the indentation, and quote values that contain ': '"
    elif "expected ':'" in text or "expected <block end>" in text:
        hint = "check the indentation of this line and the one above; every key needs a ':'"
    elif "special characters" in text:
        hint = "remove the control character (or write it escaped inside a quoted string)"
    else:
        hint = "fix the YAML syntax near this line (indentation, quotes, brackets)"
    return Problem("", f"malformed YAML: {detail} (line {line}, column {column})", hint, line)
