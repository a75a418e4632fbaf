"""AuthorizationPolicy on TCP ports: what a rule means where there is no HTTP request.

Istio's semantics, exactly (its authorization model in pilot, and istio.io's "TCP Traffic" task):

* **HTTP-only fields** — ``source.requestPrincipals`` / ``notRequestPrincipals``;
  ``operation.hosts``, ``methods``, ``paths`` and their ``not`` forms; ``when`` keys
  ``request.headers[...]`` and ``request.auth.*`` — cannot be evaluated on a connection.
* In an **ALLOW** policy a rule using any of them is dropped: it can never match a connection.
  The policy still selects the workload, so a TCP connection that matches no remaining ALLOW
  rule is closed (an ALLOW policy whose every rule is HTTP-only denies all TCP connections).
* In a **DENY** or **AUDIT** policy only the HTTP-only fields are dropped and the rest of the rule
  still applies, so the rule matches *more* connections (denying more is the safe side): a DENY
  rule ``methods: [GET]`` denies every TCP connection; ``methods: [GET], ports: ["9000"]`` every
  connection to port 9000.
* Every other field works on TCP: ``principals`` and ``namespaces`` (from the peer certificate,
  so only callers on the mesh mTLS chain match them), ``ipBlocks``, ``remoteIpBlocks``,
  ``ports``, and the ``when`` keys ``source.ip``, ``remote.ip``, ``source.principal``,
  ``source.namespace``, ``destination.ip``, ``destination.port``, ``connection.sni``.

The rules that survive are translated exactly like HTTP ones (:mod:`.authz`) and installed as
Envoy network RBAC filters (``envoy.filters.network.rbac``) in front of ``tcp_proxy`` in every
filter chain of an inbound TCP listener: plain TCP ports and TLS passed through to the app, the
plaintext chain and the mesh mTLS chain alike. A refused connection is closed. Envoy decides
when the client's first bytes arrive (its default ``ONE_TIME_ON_FIRST_BYTE``); the upstream
connection to the app is already open then (Envoy issue 9023, Istio has the same), so a
server-first protocol's greeting can reach a refused client before it is cut off.
"""

from __future__ import annotations

import copy
from typing import Any

# Registers the network RBAC message this module names in an Any (see translate/protos.py).
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2  # noqa: F401

from ..config._semantic_authz import parse_when_key
from ..config.types_authz import Condition, Operation, Rule, Source

__all__ = [
    "HTTP_ONLY_OPERATION",
    "HTTP_ONLY_SOURCE",
    "HTTP_ONLY_WHEN",
    "NETWORK_RBAC",
    "TCP_PROXY_NAME",
    "guard_tcp_chains",
    "http_only_fields",
    "network_filter",
    "rule_for_tcp",
]

NETWORK_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
TCP_PROXY_NAME = "envoy.filters.network.tcp_proxy"

HTTP_ONLY_SOURCE: tuple[str, ...] = ("request_principals", "not_request_principals")
"""``Source`` fields (model names) that need an HTTP request (a JWT)."""
HTTP_ONLY_OPERATION: tuple[str, ...] = ("hosts", "not_hosts", "methods", "not_methods", "paths", "not_paths")
"""``Operation`` fields (model names) that need an HTTP request."""
HTTP_ONLY_WHEN: frozenset[str] = frozenset({
    "request.headers", "request.auth.principal", "request.auth.audiences", "request.auth.presenter", "request.auth.claims",
})  # fmt: skip
"""``when`` keys (base, without brackets) that need an HTTP request."""


def _http_only_condition(cond: Condition) -> bool:
    parsed = parse_when_key(cond.key)
    return parsed is not None and parsed[0] in HTTP_ONLY_WHEN


def http_only_fields(rule: Rule) -> list[str]:
    """The HTTP-only fields ``rule`` uses, as YAML paths relative to the rule (sorted, unique)."""
    used: set[str] = set()
    for f in rule.from_:
        used |= {f"from.source.{_alias(Source, n)}" for n in HTTP_ONLY_SOURCE if getattr(f.source, n) is not None}
    for t in rule.to:
        used |= {f"to.operation.{_alias(Operation, n)}" for n in HTTP_ONLY_OPERATION if getattr(t.operation, n) is not None}
    used |= {f"when[{c.key}]" for c in rule.when if _http_only_condition(c)}
    return sorted(used)


def _alias(model: type[Source] | type[Operation], name: str) -> str:
    return model.model_fields[name].alias or name


def _strip(rule: Rule) -> Rule:
    """``rule`` without its HTTP-only fields (a ``source``/``operation`` left empty matches any)."""
    no_source = {n: None for n in HTTP_ONLY_SOURCE}
    no_operation = {n: None for n in HTTP_ONLY_OPERATION}
    return rule.model_copy(update={
        "from_": [f.model_copy(update={"source": f.source.model_copy(update=no_source)}) for f in rule.from_],
        "to": [t.model_copy(update={"operation": t.operation.model_copy(update=no_operation)}) for t in rule.to],
        "when": [c for c in rule.when if not _http_only_condition(c)],
    })  # fmt: skip


def rule_for_tcp(rule: Rule, action: str) -> Rule | None:
    """What ``rule`` of a policy with ``action`` means on a TCP connection (module docstring):
    None for an ALLOW rule with HTTP-only fields, the rule without them for DENY and AUDIT."""
    if not http_only_fields(rule):
        return rule
    return None if action == "ALLOW" else _strip(rule)


def network_filter(name: str, rules: dict[str, Any]) -> dict[str, Any]:
    """An Envoy network RBAC filter ``envoy.filters.network.rbac.<name>`` enforcing ``rules``
    (statistics under ``tcp.<name>.rbac.``, e.g. ``tcp.allow.rbac.denied``)."""
    return {
        "name": f"envoy.filters.network.rbac.{name}",
        "typed_config": {"@type": NETWORK_RBAC, "stat_prefix": f"tcp.{name}.", "rules": rules},
    }


def guard_tcp_chains(listener: dict[str, Any], filters: list[dict[str, Any]]) -> None:
    """Put (copies of) ``filters`` in front of every filter chain of ``listener`` that ends in
    ``tcp_proxy`` (in place; a no-op without filters)."""
    if not filters:
        return
    chains = [*listener.get("filter_chains", [])]
    if "default_filter_chain" in listener:
        chains.append(listener["default_filter_chain"])
    for chain in chains:
        current = chain.get("filters", [])
        if any(f.get("name") == TCP_PROXY_NAME for f in current):
            chain["filters"] = [*copy.deepcopy(filters), *current]
