"""Per-route policies of a VirtualService HTTP route, as Envoy route fields. Pure functions.

:mod:`.routes` builds a route's match and its destinations; the two hooks here add the rest:

- :func:`with_action_policies` (on the ``RouteAction``): ``timeout``, ``retries`` (or Istio's
  default retry policy), ``mirror``/``mirrors``, destination-level ``headers``;
- :func:`with_route_policies` (on the ``Route``, per match block because a prefix rewrite
  depends on the matched prefix): ``rewrite``, ``redirect``/``directResponse`` (replacing the
  action), route-level ``headers``, and ``fault``/``corsPolicy`` as per-route configs of the
  fault and CORS filters (:data:`POLICY_FILTERS`, placed before the router in every HCM).

Istio semantics kept: no route timeout unless set; without ``retries`` Istio's default policy
applies (:data:`DEFAULT_RETRY_POLICY`) and ``attempts: 0`` disables retries; a bare status code
in ``retryOn`` becomes a retriable status code; percentages become Envoy fractions per million;
``mirrorPercentage`` and ``mirrors[].percentage`` default to 100%; setting the ``host`` header
rewrites the authority (Envoy cannot add it as a header). One improvement over Istio: a prefix
match without a trailing slash rewritten to ``/`` uses a regex rewrite, so ``/api/x`` becomes
``/x`` and not ``//x``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from ..config._semantic_http import GRPC_STATUS_CODES
from ..config.base import Destination, Percent, parse_duration
from ..config.types import HTTPMatchRequest, HTTPRoute
from ..config.types_mesh import MeshConfigSpec
from ..config.types_http import (
    CorsPolicy,
    HeaderOperations,
    Headers,
    HTTPFaultInjection,
    HTTPRedirect,
    HTTPRetry,
)
from .common import duration, typed

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "POLICY_FILTERS",
    "default_retry_policy",
    "retry_policy",
    "with_action_policies",
    "with_route_policies",
]

ClusterOf = Callable[[Destination], str]
"""Resolves a destination (host, subset, port) to its outbound cluster name."""

FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
_FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
_CORS_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
_CORS_POLICY_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
_PREVIOUS_HOSTS_TYPE = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
_PREVIOUS_PRIORITIES_TYPE = "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig"

POLICY_FILTERS: tuple[dict[str, Any], ...] = (
    # CORS first: a browser's preflight is answered by policy, never delayed or aborted by a
    # fault meant for the real requests.
    {"name": CORS_FILTER, "typed_config": typed(_CORS_TYPE)},
    # Without a per-route config the fault filter injects nothing.
    {"name": FAULT_FILTER, "typed_config": typed(_FAULT_TYPE)},
)
"""HTTP filters the per-route policies need, in order; the router filter goes after them."""

_PREVIOUS_HOSTS = {"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": typed(_PREVIOUS_HOSTS_TYPE)}

DEFAULT_RETRY_POLICY: dict[str, Any] = {
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2,
    "retriable_status_codes": [503],
    "retry_host_predicate": [_PREVIOUS_HOSTS],
    "host_selection_retry_max_attempts": 5,
}
"""Istio's mesh-wide default retry policy, used for every route without ``retries`` (and for the
default route of a service without a VirtualService) unless the MeshConfig sets
``defaultHttpRetryPolicy`` (see mesh_defaults.py)."""

_REDIRECT_CODES = {301: "MOVED_PERMANENTLY", 302: "FOUND", 303: "SEE_OTHER", 307: "TEMPORARY_REDIRECT", 308: "PERMANENT_REDIRECT"}


def default_retry_policy() -> dict[str, Any]:
    """A fresh copy of :data:`DEFAULT_RETRY_POLICY` (callers may extend it). Built by hand, not
    with ``copy.deepcopy``: every route of every class gets one, and deepcopy was a third of a
    1000-service translation."""
    d = DEFAULT_RETRY_POLICY
    return {
        "retry_on": d["retry_on"],
        "num_retries": d["num_retries"],
        "retriable_status_codes": list(d["retriable_status_codes"]),
        "retry_host_predicate": [{"name": h["name"], "typed_config": dict(h["typed_config"])} for h in d["retry_host_predicate"]],
        "host_selection_retry_max_attempts": d["host_selection_retry_max_attempts"],
    }


def _fraction(percent: Percent | None) -> dict[str, Any]:
    value = 100.0 if percent is None else percent.value
    return {"numerator": round(value * 10_000), "denominator": "MILLION"}


def _duration(text: str) -> str:
    return duration(parse_duration(text))


def retry_policy(retries: HTTPRetry | None, mesh_default: HTTPRetry | None = None) -> dict[str, Any] | None:
    """The Envoy ``RetryPolicy`` for a route's ``retries`` (None: no retries at all); a route
    without ``retries`` gets the MeshConfig's ``defaultHttpRetryPolicy``, else Istio's default."""
    retries = retries if retries is not None else mesh_default
    if retries is None:
        return default_retry_policy()
    if not retries.attempts:
        return None  # attempts: 0 turns retries off, as in Istio
    out = default_retry_policy()
    out["num_retries"] = retries.attempts
    if retries.retry_on is not None:
        conditions: list[str] = []
        codes: list[int] = []
        for item in (part.strip() for part in retries.retry_on.split(",")):
            if item.isdigit():
                codes.append(int(item))
            elif item and item not in conditions:
                conditions.append(item)
        if codes and "retriable-status-codes" not in conditions:
            conditions.append("retriable-status-codes")
        out["retry_on"] = ",".join(conditions)
        out["retriable_status_codes"] = sorted(set(codes))
        if not codes:
            del out["retriable_status_codes"]
    if retries.per_try_timeout is not None:
        out["per_try_timeout"] = _duration(retries.per_try_timeout)
    if retries.retry_remote_localities:
        out["retry_priority"] = {
            "name": "envoy.retry_priorities.previous_priorities",
            "typed_config": typed(_PREVIOUS_PRIORITIES_TYPE, update_frequency=retries.attempts + 1),
        }
    return out


def _header_ops(ops: HeaderOperations | None) -> tuple[list[dict[str, Any]], list[str], str | None]:
    """Envoy headers_to_add and headers_to_remove, plus an authority from ``set: {host: ...}``."""
    if ops is None:
        return [], [], None
    add: list[dict[str, Any]] = []
    authority: str | None = None
    for name in sorted(ops.set):
        if name.lower() in ("host", ":authority"):
            authority = ops.set[name]
            continue
        add.append({"header": {"key": name.lower(), "value": ops.set[name]}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
    for name in sorted(ops.add):
        add.append({"header": {"key": name.lower(), "value": ops.add[name]}, "append_action": "APPEND_IF_EXISTS_OR_ADD"})
    return add, sorted({n.lower() for n in ops.remove}), authority


def _header_fields(headers: Headers | None) -> tuple[dict[str, Any], str | None]:
    """Envoy's four header fields (only the non-empty ones) and the authority to rewrite to."""
    if headers is None:
        return {}, None
    fields: dict[str, Any] = {}
    req_add, req_remove, authority = _header_ops(headers.request)
    resp_add, resp_remove, _ = _header_ops(headers.response)
    for key, value in (
        ("request_headers_to_add", req_add),
        ("request_headers_to_remove", req_remove),
        ("response_headers_to_add", resp_add),
        ("response_headers_to_remove", resp_remove),
    ):
        if value:
            fields[key] = value
    return fields, authority


