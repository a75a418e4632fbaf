"""AuthorizationPolicy → Envoy RBAC filters: HTTP filters on a sidecar's inbound HTTP listeners
and on a gateway's HTTP listeners, network filters on a sidecar's inbound TCP listeners.

Istio's semantics, exactly:

* Policies apply to a workload when they live in the root namespace (``istio-system``: the whole
  mesh) or in the workload's namespace, and their ``selector`` (if any) matches its labels.
* Filters run in this order: ``jwt_authn`` (translate/jwt.py), AUDIT (RBAC ``LOG``: never
  denies), DENY, ALLOW. A request matching any DENY rule is refused before ALLOW is looked at.
* Once any ALLOW policy applies, requests matching none of its rules are refused: an ALLOW
  policy without rules contributes nothing, so alone it denies everything; ``rules: [{}]``
  matches every request. A DENY policy without rules denies nothing.
* A refused request gets Envoy's ``403 RBAC: access denied``.

Matching: Istio's exact / ``prefix*`` / ``*suffix`` / ``*`` (presence). Hosts match
case-insensitively with or without a port. Principals and namespaces come from the peer
certificate's URI SAN (``authenticated.principal_name``), so they only match mTLS callers;
request principals and claims come from the JWT payload that jwt_authn stores in metadata.

TCP ports follow Istio's rules for HTTP-only fields (:mod:`.authz_tcp`). Gateways are proxies
too: a policy whose selector matches a gateway's labels guards its HTTP listeners with the same
filters (:func:`apply_gateway_authz`), after the edge filter that strips the mesh's identity
headers. A gateway's connection manager trusts no ``x-forwarded-for`` hop
(``use_remote_address``, ``xff_num_trusted_hops: 0``), so there ``remoteIpBlocks`` and
``ipBlocks`` both see the connection's peer.

The resolved result for one proxy class is an :class:`AuthzPlan` (hashable, part of the class
key); ``translate_proxy`` inserts its filters with :func:`apply_authz`.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config.resource import Resource
from ..config.types_authz import AuthorizationPolicySpec, Condition, Operation, RequestAuthenticationSpec, Rule, Source
from ..config.types_mesh import MeshConfigSpec
from ..config._semantic_authz import parse_when_key
from ..model.snapshot import MeshSnapshot
from ..observe.envoy_config import EDGE_STRIP_FILTER
from .authz_tcp import guard_tcp_chains, network_filter, rule_for_tcp
from .jwt import AUDIENCE_AS_401, JWT_FILTER, jwt_clusters, jwt_filter

__all__ = [
    "AUTHZ_PLAN",
    "AuthzPlan",
    "NORMALIZATIONS",
    "DEFAULT_NORMALIZATION",
    "applying",
    "resolve_authz",
    "rbac_filters",
    "network_rbac_filters",
    "with_authz",
    "apply_authz",
    "apply_gateway_authz",
]

ROOT_NAMESPACE = "istio-system"
AUTHZ_PLAN = "novamesh/authz-plan"
"""Key of the plan in a class translation (consumed by translate_proxy, never sent)."""
RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
HCM_NAME = "envoy.filters.network.http_connection_manager"

NORMALIZATIONS: dict[str, dict[str, Any]] = {
    "NONE": {"normalize_path": False, "merge_slashes": False, "path_with_escaped_slashes_action": "KEEP_UNCHANGED"},
    "BASE": {"normalize_path": True, "merge_slashes": False, "path_with_escaped_slashes_action": "KEEP_UNCHANGED"},
    "MERGE_SLASHES": {"normalize_path": True, "merge_slashes": True, "path_with_escaped_slashes_action": "KEEP_UNCHANGED"},
    "DECODE_AND_MERGE_SLASHES": {"normalize_path": True, "merge_slashes": True, "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD"},
}
"""Istio's MeshConfig ``pathNormalization.normalization`` options → HCM fields (Istio's mapping)."""

DEFAULT_NORMALIZATION = "DECODE_AND_MERGE_SLASHES"
"""Used on inbound listeners a policy guards when MeshConfig does not say (stricter than Istio's
BASE: with BASE, ``/admin%2Fx`` escapes ``paths: [/admin/*]`` and reaches a backend that
decodes it as ``/admin/x``)."""


@dataclass(frozen=True)
class AuthzPlan:
    """What the policies applying to a proxy class add: HTTP filters, network filters for TCP
    chains and clusters (JSON text, so the plan is hashable) and the path normalization of its
    inbound HCMs ("" = unchanged)."""

    filters: str = "[]"
    clusters: str = "{}"
    normalization: str = ""
    network_filters: str = "[]"

    @property
    def empty(self) -> bool:
        return self.filters == "[]" and self.network_filters == "[]" and not self.normalization


def _selects(res: Resource, namespace: str, labels: Mapping[str, str]) -> bool:
    if res.namespace not in (ROOT_NAMESPACE, namespace):
        return False
    selector = getattr(res.spec, "selector", None)
    match = selector.match_labels if selector is not None else {}
    return all(labels.get(k) == v for k, v in match.items())


def applying(resources: Sequence[Resource], namespace: str, labels: Mapping[str, str]) -> list[Resource]:
    """The resources (AuthorizationPolicy or RequestAuthentication) applying to a workload."""
    return [r for r in resources if _selects(r, namespace, labels)]


# --- string matching ----------------------------------------------------------------------------

def _string(value: str, *, ignore_case: bool = False) -> dict[str, Any]:
    """Istio's value syntax as an Envoy StringMatcher."""
    out: dict[str, Any]
    if value == "*":
        out = {"safe_regex": {"regex": ".+"}}
    elif value.endswith("*"):
        out = {"prefix": value[:-1]}
    elif value.startswith("*"):
        out = {"suffix": value[1:]}
    else:
        out = {"exact": value}
    if ignore_case and "safe_regex" not in out:
        out["ignore_case"] = True
    return out


def _glob_regex(value: str) -> str:
    return ".*".join(re.escape(part) for part in value.split("*"))


def _or(items: list[dict[str, Any]], principal: bool) -> dict[str, Any]:
    if len(items) == 1:
        return items[0]
    return {"or_ids": {"ids": items}} if principal else {"or_rules": {"rules": items}}


def _and(items: list[dict[str, Any]], principal: bool) -> dict[str, Any]:
    if not items:
        return {"any": True}
    if len(items) == 1:
        return items[0]
    return {"and_ids": {"ids": items}} if principal else {"and_rules": {"rules": items}}


def _not(item: dict[str, Any], principal: bool) -> dict[str, Any]:
    return {"not_id": item} if principal else {"not_rule": item}


def _cidr(value: str) -> dict[str, Any]:
    net = ipaddress.ip_network(value, strict=False)
    return {"address_prefix": str(net.network_address), "prefix_len": net.prefixlen}


def _header(name: str, value: str) -> dict[str, Any]:
    if value == "*":
        return {"header": {"name": name, "present_match": True}}
    return {"header": {"name": name, "string_match": _string(value)}}


def _host(value: str) -> dict[str, Any]:
    """``:authority`` case-insensitively, with or without ``:port``."""
    regex = "(?i)" + (".+" if value == "*" else _glob_regex(value)) + "(:[0-9]+)?"
    return {"header": {"name": ":authority", "string_match": {"safe_regex": {"regex": regex}}}}


def _principal_name(value: str) -> dict[str, Any]:
    spiffe = value if value == "*" or value.startswith("*") else "spiffe://" + value
    return {"authenticated": {"principal_name": _string(spiffe)}}


def _namespace(value: str) -> dict[str, Any]:
    ns = "[^/]+" if value == "*" else _glob_regex(value).replace(".*", "[^/]*")
    return {"authenticated": {"principal_name": {"safe_regex": {"regex": f"spiffe://[^/]+/ns/{ns}/sa/[^/]+"}}}}


def _claim(path: Sequence[str], value: str) -> dict[str, Any]:
    """A JWT claim (string, or list containing the value) from jwt_authn's payload metadata."""
    keys = [{"key": "payload"}, *({"key": k} for k in path)]

    def meta(matcher: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"filter": JWT_FILTER, "path": keys, "value": matcher}}

    if value == "*":
        return meta({"present_match": True})
    string = {"string_match": _string(value)}
    return {"or_ids": {"ids": [meta(string), meta({"list_match": {"one_of": string}})]}}


def _request_principal(value: str) -> dict[str, Any]:
    """``<iss>/<sub>`` (split at the last ``/``; ``*`` in either part as Istio allows)."""
    if value == "*":
        return _claim(["iss"], "*")
    if value.endswith("/*"):
        return _claim(["iss"], value[:-2])
    if value.startswith("*/"):
        return _claim(["sub"], value[2:])
    if "/" not in value:
        return _claim(["iss"], value)
    iss, _, sub = value.rpartition("/")
    return {"and_ids": {"ids": [_claim(["iss"], iss), _claim(["sub"], sub)]}}


# --- rule translation ---------------------------------------------------------------------------

def _field(values: list[str] | None, negated: list[str] | None, make: Any, principal: bool) -> list[dict[str, Any]]:
    out = []
    if values:
        out.append(_or([make(v) for v in values], principal))
    if negated:
        out.append(_not(_or([make(v) for v in negated], principal), principal))
    return out


def _source(src: Source) -> dict[str, Any]:
    ids: list[dict[str, Any]] = []
    ids += _field(src.principals, src.not_principals, _principal_name, True)
    ids += _field(src.request_principals, src.not_request_principals, _request_principal, True)
    ids += _field(src.namespaces, src.not_namespaces, _namespace, True)
    ids += _field(src.ip_blocks, src.not_ip_blocks, lambda v: {"direct_remote_ip": _cidr(v)}, True)
    ids += _field(src.remote_ip_blocks, src.not_remote_ip_blocks, lambda v: {"remote_ip": _cidr(v)}, True)
    return _and(ids, True)


def _operation(op: Operation) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    rules += _field(op.hosts, op.not_hosts, _host, False)
    rules += _field(op.ports, op.not_ports, lambda v: {"destination_port": int(v)}, False)
    rules += _field(op.methods, op.not_methods, lambda v: _header(":method", v), False)
    rules += _field(op.paths, op.not_paths, lambda v: {"url_path": {"path": _string(v)}}, False)
    return _and(rules, False)


def _condition(cond: Condition) -> tuple[bool, dict[str, Any]]:
    """(is a principal, matcher) for one ``when`` entry."""
    parsed = parse_when_key(cond.key)
    assert parsed is not None, cond.key  # rejected by validation
    base, args = parsed
    makers: dict[str, tuple[bool, Any]] = {
        "request.headers": (True, lambda v: _header(args[0], v)),
        "source.ip": (True, lambda v: {"direct_remote_ip": _cidr(v)}),
        "remote.ip": (True, lambda v: {"remote_ip": _cidr(v)}),
        "source.namespace": (True, _namespace),
        "source.principal": (True, _principal_name),
        "request.auth.principal": (True, _request_principal),
        "request.auth.audiences": (True, lambda v: _claim(["aud"], v)),
        "request.auth.presenter": (True, lambda v: _claim(["azp"], v)),
        "request.auth.claims": (True, lambda v: _claim(args, v)),
        "destination.ip": (False, lambda v: {"destination_ip": _cidr(v)}),
        "destination.port": (False, lambda v: {"destination_port": int(v)}),
        "connection.sni": (False, lambda v: {"requested_server_name": _string(v)}),
    }
    principal, make = makers[base]
    return principal, _and(_field(cond.values, cond.not_values, make, principal), principal)


def _policy(rule: Rule) -> dict[str, Any]:
    """One rule → an Envoy RBAC Policy: permissions (to, destination conditions) AND principals
    (from, source conditions)."""
    principals = [_or([_source(f.source) for f in rule.from_], True)] if rule.from_ else []
    permissions = [_or([_operation(t.operation) for t in rule.to], False)] if rule.to else []
    for cond in rule.when:
        is_principal, matcher = _condition(cond)
        (principals if is_principal else permissions).append(matcher)
    return {"permissions": [_and(permissions, False)], "principals": [_and(principals, True)]}


_ACTIONS = (("AUDIT", "LOG", "audit"), ("DENY", "DENY", "deny"), ("ALLOW", "ALLOW", "allow"))
"""Istio action, Envoy RBAC action, filter name suffix — in the order the filters run."""


def _rules(policies: Sequence[Resource], *, tcp: bool) -> list[tuple[str, dict[str, Any]]]:
    """(filter name suffix, Envoy RBAC ``rules``) per action some policy has, in filter order.
    DENY and AUDIT without any rule are left out (they match nothing); ALLOW is kept even then
    (it denies everything its rules do not allow). ``tcp``: rules as a connection sees them."""
    by_action: dict[str, dict[str, Any]] = {}
    for res in policies:
        spec = res.spec
        assert isinstance(spec, AuthorizationPolicySpec)
        bucket = by_action.setdefault(spec.action, {})
        for i, rule in enumerate(spec.rules):
            effective = rule_for_tcp(rule, spec.action) if tcp else rule
            if effective is not None:
                bucket[f"ns[{res.namespace}]-policy[{res.name}]-rule[{i}]"] = _policy(effective)
    out = []
    for action, envoy_action, name in _ACTIONS:
        if action not in by_action or (action != "ALLOW" and not by_action[action]):
            continue
        out.append((name, {"action": envoy_action, "policies": dict(sorted(by_action[action].items()))}))
    return out


def rbac_filters(policies: Sequence[Resource]) -> list[dict[str, Any]]:
    """The RBAC HTTP filters (AUDIT, DENY, ALLOW; each only when some policy has that action).

    The AUDIT filter (RBAC ``LOG``) never denies; it marks a matched request in the dynamic
    metadata ``envoy.common: access_log_hint`` and, with per-rule statistics, counts it under
    ``http.<listener>.rbac.policy.ns[<ns>]-policy[<name>]-rule[<i>].allowed`` (this Envoy has no
    ``rbac.logged`` counter: its ``rbac.allowed`` counts every request the AUDIT filter passes)."""
    out = []
    for name, rules in _rules(policies, tcp=False):
        config: dict[str, Any] = {"@type": RBAC, "rules": rules}
        if name == "audit":
            config["track_per_rule_stats"] = True
        out.append({"name": f"envoy.filters.http.rbac.{name}", "typed_config": config})
    return out


def network_rbac_filters(policies: Sequence[Resource]) -> list[dict[str, Any]]:
    """The RBAC network filters for TCP chains (AUDIT, DENY, ALLOW), HTTP-only fields handled as
    Istio does (:mod:`.authz_tcp`)."""
    return [network_filter(name, rules) for name, rules in _rules(policies, tcp=True)]


def _mesh_normalization(snapshot: MeshSnapshot) -> str:
    """MeshConfig ``pathNormalization.normalization`` ("" when unset or DEFAULT)."""
    spec = getattr(snapshot.mesh_config, "spec", None)
    if isinstance(spec, MeshConfigSpec) and spec.path_normalization is not None:
        value = spec.path_normalization.normalization
        return "" if value == "DEFAULT" else value
    return ""


def resolve_authz(snapshot: MeshSnapshot, namespace: str, labels: Mapping[str, str]) -> AuthzPlan:
    """Resolve the security policies for a workload (pure)."""
    policies = applying(snapshot.authorization_policies, namespace, labels)
    authns = applying(snapshot.request_authentications, namespace, labels)
    filters: list[dict[str, Any]] = []
    clusters: dict[str, dict[str, Any]] = {}
    if authns:
        rules = [r for res in authns if isinstance(res.spec, RequestAuthenticationSpec) for r in res.spec.jwt_rules]
        filters.append(jwt_filter(rules))
        clusters.update(jwt_clusters(rules))
    filters += rbac_filters(policies)
    normalization = _mesh_normalization(snapshot) or snapshot.path_normalization.upper()
    if normalization not in NORMALIZATIONS:  # unset (or a typo in the setting): the safe default
        normalization = DEFAULT_NORMALIZATION if filters else ""
    network = network_rbac_filters(policies)
    return AuthzPlan(json.dumps(filters, sort_keys=True), json.dumps(clusters, sort_keys=True), normalization,
                     json.dumps(network, sort_keys=True))


def with_authz(resources: dict[str, dict[str, dict[str, Any]]], plan: AuthzPlan) -> dict[str, dict[str, dict[str, Any]]]:
    """``resources`` with ``plan`` recorded under :data:`AUTHZ_PLAN` (when it does anything)."""
    if not plan.empty:
        resources[AUTHZ_PLAN] = {"plan": {"plan": plan}}
    return resources


def _guard_hcm(hcm: dict[str, Any], plan: AuthzPlan, after: str) -> None:
    """Insert the plan's HTTP filters into one HCM (after the filter named ``after``, else
    first), with the JWT 401 reply and the plan's path normalization."""
    filters = json.loads(plan.filters)
    current = hcm.get("http_filters", [])
    at = next((i + 1 for i, f in enumerate(current) if after and f.get("name") == after), 0)
    hcm["http_filters"] = [*current[:at], *filters, *current[at:]]
    if any(f["name"] == JWT_FILTER for f in filters) and "local_reply_config" not in hcm:
        hcm["local_reply_config"] = copy.deepcopy(AUDIENCE_AS_401)
    if plan.normalization:
        hcm.update(NORMALIZATIONS[plan.normalization])


def _guard(listener: dict[str, Any], plan: AuthzPlan, after: str = "") -> None:
    guard_tcp_chains(listener, json.loads(plan.network_filters))
    for chain in listener.get("filter_chains", []):
        for f in chain.get("filters", []):
            if f.get("name") == HCM_NAME:
                _guard_hcm(f["typed_config"], plan, after)


def apply_authz(class_resources: Mapping[str, Mapping[str, Mapping[str, Any]]],
                clusters: dict[str, dict[str, Any]], listeners: dict[str, dict[str, Any]]) -> None:
    """Insert (in place) the plan's filters into every inbound listener of a sidecar: HTTP
    filters at the front of each HCM (with its path normalization), network RBAC filters in
    front of each ``tcp_proxy``; and add the JWKS clusters. Order-independent of
    ``secure_inbound_all``: every filter chain present is guarded."""
    plan = class_resources.get(AUTHZ_PLAN, {}).get("plan", {}).get("plan")
    if not isinstance(plan, AuthzPlan):
        return
    clusters.update(json.loads(plan.clusters))
    for listener in listeners.values():
        if listener.get("traffic_direction") == "INBOUND":
            _guard(listener, plan)


def apply_gateway_authz(plan: AuthzPlan, clusters: dict[str, dict[str, Any]], listeners: dict[str, dict[str, Any]]) -> None:
    """Guard (in place) a gateway's listeners with the policies selecting it: its HCMs get the
    HTTP filters right after the edge identity-header strip. Nothing (not even a MeshConfig path
    normalization) changes unless some AuthorizationPolicy or RequestAuthentication applies:
    a gateway keeps its edge defaults otherwise."""
    if plan.filters == "[]":
        return
    clusters.update(json.loads(plan.clusters))
    for listener in listeners.values():
        _guard(listener, plan, after=EDGE_STRIP_FILTER)
