"""Turn pydantic's ValidationError into Problems a user can act on.

Each pydantic error becomes one :class:`~._paths.Problem` whose path uses the field names the
user wrote (models are validated by alias, so ``loc`` holds camelCase names), whose message
says what was expected and what was found, and whose hint says how to fix it. Unknown fields
get a "did you mean" suggestion, and real Istio fields novamesh does not support yet are named
as such rather than called unknown.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from ._paths import Problem, format_loc
from .types_http import HTTP_POLICY_NOT_YET_SUPPORTED
from .types_traffic import TRAFFIC_NOT_YET_SUPPORTED
from .types_sidecar import SIDECAR_NOT_YET_SUPPORTED
from .types_gateway import GATEWAY_NOT_YET_SUPPORTED
from .types_telemetry import TELEMETRY_NOT_YET_SUPPORTED
from .types_mesh import MESH_NOT_YET_SUPPORTED
from .types_authz import AUTHZ_NOT_YET_SUPPORTED
from .types import (
    PROTOCOLS,
    DestinationRuleSpec,
    HTTPMatchRequest,
    HTTPRoute,
)

__all__ = ["NOT_YET_SUPPORTED", "schema_problems", "prune_invalid", "describe", "did_you_mean"]

FIELDS_DOC = "docs/istio-fields.md"

NOT_YET_SUPPORTED: dict[type[BaseModel], tuple[str, ...]] = {
    **HTTP_POLICY_NOT_YET_SUPPORTED,
    **TRAFFIC_NOT_YET_SUPPORTED,
    **SIDECAR_NOT_YET_SUPPORTED,
    **GATEWAY_NOT_YET_SUPPORTED,
    **TELEMETRY_NOT_YET_SUPPORTED,
    **MESH_NOT_YET_SUPPORTED,
    **AUTHZ_NOT_YET_SUPPORTED,
    HTTPRoute: ("delegate", "mirrorPercent"),
    HTTPMatchRequest: ("statPrefix",),
    DestinationRuleSpec: ("workloadSelector",),
}
"""Real Istio fields, per model, that novamesh rejects because the data plane ignores them."""

_EXPECTED: dict[str, str] = {
    "int_type": "integer",
    "int_parsing": "integer",
    "int_from_float": "whole number",
    "float_type": "number",
    "float_parsing": "number",
    "string_type": "string",
    "bool_type": "boolean (true or false)",
    "bool_parsing": "boolean (true or false)",
    "list_type": "list",
    "tuple_type": "list",
    "dict_type": "mapping",
    "model_type": "mapping",
    "model_attributes_type": "mapping",
}


def describe(value: object) -> str:
    """A short description of a YAML value for messages: ``string 'abc'``, ``null``, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{type(value).__name__} {value!s:.40}"


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to ``word`` (case-insensitive match first), or None."""
    options = list(choices)
    for option in options:
        if option.lower() == word.lower():
            return option
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else None


def schema_problems(error: ValidationError, model: type[BaseModel], prefix: str) -> list[Problem]:
    """One Problem per entry of ``error`` raised validating ``model`` found at ``prefix``."""
    return [_problem(entry, model, prefix) for entry in error.errors()]


def _problem(entry: Any, model: type[BaseModel], prefix: str) -> Problem:
    loc: tuple[str | int, ...] = tuple(entry["loc"])
    kind: str = entry["type"]
    value = entry.get("input")
    if loc and loc[-1] == "[key]":  # the key of a free-form map is itself invalid
        path = format_loc(loc[:-1], prefix)
        expected = _EXPECTED.get(kind, "string")
        return Problem(
            path,
            f"map key must be a {expected}, got {describe(value)}",
            "quote the key so YAML reads it as a string",
        )
    path = format_loc(loc, prefix)
    field = next((str(p) for p in reversed(loc) if isinstance(p, str)), prefix)
    if kind == "extra_forbidden":
        return _unknown_field(path, str(loc[-1]), _model_at(model, loc[:-1]))
    if kind == "missing":
        return Problem(
            path,
            f"missing required field '{field}'",
            f"add '{field}' (see {FIELDS_DOC} for its format)",
        )
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
        if value is None:
            hint = f"give '{field}' a value ({expected}), or delete the line if it is optional"
        else:
            hint = f"write {_article(expected)} {expected} for '{field}'"
        return Problem(path, f"expected {expected}, got {describe(value)}", hint)
    ctx: dict[str, Any] = entry.get("ctx") or {}
    if kind == "literal_error":
        listed = str(ctx.get("expected", "")).replace(" or ", ",")
        allowed = [a.strip().strip("'") for a in listed.split(",")]
        guess = did_you_mean(str(value), allowed) if isinstance(value, str) else None
        return Problem(
            path,
            f"expected one of {', '.join(allowed)}, got {describe(value)}",
            f"did you mean '{guess}'?" if guess else f"use one of {', '.join(allowed)}",
        )
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        op, key = bounds[kind]
        return Problem(
            path,
            f"must be {op} {ctx.get(key)}, got {describe(value)}",
            f"set '{field}' to a value {op} {ctx.get(key)}",
        )
    if kind == "too_short":
        return Problem(
            path,
            f"must have at least {ctx.get('min_length', 1)} item(s)",
            f"add at least one entry under '{field}'",
        )
    if kind == "string_too_short":
        return Problem(path, "must not be empty", f"give '{field}' a value")
    if kind == "value_error":
        message = str(ctx.get("error", entry["msg"]))
        if field == "protocol":
            hint = f"use one of {', '.join(PROTOCOLS)} (any case)"
        elif "only one of" in message:
            hint = "keep exactly one of exact, prefix, regex"
        else:
            hint = f"change '{field}' as described"
        return Problem(path, message, hint)
    return Problem(path, str(entry["msg"]), f"fix '{field}' (see {FIELDS_DOC})")


def _unknown_field(path: str, name: str, model: type[BaseModel] | None) -> Problem:
    known = _aliases(model) if model is not None else []
    if model is not None and name in NOT_YET_SUPPORTED.get(model, ()):
        return Problem(
            path,
            f"Istio field '{name}' is not supported by novamesh yet (see {FIELDS_DOC})",
            f"remove '{name}'; novamesh rejects it rather than silently ignoring it",
        )
    guess = did_you_mean(name, known)
    if guess:
        hint = f"did you mean '{guess}'?"
    elif known:
        hint = f"remove it; fields allowed here: {', '.join(known)}"
    else:
        hint = "remove it"
    return Problem(path, f"unknown field '{name}'", hint)


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def _aliases(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that validated the value at ``loc`` (None if it is not a model)."""
    current: Any = model
    for part in loc:
        current = _unwrap_optional(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            current = next(
                (
                    info.annotation
                    for name, info in current.model_fields.items()
                    if part in (name, info.alias)
                ),
                None,
            )
            if current is None:
                return None
        elif typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap_optional(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def prune_invalid(data: Any, error: ValidationError, prefix: str) -> tuple[Any, list[str]] | None:
    """A copy of ``data`` without the mapping keys ``error`` complains about, and their paths.

    Lets semantic checks still run on the rest of a document that has schema errors, so the
    user sees every problem in one pass. Returns None when an error cannot be cut out without
    changing list indices or removing a required field (the caller then skips those checks).
    """
    pruned = copy.deepcopy(data)
    paths: list[str] = []
    for entry in error.errors():
        loc: tuple[str | int, ...] = tuple(entry["loc"])
        if loc and loc[-1] == "[key]":
            loc = loc[:-1]
        if not loc or entry["type"] == "missing":
            return None
        container: Any = pruned
        for part in loc[:-1]:
            try:
                container = container[part]
            except (KeyError, IndexError, TypeError):
                container = None  # an ancestor was already cut out
                break
        if container is None:
            continue
        if not isinstance(container, dict):
            return None
        container.pop(loc[-1], None)
        paths.append(format_loc(loc, prefix))
    return pruned, paths