def _merge_headers(target: dict[str, Any], fields: dict[str, Any]) -> None:
    for key, value in fields.items():
        if key.endswith("_to_remove"):
            target[key] = sorted(set(target.get(key, [])) | set(value))
        else:
            target[key] = [*target.get(key, []), *value]


def keep_hashed_host(action: dict[str, Any]) -> None:
    """With consistent hashing, retries must not be steered away from the hashed host: drop the
    previous-hosts predicate (Istio does the same). Call after both hash and retry policy are set."""
    policy = action.get("retry_policy")
    if "hash_policy" in action and isinstance(policy, dict):
        for key in ("retry_host_predicate", "host_selection_retry_max_attempts"):
            policy.pop(key, None)


def with_action_policies(
    action: dict[str, Any], route: HTTPRoute, cluster_of: ClusterOf, mesh: MeshConfigSpec | None = None
) -> dict[str, Any]:
    """``action`` (an Envoy RouteAction) with the route's timeout, retries, mirrors and
    destination-level headers; ``mesh`` supplies the timeout and retries a route leaves unset."""
    timeout = route.timeout if route.timeout is not None else (mesh.default_http_timeout if mesh is not None else None)
    if timeout is not None:
        action["timeout"] = _duration(timeout)
    policy = retry_policy(route.retries, mesh.default_http_retry_policy if mesh is not None else None)
    if policy is not None:
        action["retry_policy"] = policy
        keep_hashed_host(action)
    mirrors = [(route.mirror, route.mirror_percentage)] if route.mirror is not None else []
    mirrors += [(m.destination, m.percentage) for m in route.mirrors]
    if mirrors:
        action["request_mirror_policies"] = [
            {"cluster": cluster_of(dest), **({"runtime_fraction": {"default_value": _fraction(pct)}} if pct is not None else {})}
            for dest, pct in mirrors
        ]
    if route.rewrite is not None and route.rewrite.authority is not None:
        action["host_rewrite_literal"] = route.rewrite.authority
    weighted = action.get("weighted_clusters", {}).get("clusters")
    for dest in route.route:
        fields, authority = _header_fields(dest.headers)
        if not fields and authority is None:
            continue
        if weighted is None:
            continue  # one live destination: with_route_policies puts its headers on the route
        cluster = cluster_of(dest.destination)
        entry = next((c for c in weighted if c["name"] == cluster), None)
        if entry is None:
            continue  # a weight-0 destination gets no traffic
        entry.update(fields)
        if authority is not None:
            entry["host_rewrite_literal"] = authority
    return action


def _prefix_of(match: HTTPMatchRequest | None) -> str | None:
    if match is None or match.uri is None or match.uri.is_empty():
        return "/"
    return match.uri.prefix


