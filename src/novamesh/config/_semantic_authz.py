"""Semantic checks of AuthorizationPolicy and RequestAuthentication (Istio's validation rules
plus what a typo would otherwise silently turn into "matches nothing").

Paths start at ``spec``; every problem is returned. Judgement calls (docs/security.md):
an explicitly empty list (``paths: []``) is an error — Istio treats it as "not set", which
widens a rule the author meant to narrow; a principal written with ``spiffe://`` is an error
(Istio's principals omit the scheme, so it would never match).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from ._paths import Problem
from ._syntax import is_cidr, is_ip
from .base import Spec
from .types_authz import AuthorizationPolicySpec, Condition, Operation, RequestAuthenticationSpec, Source

__all__ = ["AUTHZ_CHECKERS", "WHEN_KEYS", "check_authorization_policy", "check_request_authentication", "parse_when_key"]

WHEN_KEYS: tuple[str, ...] = (
    "request.headers[]", "source.ip", "remote.ip", "source.namespace", "source.principal",
    "request.auth.principal", "request.auth.audiences", "request.auth.presenter", "request.auth.claims[]",
    "destination.ip", "destination.port", "connection.sni",
)
"""``when`` keys novamesh translates (``[]``: takes a header name or claim path)."""

_BRACKETS = re.compile(r"^(request\.headers|request\.auth\.claims)((?:\[[^\[\]]+\])+)$")
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~:]+$")


def parse_when_key(key: str) -> tuple[str, tuple[str, ...]] | None:
    """(base key, bracketed arguments) of a valid ``when`` key, or None.

    ``request.auth.claims[a][b]`` → ``("request.auth.claims", ("a", "b"))``; headers take exactly
    one argument, plain keys none."""
    m = _BRACKETS.match(key)
    if m:
        args = tuple(re.findall(r"\[([^\[\]]+)\]", m.group(2)))
        if m.group(1) == "request.headers" and (len(args) != 1 or not _HEADER.match(args[0])):
            return None
        return m.group(1), args
    if key in WHEN_KEYS and not key.endswith("[]"):
        return key, ()
    return None


def _wildcard(value: str, path: str, what: str) -> list[Problem]:
    """Istio's rule: ``*`` alone, or one ``*`` at the start or end."""
    if value == "":
        return [Problem(path, f"empty {what}", f"write a {what}, or `*` for any")]
    inner = value.strip("*") if value != "*" else ""
    if "*" in inner or (value.startswith("*") and value.endswith("*") and value != "*"):
        return [Problem(path, f"'{value}': `*` may appear only alone, at the start or at the end",
                        "write an exact value, `prefix*`, `*suffix` or `*`")]
    return []


def _list(values: list[str] | None, path: str) -> list[Problem]:
    if values is not None and not values:
        return [Problem(path, "empty list", "remove the field, or list at least one value")]
    return []


def _source(src: Source, path: str) -> list[Problem]:
    problems: list[Problem] = []
    fields = src.model_dump(by_alias=True)
    if all(v is None for v in fields.values()):
        problems.append(Problem(path, "empty source", "set at least one field (principals, namespaces, ipBlocks...) or remove this `from` entry"))
    for name, values in fields.items():
        problems += _list(values, f"{path}.{name}")
        for i, v in enumerate(values or []):
            p = f"{path}.{name}[{i}]"
            if name in ("principals", "notPrincipals"):
                if v.startswith("spiffe://"):
                    problems.append(Problem(p, f"malformed principal '{v}': principals are written without spiffe://",
                                            f"write '{v[len('spiffe://'):]}'"))
                elif v != "*" and "/" not in v.strip("*") and not (v.startswith("*") or v.endswith("*")):
                    problems.append(Problem(p, f"malformed principal '{v}'",
                                            "write <trust-domain>/ns/<namespace>/sa/<service-account>, e.g. cluster.local/ns/default/sa/sleep"))
                else:
                    problems += _wildcard(v, p, "principal")
            elif name in ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"):
                if not (is_ip(v) or is_cidr(v)):
                    problems.append(Problem(p, f"'{v}' is not an IP address or CIDR block", "write e.g. 10.1.2.3 or 10.0.0.0/16"))
            else:
                problems += _wildcard(v, p, name.rstrip("s"))
    return problems


def _operation(op: Operation, path: str) -> list[Problem]:
    problems: list[Problem] = []
    fields = op.model_dump(by_alias=True)
    if all(v is None for v in fields.values()):
        problems.append(Problem(path, "empty operation", "set at least one field (paths, methods, ports, hosts...) or remove this `to` entry"))
    for name, values in fields.items():
        problems += _list(values, f"{path}.{name}")
        for i, v in enumerate(values or []):
            p = f"{path}.{name}[{i}]"
            if name in ("ports", "notPorts"):
                if not v.isdigit() or not 1 <= int(v) <= 65535:
                    problems.append(Problem(p, f"'{v}' is not a port number", "write a number from 1 to 65535, e.g. \"8080\""))
            elif name in ("paths", "notPaths") and v not in ("*",) and not (v.startswith("/") or v.startswith("*")):
                problems.append(Problem(p, f"path '{v}' does not start with /", "write e.g. /api/* or *.html"))
            else:
                problems += _wildcard(v, p, name.rstrip("s"))
    return problems


