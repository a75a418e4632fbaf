"""Semantic checks for the Telemetry kind (Istio's rules plus what the data plane needs).

Judgement calls, documented in docs/istio-fields.md:

- At most one ``tracing`` and one ``accessLogging`` entry per Telemetry: Istio documents only the
  first as used ("multiple are not supported") for tracing; novamesh rejects the rest rather
  than ignoring them.
- At most one provider per entry (Envoy runs one tracer per listener; one access-log provider).
- Custom tag names and header names must be non-empty HTTP tokens.
- ``filter.expression`` is CEL, handed to Envoy's CEL access-log filter as written; here only
  its shape is checked (balanced brackets and quotes), Envoy compiles it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

from ..errors import Violation
from ._paths import Problem
from .resource import Resource, ResourceKey
from .types_mesh import MeshConfigSpec
from .types_telemetry import ENVOY_ACCESS_LOG_PROVIDER, TRACING_PROVIDERS, AccessLogging, TelemetrySpec, Tracing

__all__ = ["check_telemetry", "cel_shape_problem", "telemetry_provider_violations"]

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_PAIRS = {")": "(", "]": "[", "}": "{"}


def cel_shape_problem(expression: str) -> str | None:
    """Why ``expression`` cannot be a CEL expression (unbalanced brackets or quotes), or None."""
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for ch in expression:
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in ("'", '"'):
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in _PAIRS:
            if not stack or stack.pop() != _PAIRS[ch]:
                return f"unbalanced '{ch}'"
    if quote is not None:
        return f"unterminated string (opened with {quote})"
    if stack:
        return f"unclosed '{stack[-1]}'"
    return None


def check_telemetry(spec: TelemetrySpec) -> list[Problem]:
    """Every problem in one Telemetry spec."""
    problems: list[Problem] = []
    if spec.selector is not None and not spec.selector.match_labels:
        problems.append(
            Problem(
                "spec.selector.matchLabels",
                "an empty selector selects every workload; Istio requires labels here",
                "add `matchLabels: {app: NAME}`, or remove 'selector' to configure the whole namespace",
            )
        )
    if not spec.tracing and not spec.access_logging:
        problems.append(
            Problem(
                "spec",
                "empty Telemetry: it sets neither tracing nor accessLogging",
                "add e.g. `tracing: [{randomSamplingPercentage: 10}]` or `accessLogging: [{providers: [{name: envoy}]}]`",
            )
        )
    groups: tuple[tuple[str, Sequence[Tracing | AccessLogging]], ...] = (
        ("tracing", spec.tracing),
        ("accessLogging", spec.access_logging),
    )
    for field, entries in groups:
        if len(entries) > 1:
            problems.append(
                Problem(
                    f"spec.{field}[1]",
                    f"only one {field} entry per Telemetry is supported",
                    f"merge the entries into spec.{field}[0]",
                )
            )
        for i, entry in enumerate(entries):
            if len(entry.providers) > 1:
                problems.append(
                    Problem(
                        f"spec.{field}[{i}].providers[1]",
                        "only one provider per entry is supported",
                        "keep one provider (e.g. `providers: [{name: otel}]`)",
                    )
                )
    for i, tracing in enumerate(spec.tracing):
        for tag, custom in tracing.custom_tags.items():
            where = f"spec.tracing[{i}].customTags.{tag}"
            if _TOKEN.fullmatch(tag) is None:
                problems.append(Problem(where, f"tag name {tag!r} is not a token", "use letters, digits, '-', '_' and '.'"))
            if custom.header is not None and _TOKEN.fullmatch(custom.header.name) is None:
                problems.append(
                    Problem(f"{where}.header.name", f"{custom.header.name!r} is not an HTTP header name", "write e.g. x-user-id")
                )
    for i, logging in enumerate(spec.access_logging):
        for j, ref in enumerate(logging.providers):
            if ref.name != ENVOY_ACCESS_LOG_PROVIDER:
                problems.append(
                    Problem(
                        f"spec.accessLogging[{i}].providers[{j}].name",
                        f"unknown access-log provider '{ref.name}'; novamesh has only '{ENVOY_ACCESS_LOG_PROVIDER}' "
                        "(JSON lines in the workload's access.log)",
                        f"write `providers: [{{name: {ENVOY_ACCESS_LOG_PROVIDER}}}]` or leave providers out",
                    )
                )
        if logging.filter is not None:
            reason = cel_shape_problem(logging.filter.expression)
            if reason:
                problems.append(
                    Problem(
                        f"spec.accessLogging[{i}].filter.expression",
                        f"not a CEL expression: {reason}",
                        "write e.g. `response.code >= 400` or `response.flags != 0`",
                    )
                )
    return problems


def telemetry_provider_violations(state: Mapping[ResourceKey, Resource], changed: Collection[ResourceKey]) -> list[Violation]:
    """Tracing providers a Telemetry names that neither settings (``otel``, ``zipkin``) nor the
    MeshConfig's ``extensionProviders`` define. Checked for the Telemetries that changed, and for
    all of them when the MeshConfig changed (removing a provider in use is refused)."""
    known = set(TRACING_PROVIDERS)
    for resource in state.values():
        if isinstance(resource.spec, MeshConfigSpec):
            known |= {p.name for p in resource.spec.extension_providers}
    mesh_changed = any(k[0] == "MeshConfig" for k in changed)
    violations: list[Violation] = []
    for key in sorted(state):
        resource = state[key]
        spec = resource.spec
        if not isinstance(spec, TelemetrySpec) or not (mesh_changed or key in changed):
            continue
        for i, tracing in enumerate(spec.tracing):
            for j, ref in enumerate(tracing.providers):
                if ref.name in known:
                    continue
                violations.append(
                    Violation(
                        message=f"unknown tracing provider '{ref.name}'; defined: {', '.join(sorted(known))}",
                        path=f"spec.tracing[{i}].providers[{j}].name",
                        kind=resource.kind,
                        name=resource.name,
                        namespace=resource.namespace,
                        file=resource.source.file,
                        document=resource.source.document,
                        line=resource.source.line,
                        hint="name `otel` (settings tracing_otlp_address) or `zipkin` (tracing_zipkin_address), "
                        "define it in MeshConfig extensionProviders, or omit providers for the mesh default",
                        code="IST0101",
                    )
                )
    return violations
