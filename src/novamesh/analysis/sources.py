"""Turn files and live state into a :class:`Context`.

Unlike ``apply``, reading never aborts on bad config: every schema problem becomes an IST0106
message and the documents that do validate are still analyzed. Only unreadable paths raise
(:class:`~novamesh.errors.ConfigError` from :func:`~novamesh.config.loader.read_paths`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from ..config._paths import LineMap, map_lines
from ..config.loader import parse_documents, parse_manifest, read_paths
from ..config.resource import Resource, ResourceKey, Source
from ..config.validate import check_duplicates
from ..errors import ConfigError, Violation
from ..registry.registry import Workload
from .context import Context
from .messages import Message

__all__ = ["build_context", "live_resources", "load_paths", "load_texts", "violation_message"]

SCHEMA_CODE = "IST0106"


def violation_message(v: Violation) -> Message:
    """A loader :class:`Violation` as an IST0106 message (its path goes into the text)."""
    text = f"{v.message} (field {v.path})" if v.path else v.message
    return Message(SCHEMA_CODE, text, kind=v.kind, namespace=v.namespace, name=v.name,
                   file=v.file, line=v.line, path=v.path, hint=v.hint)


def _documents(text: str) -> list[tuple[int, yaml.Node]]:
    """(index, node) of each YAML document; YAMLError when the text is not YAML."""
    return list(enumerate(yaml.compose_all(text, Loader=yaml.SafeLoader)))


def _parse_each(text: str, file: str, namespace: str) -> tuple[list[Resource], list[Violation]] | None:
    """Parse the documents of ``text`` one at a time, keeping line numbers; None if the text
    is not YAML at all (the caller then reports the whole file's errors)."""
    try:
        docs = _documents(text)
    except yaml.YAMLError:
        return None
    resources: list[Resource] = []
    violations: list[Violation] = []
    for index, node in docs:
        start, end = node.start_mark, node.end_mark
        # Pad with the lines and columns before the document so every line number stays true.
        sub = "\n" * start.line + " " * start.column + text[start.index:end.index]
        try:
            found = parse_documents(sub, file=file, default_namespace=namespace)
        except ConfigError as exc:
            violations += [dataclasses.replace(v, document=index) for v in exc.violations]
            continue
        resources += [
            dataclasses.replace(r, source=dataclasses.replace(r.source, document=index)) for r in found
        ]
    return resources, violations


def _line_maps(text: str, file: str) -> dict[tuple[str, int], LineMap]:
    try:
        return {(file, i): map_lines(node) for i, node in _documents(text)}
    except (yaml.YAMLError, RecursionError):
        return {}


def load_texts(texts: Iterable[tuple[str, str]], namespace: str = "default") -> tuple[list[Resource], list[Message], dict[tuple[str, int], LineMap]]:
    """Resources, IST0106 messages and line maps of ``(file name, text)`` pairs.

    A resource defined twice keeps its first definition; the second is an IST0106 message.
    """
    resources: list[Resource] = []
    messages: list[Message] = []
    lines: dict[tuple[str, int], LineMap] = {}
    for file, text in texts:
        try:
            resources += parse_documents(text, file=file, default_namespace=namespace)
        except ConfigError as exc:
            split = None if file.lower().endswith(".json") else _parse_each(text, file, namespace)
            if split is None:
                messages += [violation_message(v) for v in exc.violations]
            else:
                resources += split[0]
                messages += [violation_message(v) for v in split[1]]
        lines.update(_line_maps(text, file))
    duplicates = check_duplicates(resources)
    messages += [violation_message(v) for v in duplicates]
    unique: dict[ResourceKey, Resource] = {}
    for r in resources:
        unique.setdefault(r.key, r)
    return list(unique.values()), messages, lines


def load_paths(paths: Sequence[str], namespace: str = "default") -> tuple[list[Resource], list[Message], dict[tuple[str, int], LineMap]]:
    """:func:`load_texts` of files and directories (``-`` is stdin); raises ConfigError for
    paths that cannot be read."""
    return load_texts(read_paths(paths), namespace)


def live_resources(manifests: Iterable[Mapping[str, Any]]) -> tuple[list[Resource], list[Message]]:
    """Resources of the manifests the control plane serves (GET /api/v1/resources)."""
    resources: list[Resource] = []
    messages: list[Message] = []
    for manifest in manifests:
        try:
            resources.append(parse_manifest(dict(manifest), source=Source()))
        except ConfigError as exc:
            messages += [violation_message(v) for v in exc.violations]
    return resources, messages


def build_context(
    *,
    files: tuple[list[Resource], list[Message], dict[tuple[str, int], LineMap]] | None = None,
    live: tuple[list[Resource], list[Message]] | None = None,
    workloads: Iterable[Mapping[str, Any]] | None = None,
    domain_suffix: str = "cluster.local",
) -> Context:
    """The context of live state with ``files`` laid over it "as if applied" (a file's
    resource replaces the live one with the same kind, namespace and name)."""
    resources: dict[ResourceKey, Resource] = {}
    messages: list[Message] = []
    lines: dict[tuple[str, int], LineMap] = {}
    if live is not None:
        resources.update((r.key, r) for r in live[0])
        messages += live[1]
    if files is not None:
        resources.update((r.key, r) for r in files[0])
        messages += files[1]
        lines.update(files[2])
    wl = [Workload.from_dict(dict(w)) for w in workloads] if workloads is not None else None
    return Context(resources, wl, domain_suffix, tuple(messages), lines)
