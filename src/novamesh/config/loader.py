"""Read Istio YAML into validated :class:`Resource` objects, reporting every problem at once.

Entry points and what they raise:

- :func:`read_paths` reads files, directories and stdin; raises :class:`ConfigError` naming
  every path that is missing or unreadable.
- :func:`parse_documents` parses a multi-document YAML text; raises :class:`ConfigError`
  carrying every violation of every document (malformed YAML, envelope, schema, semantics).
- :func:`parse_manifest` validates one already-parsed document (the REST API's entry point);
  raises :class:`ConfigError`.
- :func:`dump_manifest` renders a manifest back to YAML; raises nothing for a manifest we made.

Each violation carries the file, the document's 0-based index, the 1-based line of the
offending field (PyYAML's compose API keeps a position on every node), the field path as Istio
prints it, and a hint. Semantic checks need typed values, so on a document with schema errors
they run on the document with the offending fields cut out. Cross-document checks live in
:mod:`novamesh.config.validate`; this module does not call them.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import ConfigError, Violation
from ._envelope import (
    IGNORED_TOP_LEVEL,
    METADATA,
    NOT_YET_SUPPORTED_KINDS,
    TOP_LEVEL,
    check_api_version,
    check_kind,
    check_metadata,
    unknown_field,
)
from ._paths import LineMap, Problem, join, map_lines, parent, yaml_error_problem
from ._schema import describe, prune_invalid, schema_problems
from ._semantic import check_spec
from .resource import Resource, Source
from .types import Spec

__all__ = [
    "read_paths",
    "parse_documents",
    "parse_manifest",
    "dump_manifest",
    "CONFIG_SUFFIXES",
    "NOT_YET_SUPPORTED_KINDS",
]

CONFIG_SUFFIXES: tuple[str, ...] = (".yaml", ".yml", ".json")
"""File name endings read from a directory."""

SCHEMA_CODE = "IST0106"
"""Istio's SchemaValidationError: the code of every violation found in a single document."""

LineOf = Callable[[str], int | None]
"""Maps a field path to its 1-based line, or None when unknown."""


def read_paths(paths: Sequence[str | Path]) -> list[tuple[str, str]]:
    """(file name, text) for each path, in order.

    A directory contributes its ``*.yaml``, ``*.yml`` and ``*.json`` files, recursively, sorted
    by path; ``-`` reads stdin (named ``<stdin>``). Raises :class:`ConfigError` with one
    violation per path that is missing, unreadable, not UTF-8, or a directory with no config.
    """
    found: list[tuple[str, str]] = []
    violations: list[Violation] = []
    for given in paths:
        if str(given) == "-":
            found.append(("<stdin>", sys.stdin.read()))
            continue
        path = Path(given)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CONFIG_SUFFIXES
            )
            if not files:
                violations.append(
                    Violation(
                        f"directory has no {', '.join(CONFIG_SUFFIXES)} files",
                        file=str(path),
                        hint="point at the directory holding your config, or name the files",
                    )
                )
        elif path.exists():
            files = [path]
        else:
            violations.append(
                Violation(
                    "no such file or directory",
                    file=str(path),
                    hint="check the path (relative paths start from the current directory)",
                )
            )
            continue
        for file in files:
            try:
                found.append((str(file), file.read_text(encoding="utf-8")))
            except UnicodeDecodeError as exc:
                violations.append(
                    Violation(
                        f"file is not UTF-8 text (byte {exc.start})",
                        file=str(file),
                        hint="save the file as UTF-8",
                    )
                )
            except OSError as exc:
                violations.append(
                    Violation(
                        f"cannot read file: {exc.strerror or exc}",
                        file=str(file),
                        hint="check the file's permissions",
                    )
                )
    if violations:
        raise ConfigError(violations, summary="cannot read config")
    return found


def parse_documents(
    content: str, file: str = "", default_namespace: str = "default"
) -> list[Resource]:
    """Parse and validate every document of a multi-document YAML text.

    Empty documents are skipped; a ``kind: List`` document contributes its ``items``.
    ``document`` in violations and sources is the 0-based index of the YAML document in the
    text, counting empty ones. Raises :class:`ConfigError` with every violation found.
    """
    if file.lower().endswith(".json"):
        # JSON allows tab indentation, YAML does not; a raw tab cannot occur inside a JSON
        # string, so replacing tabs keeps the meaning and every line number.
        content = content.replace("\t", " ")
    resources: list[Resource] = []
    violations: list[Violation] = []
    index = -1
    try:
        for index, node in enumerate(yaml.compose_all(content, Loader=yaml.SafeLoader)):
            found, problems = _document(node, file, index, default_namespace)
            resources += found
            violations += problems
    except yaml.YAMLError as exc:
        problem = yaml_error_problem(exc, content)
        violations.append(
            Violation(
                problem.message,
                file=file,
                document=index + 1,
                line=problem.line,
                hint=problem.hint,
                code=SCHEMA_CODE,
            )
        )
    except RecursionError:
        violations.append(
            Violation(
                "YAML is nested too deeply to read",
                file=file,
                document=index + 1,
                hint="flatten the document; config never needs hundreds of nesting levels",
            )
        )
    if violations:
        # Reading order: by document, then by line (schema and semantic checks interleave).
        violations.sort(key=lambda v: (v.document if v.document is not None else -1, v.line or 0))
        raise ConfigError(violations)
    return resources


