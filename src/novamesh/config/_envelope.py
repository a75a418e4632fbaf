"""The envelope of a document: apiVersion, kind and metadata (everything but ``spec``).

Checks append :class:`~._paths.Problem` objects and never raise, so every problem of a document
is reported together.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ._paths import Problem
from ._schema import describe, did_you_mean
from ._syntax import is_dns1123_label, is_dns1123_subdomain
from .names import canonical_kind
from .types import API_GROUPS, SPEC_TYPES, Spec

__all__ = [
    "NOT_YET_SUPPORTED_KINDS",
    "TOP_LEVEL",
    "IGNORED_TOP_LEVEL",
    "METADATA",
    "IGNORED_METADATA",
    "check_kind",
    "check_api_version",
    "check_metadata",
    "unknown_field",
]

NOT_YET_SUPPORTED_KINDS: tuple[str, ...] = (
    "EnvoyFilter",
    "WorkloadGroup",
    "ProxyConfig",
    "WasmPlugin",
)
"""Istio kinds novamesh recognises but does not accept yet."""

_FIELDS_DOC = "docs/istio-fields.md"

TOP_LEVEL: tuple[str, ...] = ("apiVersion", "kind", "metadata", "spec")
"""Top-level keys of a manifest, in the order they are written out."""

IGNORED_TOP_LEVEL: tuple[str, ...] = ("status",)
"""Accepted and dropped: written by controllers, as kubectl apply drops it."""

METADATA: tuple[str, ...] = ("name", "namespace", "labels", "annotations")
"""metadata keys novamesh keeps, in the order they are written out."""

IGNORED_METADATA: tuple[str, ...] = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "selfLink",
    "generateName",
)
"""Server-managed ObjectMeta keys: accepted so `kubectl get -o yaml` output applies, dropped."""


def check_kind(kind: Any, problems: list[Problem]) -> type[Spec] | None:
    """The spec model of ``kind``, or None after appending why it is not accepted."""
    supported = ", ".join(SPEC_TYPES)
    if kind is None:
        problems.append(
            Problem("kind", "missing required field 'kind'", f"add `kind:` with one of {supported}")
        )
    elif not isinstance(kind, str):
        problems.append(
            Problem("kind", f"expected string, got {describe(kind)}", f"write one of {supported}")
        )
    elif kind in SPEC_TYPES:
        return SPEC_TYPES[kind]
    elif kind in NOT_YET_SUPPORTED_KINDS:
        problems.append(
            Problem(
                "kind",
                f"Istio kind '{kind}' is not supported by novamesh yet (see {_FIELDS_DOC})",
                f"leave this document out for now; supported kinds: {supported}",
            )
        )
    else:
        guess = canonical_kind(kind) or did_you_mean(kind, SPEC_TYPES)
        problems.append(
            Problem(
                "kind",
                f"unknown kind '{kind}'; supported kinds: {supported}",
                f"did you mean '{guess}'?"
                if guess
                else "novamesh reads Istio networking config only",
            )
        )
    return None


def check_api_version(api_version: Any, problems: list[Problem]) -> None:
    """Append a problem unless ``api_version`` is an accepted ``<group>/<version>``."""
    accepted = [f"{group}/{v}" for group, versions in API_GROUPS.items() for v in versions]
    hint = f"write `apiVersion: {accepted[0]}`"
    if api_version is None:
        problems.append(Problem("apiVersion", "missing required field 'apiVersion'", hint))
        return
    if not isinstance(api_version, str) or api_version.count("/") != 1:
        problems.append(
            Problem(
                "apiVersion",
                f"apiVersion must be <group>/<version>, got {describe(api_version)}",
                hint,
            )
        )
        return
    group, version = api_version.split("/")
    if group not in API_GROUPS:
        problems.append(Problem("apiVersion", f"unknown API group '{group}'", hint))
    elif version not in API_GROUPS[group]:
        problems.append(
            Problem(
                "apiVersion",
                f"unsupported version '{version}' of {group}; "
                f"accepted: {', '.join(API_GROUPS[group])}",
                hint,
            )
        )


def check_metadata(
    metadata: Any, default_namespace: str, problems: list[Problem]
) -> tuple[str, str, dict[str, Any]]:
    """(name, namespace, metadata to store); problems are appended, never raised."""
    if metadata is None:
        problems.append(
            Problem(
                "metadata",
                "missing required field 'metadata'",
                "add `metadata: {name: my-resource}`",
            )
        )
        return "", default_namespace, {}
    if not isinstance(metadata, dict):
        problems.append(
            Problem(
                "metadata",
                f"expected mapping, got {describe(metadata)}",
                "write `metadata:` with `name:` indented below it",
            )
        )
        return "", default_namespace, {}
    for key in metadata:
        if key not in METADATA and key not in IGNORED_METADATA:
            problems.append(unknown_field(f"metadata.{key}", str(key), METADATA))
    name = metadata.get("name")
    if name is None:
        problems.append(
            Problem(
                "metadata.name",
                "missing required field 'metadata.name'",
                "add `name:` under metadata",
            )
        )
        name = ""
    elif not isinstance(name, str) or not is_dns1123_subdomain(name):
        name = name if isinstance(name, str) else str(name)
        suggestion = re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-.")[:253]
        problems.append(
            Problem(
                "metadata.name",
                f"name must be a DNS-1123 subdomain, got {describe(name)}",
                "use lower-case letters, digits, '-' and '.', starting and ending with a letter "
                "or digit, at most 253 characters"
                + (f", e.g. '{suggestion}'" if is_dns1123_subdomain(suggestion) else ""),
            )
        )
    namespace = metadata.get("namespace")
    if namespace is None:
        namespace = default_namespace
    elif not isinstance(namespace, str) or not is_dns1123_label(namespace):
        problems.append(
            Problem(
                "metadata.namespace",
                f"namespace must be a DNS-1123 label, got {describe(namespace)}",
                "use lower-case letters, digits and '-', at most 63 characters",
            )
        )
        namespace = namespace if isinstance(namespace, str) else default_namespace
    stored: dict[str, Any] = {"name": name, "namespace": namespace}
    for field in ("labels", "annotations"):
        value = metadata.get(field)
        if value is None:
            continue
        if not isinstance(value, dict):
            problems.append(
                Problem(
                    f"metadata.{field}",
                    f"expected mapping, got {describe(value)}",
                    f"write {field} as `key: value` lines",
                )
            )
            continue
        for key, item in value.items():
            if not isinstance(key, str) or not isinstance(item, str):
                problems.append(
                    Problem(
                        f"metadata.{field}.{key}",
                        f"{field} keys and values must be strings, "
                        f"got {describe(key)}: {describe(item)}",
                        "quote the key and the value",
                    )
                )
        stored[field] = dict(value)
    return name, namespace, stored


def unknown_field(path: str, name: str, known: Sequence[str]) -> Problem:
    """Problem for an unknown key, suggesting the closest known one."""
    guess = did_you_mean(name, known)
    hint = f"did you mean '{guess}'?" if guess else f"remove it; allowed here: {', '.join(known)}"
    return Problem(path, f"unknown field '{name}'", hint)