def _rewrite(entry: dict[str, Any], route: HTTPRoute, match: HTTPMatchRequest | None) -> None:
    rewrite = route.rewrite
    if rewrite is None:
        return
    action = entry["route"]
    if rewrite.uri_regex_rewrite is not None:
        action["regex_rewrite"] = {"pattern": {"regex": rewrite.uri_regex_rewrite.match}, "substitution": rewrite.uri_regex_rewrite.rewrite}
    elif rewrite.uri is not None:
        prefix = _prefix_of(match)
        if rewrite.uri == "/" and prefix not in (None, "/") and not prefix.endswith("/"):
            # Envoy would turn /api/x into //x; swallow the slashes after the prefix instead.
            case = "(?i)" if match is not None and match.ignore_uri_case else ""
            action["regex_rewrite"] = {"pattern": {"regex": f"^{case}{re.escape(prefix)}/*"}, "substitution": "/"}
        else:
            action["prefix_rewrite"] = rewrite.uri


def _redirect(redirect: HTTPRedirect, port: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if redirect.uri is not None:
        out["path_redirect"] = redirect.uri
    if redirect.authority is not None:
        out["host_redirect"] = redirect.authority
    if redirect.port is not None:
        out["port_redirect"] = redirect.port
    elif redirect.derive_port == "FROM_REQUEST_PORT":
        # Envoy cannot copy the request's port, but this route only serves ``port``.
        out["port_redirect"] = port
    if redirect.scheme is not None:
        out["scheme_redirect"] = redirect.scheme.lower()
    code = redirect.redirect_code or 301
    if code != 301:
        out["response_code"] = _REDIRECT_CODES[code]
    return out


def _fault(fault: HTTPFaultInjection) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if fault.delay is not None and fault.delay.fixed_delay is not None:
        out["delay"] = {"fixed_delay": _duration(fault.delay.fixed_delay), "percentage": _fraction(fault.delay.percentage)}
    if fault.abort is not None:
        abort: dict[str, Any] = {"percentage": _fraction(fault.abort.percentage)}
        if fault.abort.grpc_status is not None:
            abort["grpc_status"] = GRPC_STATUS_CODES[fault.abort.grpc_status]
        else:
            abort["http_status"] = fault.abort.http_status
        out["abort"] = abort
    return typed(_FAULT_TYPE, **out)


def _cors(cors: CorsPolicy) -> dict[str, Any]:
    out: dict[str, Any] = {}
    origins: list[dict[str, Any]] = []
    for origin in cors.allow_origins:
        if origin.exact is not None:
            origins.append({"exact": origin.exact})
        elif origin.prefix is not None:
            origins.append({"prefix": origin.prefix})
        elif origin.regex is not None:
            origins.append({"safe_regex": {"regex": origin.regex}})
    if origins:
        out["allow_origin_string_match"] = origins
    for key, values in (("allow_methods", cors.allow_methods), ("allow_headers", cors.allow_headers), ("expose_headers", cors.expose_headers)):
        if values:
            out[key] = ",".join(values)
    if cors.max_age is not None:
        out["max_age"] = str(int(parse_duration(cors.max_age)))
    if cors.allow_credentials is not None:
        out["allow_credentials"] = cors.allow_credentials
    return typed(_CORS_POLICY_TYPE, **out)


def with_route_policies(entry: dict[str, Any], route: HTTPRoute, match: HTTPMatchRequest | None, port: int) -> dict[str, Any]:
    """``entry`` (an Envoy Route for one match block, with its ``route`` action) with the
    route-level policies; the action is copied before it is changed (match blocks share it)."""
    entry = {**entry, "route": copy.deepcopy(entry["route"])}
    if route.redirect is not None:
        del entry["route"]
        entry["redirect"] = _redirect(route.redirect, port)
    elif route.direct_response is not None:
        del entry["route"]
        response: dict[str, Any] = {"status": route.direct_response.status}
        body = route.direct_response.body
        if body is not None and body.text is not None:
            response["body"] = {"inline_string": body.text}
        elif body is not None and body.data is not None:
            response["body"] = {"inline_bytes": body.data}
        entry["direct_response"] = response
    else:
        _rewrite(entry, route, match)
    fields, authority = _header_fields(route.headers)
    if "route" in entry and "cluster" in entry["route"] and route.route:
        # One live destination (as routes.py picks it): Istio applies its headers to the route.
        live = [d for d in route.route if d.weight is None or d.weight > 0] or route.route[:1]
        dest_fields, dest_authority = _header_fields(live[0].headers)
        _merge_headers(fields, dest_fields)  # destination after route: its `set` wins
        authority = dest_authority or authority
    entry.update(fields)
    if authority is not None and "route" in entry and "host_rewrite_literal" not in entry["route"]:
        entry["route"]["host_rewrite_literal"] = authority
    per_filter: dict[str, Any] = {}
    if route.fault is not None:
        per_filter[FAULT_FILTER] = _fault(route.fault)
    if route.cors_policy is not None:
        per_filter[CORS_FILTER] = _cors(route.cors_policy)
    if per_filter:
        entry["typed_per_filter_config"] = per_filter
    return entry