def parse_manifest(
    manifest: dict[str, Any],
    *,
    source: Source = Source(),  # noqa: B008 - Source is frozen, so sharing it is safe
    default_namespace: str = "default",
    line_of: LineOf | None = None,
) -> Resource:
    """Validate one already-parsed document (REST API bodies, and each YAML document).

    ``line_of`` maps a field path (``spec.hosts[0]``) to its line, when the caller knows it;
    a path it does not know falls back to its nearest ancestor, then to ``source.line``.
    Raises :class:`ConfigError` with every violation of the document.
    """
    resource, violations = _check_manifest(manifest, source, default_namespace, line_of)
    if violations or resource is None:
        raise ConfigError(violations)
    return resource


def dump_manifest(resource_or_manifest: Resource | dict[str, Any]) -> str:
    """YAML text of a manifest: block style, apiVersion/kind/metadata/spec first, no anchors."""
    if isinstance(resource_or_manifest, Resource):
        manifest = resource_or_manifest.manifest
    else:
        manifest = resource_or_manifest
    ordered = _ordered(manifest, TOP_LEVEL)
    if isinstance(ordered.get("metadata"), dict):
        ordered["metadata"] = _ordered(ordered["metadata"], METADATA)
    return yaml.dump(
        ordered, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes repeated objects out in full instead of as &anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _ordered(mapping: dict[str, Any], first: Sequence[str]) -> dict[str, Any]:
    head = {k: mapping[k] for k in first if k in mapping}
    return head | {k: v for k, v in mapping.items() if k not in head}


def _document(
    node: yaml.Node, file: str, index: int, default_namespace: str
) -> tuple[list[Resource], list[Violation]]:
    """Resources and violations of one composed YAML document."""
    doc_line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return [], []  # empty document: a trailing '---' or only comments
    lines = map_lines(node)
    base = Source(file, index, doc_line)
    if lines.too_large:
        return [], _violations(lines.problems, base, lines.line, {})
    try:
        data = yaml.SafeLoader("").construct_document(node)
    except Exception as exc:  # noqa: BLE001 - PyYAML's constructors raise assorted errors
        # (ValueError for 2023-02-30, AttributeError for an empty `!!timestamp`); all of them
        # mean "this value cannot be read", which is a user error, not a crash.
        mark = getattr(exc, "problem_mark", None)
        return [], [
            Violation(
                f"cannot read YAML value: {getattr(exc, 'problem', None) or exc}",
                file=file,
                document=index,
                line=mark.line + 1 if mark is not None else doc_line,
                hint="quote the value so YAML reads it as a string",
                code=SCHEMA_CODE,
            )
        ]
    ident = _ident(data, default_namespace)
    violations = _violations(lines.problems, base, lines.line, ident)
    if isinstance(data, dict) and data.get("kind") == "List" and "spec" not in data:
        found, problems = _list_items(data, base, lines, default_namespace)
        return found, violations + problems
    resource, problems = _check_manifest(data, base, default_namespace, lines.line)
    return ([resource] if resource is not None else []), violations + problems


def _ident(data: Any, default_namespace: str) -> dict[str, Any]:
    """kind/metadata of a raw document, for labelling violations found before validation."""
    if not isinstance(data, dict):
        return {}
    metadata = data.get("metadata")
    meta = metadata if isinstance(metadata, dict) else {}
    namespace = meta.get("namespace") or default_namespace
    return {
        "kind": data.get("kind"),
        "metadata": {"name": meta.get("name"), "namespace": namespace},
    }


def _list_items(
    data: dict[str, Any], base: Source, lines: LineMap, default_namespace: str
) -> tuple[list[Resource], list[Violation]]:
    """Resources of a ``kind: List`` document, each validated as its own manifest."""
    items = data.get("items")
    if not isinstance(items, list):
        return [], [
            Violation(
                f"a List needs 'items' to be a list, got {describe(items)}",
                path="items",
                kind="List",
                file=base.file,
                document=base.document,
                line=lines.line("items") or base.line,
                hint="put the resources under `items:` as a YAML list",
                code=SCHEMA_CODE,
            )
        ]
    resources: list[Resource] = []
    violations: list[Violation] = []
    for i, item in enumerate(items):
        prefix = join("items", i)
        source = Source(base.file, base.document, lines.line(prefix) or base.line)

        def line_of(path: str, prefix: str = prefix) -> int | None:
            return lines.lines.get(join(prefix, path) if path else prefix)

        resource, problems = _check_manifest(item, source, default_namespace, line_of, prefix)
        violations += problems
        if resource is not None:
            resources.append(resource)
    return resources, violations


def _check_manifest(
    manifest: Any,
    source: Source,
    default_namespace: str,
    line_of: LineOf | None,
    prefix: str = "",
) -> tuple[Resource | None, list[Violation]]:
    """The Resource for ``manifest`` if it is valid, and every violation found in it."""
    if not isinstance(manifest, dict):
        problem = Problem(
            "",
            f"a document must be a mapping with apiVersion, kind, metadata and spec, "
            f"got {describe(manifest)}",
            "start the document with `apiVersion: ...`",
        )
        return None, _violations([problem], source, line_of, {}, prefix)
    problems: list[Problem] = []
    for key in manifest:
        if key not in TOP_LEVEL and key not in IGNORED_TOP_LEVEL:
            problems.append(unknown_field(str(key), str(key), TOP_LEVEL))
    model = check_kind(manifest.get("kind"), problems)
    if model is not None:
        check_api_version(manifest.get("apiVersion"), problems)
    name, namespace, metadata = check_metadata(
        manifest.get("metadata"), default_namespace, problems
    )
    spec: Spec | None = None
    if model is not None:
        if manifest.get("spec") is None:
            problems.append(
                Problem(
                    "spec",
                    "missing required field 'spec'",
                    "add `spec:` (see docs/istio-fields.md)",
                )
            )
        else:
            try:
                spec = model.model_validate(manifest["spec"])
            except ValidationError as exc:
                problems += schema_problems(exc, model, "spec")
                problems += _semantics_despite(exc, model, str(manifest["kind"]), manifest["spec"])
            else:
                problems += check_spec(str(manifest["kind"]), spec)
    ident = {"kind": manifest.get("kind"), "metadata": {"name": name, "namespace": namespace}}
    violations = _violations(problems, source, line_of, ident, prefix)
    if violations or spec is None:
        return None, violations
    stored = {
        "apiVersion": manifest["apiVersion"],
        "kind": manifest["kind"],
        "metadata": metadata,
        "spec": copy.deepcopy(manifest["spec"]),
    }
    labels = metadata.get("labels", {})
    resource = Resource(
        kind=str(manifest["kind"]),
        name=name,
        namespace=namespace,
        api_version=str(manifest["apiVersion"]),
        spec=spec,
        manifest=stored,
        labels=tuple(sorted(labels.items())),
        source=source,
    )
    return resource, []


def _semantics_despite(
    error: ValidationError, model: type[Spec], kind: str, data: Any
) -> list[Problem]:
    """Semantic problems of a spec with schema errors, found by checking it without them.

    Problems on a path above or below a cut-out field are dropped: they may only be echoes of
    the cut (a weight that is "missing" because it was not a number).
    """
    attempt = prune_invalid(data, error, "spec")
    if attempt is None:
        return []
    pruned, cut = attempt
    try:
        spec = model.model_validate(pruned)
    except ValidationError:
        return []
    return [p for p in check_spec(kind, spec) if not any(_related(c, p.path) for c in cut)]


def _related(a: str, b: str) -> bool:
    """True if one field path is the other or lies below it."""
    if len(a) < len(b):
        a, b = b, a
    return a == b or a.startswith(b + ".") or a.startswith(b + "[")


def _violations(
    problems: Sequence[Problem],
    source: Source,
    line_of: LineOf | None,
    ident: dict[str, Any],
    prefix: str = "",
) -> list[Violation]:
    """Problems placed in their file, document, line and resource."""
    kind = ident.get("kind")
    metadata = ident.get("metadata")
    meta = metadata if isinstance(metadata, dict) else {}
    name, namespace = meta.get("name"), meta.get("namespace")
    return [
        Violation(
            message=p.message,
            path=join(prefix, p.path) if prefix and p.path else (p.path or prefix),
            kind=kind if isinstance(kind, str) else "",
            name=name if isinstance(name, str) else "",
            namespace=namespace if isinstance(namespace, str) else "",
            file=source.file,
            document=source.document,
            line=p.line or _line(p.path, line_of) or source.line,
            hint=p.hint,
            code=SCHEMA_CODE,
        )
        for p in problems
    ]


def _line(path: str, line_of: LineOf | None) -> int | None:
    """Line of ``path`` or of its nearest ancestor that ``line_of`` knows."""
    current: str | None = path
    while line_of is not None and current is not None:
        found = line_of(current)
        if found is not None:
            return found
        current = parent(current)
    return None