def _condition(cond: Condition, path: str) -> list[Problem]:
    problems: list[Problem] = []
    parsed = parse_when_key(cond.key)
    if parsed is None:
        problems.append(Problem(f"{path}.key", f"unsupported when key '{cond.key}'",
                                "use one of " + ", ".join(k.replace("[]", "[name]") for k in WHEN_KEYS)))
    if not cond.values and not cond.not_values:
        problems.append(Problem(path, "condition has neither values nor notValues", "add `values:` or `notValues:`"))
    problems += _list(cond.values, f"{path}.values") + _list(cond.not_values, f"{path}.notValues")
    base = parsed[0] if parsed else ""
    for field, values in (("values", cond.values), ("notValues", cond.not_values)):
        for i, v in enumerate(values or []):
            p = f"{path}.{field}[{i}]"
            if base in ("source.ip", "remote.ip", "destination.ip") and not (is_ip(v) or is_cidr(v)):
                problems.append(Problem(p, f"'{v}' is not an IP address or CIDR block", "write e.g. 10.1.2.3 or 10.0.0.0/16"))
            elif base == "destination.port" and (not v.isdigit() or not 1 <= int(v) <= 65535):
                problems.append(Problem(p, f"'{v}' is not a port number", "write a number from 1 to 65535"))
    return problems


def check_authorization_policy(spec: AuthorizationPolicySpec) -> list[Problem]:
    """Every problem of one AuthorizationPolicy spec."""
    problems: list[Problem] = []
    if spec.action == "CUSTOM":
        problems.append(Problem("spec.action", "action CUSTOM (external authorization) is not supported by novamesh yet",
                                "use ALLOW, DENY or AUDIT"))
    for i, rule in enumerate(spec.rules):
        for j, f in enumerate(rule.from_):
            problems += _source(f.source, f"spec.rules[{i}].from[{j}].source")
        for j, t in enumerate(rule.to):
            problems += _operation(t.operation, f"spec.rules[{i}].to[{j}].operation")
        for j, c in enumerate(rule.when):
            problems += _condition(c, f"spec.rules[{i}].when[{j}]")
    return problems


def check_request_authentication(spec: RequestAuthenticationSpec) -> list[Problem]:
    """Every problem of one RequestAuthentication spec."""
    problems: list[Problem] = []
    issuers: dict[str, int] = {}
    for i, rule in enumerate(spec.jwt_rules):
        path = f"spec.jwtRules[{i}]"
        if not rule.issuer:
            problems.append(Problem(f"{path}.issuer", "JWT rule without issuer", "add `issuer:` with the token's `iss` claim, e.g. https://auth.example.com"))
        elif rule.issuer in issuers:
            problems.append(Problem(f"{path}.issuer", f"duplicate issuer '{rule.issuer}' (same as spec.jwtRules[{issuers[rule.issuer]}])", "list each issuer once"))
        else:
            issuers[rule.issuer] = i
        if rule.jwks and rule.jwks_uri:
            problems.append(Problem(path, "both jwks and jwksUri are set", "keep one of them"))
        if not rule.jwks and not rule.jwks_uri:
            problems.append(Problem(path, "neither jwks nor jwksUri is set (novamesh does not discover keys from the issuer)",
                                    "add `jwksUri: https://<issuer>/.well-known/jwks.json` or inline `jwks:`"))
        if rule.jwks_uri:
            url = urlsplit(rule.jwks_uri)
            if url.scheme not in ("http", "https") or not url.hostname:
                problems.append(Problem(f"{path}.jwksUri", f"'{rule.jwks_uri}' is not an http(s) URL", "write e.g. https://auth.example.com/jwks.json"))
        if rule.jwks:
            try:
                keys = json.loads(rule.jwks).get("keys")
                if not isinstance(keys, list):
                    raise ValueError
            except (ValueError, AttributeError):
                problems.append(Problem(f"{path}.jwks", "jwks is not a JSON Web Key Set", 'write a JSON object {"keys": [...]}'))
        for j, h in enumerate(rule.from_headers):
            if not _HEADER.match(h.name):
                problems.append(Problem(f"{path}.fromHeaders[{j}].name", f"'{h.name}' is not a header name", "write e.g. authorization"))
        if rule.output_payload_to_header and not _HEADER.match(rule.output_payload_to_header):
            problems.append(Problem(f"{path}.outputPayloadToHeader", f"'{rule.output_payload_to_header}' is not a header name", "write e.g. x-jwt-payload"))
    return problems


AUTHZ_CHECKERS: dict[str, Callable[[Spec], list[Problem]]] = {
    "AuthorizationPolicy": lambda s: check_authorization_policy(s) if isinstance(s, AuthorizationPolicySpec) else [],
    "RequestAuthentication": lambda s: check_request_authentication(s) if isinstance(s, RequestAuthenticationSpec) else [],
}
"""Checkers merged into ``_semantic._CHECKERS``."""
