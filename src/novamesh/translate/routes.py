"""RDS: the outbound route table, one virtual host per (service, HTTP port).

Istio semantics kept here:
- a VirtualService's ``http`` routes are evaluated in order, first match wins;
- conditions inside one match block are ANDed, match blocks are ORed (one Envoy route each);
- a host with no VirtualService gets a default route to its ``outbound|port||host`` cluster;
- short host names resolve relative to the namespace of the config that wrote them;
- domains for the client side follow the client's namespace (``reviews`` means the client's own
  namespace), so route tables are per namespace (a proxy class), not per proxy;
- a host the mesh does not know gets an immediate 404 from a catch-all virtual host.
"""

from __future__ import annotations

from typing import Any

from ..config.names import MESH_GATEWAY, outbound_cluster, resolve_gateway, resolve_host
from ..config.resource import Resource
from ..config.types import HTTPMatchRequest, HTTPRoute, StringMatch, VirtualServiceSpec
from ..config.types_mesh import MeshConfigSpec
from ..model.snapshot import MeshSnapshot, Service, ServicePort
from .cluster_policies import add_hash_policy
from .http_policies import keep_hashed_host
from .http_policies import with_action_policies, with_route_policies
from .mesh_defaults import mesh_spec

__all__ = ["OUTBOUND_ROUTE", "outbound_route_config", "domains_for", "NOT_FOUND_BODY", "vs_routes"]

OUTBOUND_ROUTE = "outbound"
NOT_FOUND_BODY = (
    "novamesh: no service in the mesh matches this request's host (route not found). "
    "Check the host name and port, and `novamesh get serviceentry` for external hosts.\n"
)


def domains_for(service: Service, port: ServicePort, client_namespace: str, suffix: str) -> list[str]:
    """Host header values that address ``service:port`` from a client in ``client_namespace``."""
    names: list[str] = [service.hostname]
    cluster_suffix = f".svc.{suffix}"
    if service.hostname.endswith(cluster_suffix):
        base = service.hostname[: -len(cluster_suffix)]  # name.ns
        name, _, ns = base.rpartition(".")
        names += [f"{base}.svc", base]
        if ns == client_namespace:
            names.append(name)
    out: list[str] = []
    portless = port.number == 80 or len([p for p in service.ports if p.is_http]) == 1
    for n in names:
        out.append(f"{n}:{port.number}")
        if portless:
            out.append(n)
    return out


def _string_matcher(m: StringMatch, ignore_case: bool = False) -> dict[str, Any]:
    out: dict[str, Any]
    if m.exact is not None:
        out = {"exact": m.exact}
    elif m.prefix is not None:
        out = {"prefix": m.prefix}
    else:
        out = {"safe_regex": {"regex": m.regex or ""}}
    if ignore_case and "safe_regex" not in out:
        out["ignore_case"] = True
    return out


def _header_matcher(name: str, m: StringMatch, invert: bool = False) -> dict[str, Any]:
    h: dict[str, Any] = {"name": name}
    if m.is_empty():
        h["present_match"] = True
    else:
        h["string_match"] = _string_matcher(m)
    if invert:
        h["invert_match"] = True
    return h


def _route_match(m: HTTPMatchRequest | None) -> dict[str, Any]:
    match: dict[str, Any] = {}
    if m is None or m.uri is None or m.uri.is_empty():
        match["prefix"] = "/"
    elif m.uri.exact is not None:
        match["path"] = m.uri.exact
    elif m.uri.prefix is not None:
        match["prefix"] = m.uri.prefix
    else:
        # Envoy's case_sensitive covers path and prefix only; Istio makes regexes
        # case-insensitive with RE2's (?i) flag.
        regex = m.uri.regex or ""
        match["safe_regex"] = {"regex": f"(?i){regex}" if m.ignore_uri_case else regex}
    if m is None:
        return match
    if m.ignore_uri_case and "safe_regex" not in match:
        match["case_sensitive"] = False
    headers: list[dict[str, Any]] = []
    for pseudo, sm in ((":method", m.method), (":authority", m.authority), (":scheme", m.scheme)):
        if sm is not None and not sm.is_empty():
            headers.append(_header_matcher(pseudo, sm))
    for name in sorted(m.headers):
        headers.append(_header_matcher(name, m.headers[name]))
    for name in sorted(m.without_headers):
        headers.append(_header_matcher(name, m.without_headers[name], invert=True))
    if headers:
        match["headers"] = headers
    if m.query_params:
        qps = []
        for name in sorted(m.query_params):
            sm = m.query_params[name]
            q: dict[str, Any] = {"name": name}
            if sm.is_empty():
                q["present_match"] = True
            else:
                q["string_match"] = _string_matcher(sm)
            qps.append(q)
        match["query_parameters"] = qps
    return match


def _dest_cluster(snapshot: MeshSnapshot, vs: Resource, host: str, subset: str | None, port: int | None, vhost_port: int) -> str:
    fqdn = resolve_host(host, vs.namespace, snapshot.domain_suffix)
    if port is None:
        svc = snapshot.services.get(fqdn)
        if svc is not None and len(svc.ports) == 1:
            port = svc.ports[0].number
        else:
            port = vhost_port
    return outbound_cluster(port, subset or "", fqdn)


def _route_action(snapshot: MeshSnapshot, vs: Resource, route: HTTPRoute, vhost_port: int) -> dict[str, Any]:
    dests = []
    for d in route.route:
        dest = d.destination
        cluster = _dest_cluster(snapshot, vs, dest.host, dest.subset, dest.port.number if dest.port else None, vhost_port)
        weight = 100 if d.weight is None else d.weight
        dests.append((cluster, weight))
    action: dict[str, Any] = {"timeout": "0s"}  # Istio: no route timeout unless configured
    live = [(c, w) for c, w in dests if w > 0] or dests[:1]
    if len(live) == 1:
        action["cluster"] = live[0][0]
    else:
        action["weighted_clusters"] = {"clusters": [{"name": c, "weight": w} for c, w in live]}
    add_hash_policy(snapshot, action)  # consistent hashing (DestinationRule loadBalancer)
    # timeout, retries, mirrors, destination headers (http_policies.py)
    action = with_action_policies(action, route, lambda d: _dest_cluster(snapshot, vs, d.host, d.subset, d.port.number if d.port else None, vhost_port), mesh_spec(snapshot))
    return action


def _vs_routes(snapshot: MeshSnapshot, vs: Resource, port: int, context: str = MESH_GATEWAY) -> list[dict[str, Any]]:
    """Routes of ``vs`` on ``port`` as seen from ``context``: ``mesh`` (sidecars) or the
    Gateway ``<namespace>/<name>``; a match block naming other ``gateways`` does not apply."""
    spec = vs.spec
    assert isinstance(spec, VirtualServiceSpec)
    routes: list[dict[str, Any]] = []
    for i, http in enumerate(spec.http):
        matches = [
            m for m in http.match
            if (m.port is None or m.port == port)
            and (not m.gateways or context in {resolve_gateway(g, vs.namespace) for g in m.gateways})
        ] if http.match else [None]  # fmt: skip
        if http.match and not matches:
            continue  # every match block is for another port
        action = _route_action(snapshot, vs, http, port)
        for j, m in enumerate(matches):
            name = http.name or f"{vs.namespace}/{vs.name}.http[{i}]"
            if m is not None and m.name:
                name = f"{name}.{m.name}"
            elif len(matches) > 1:
                name = f"{name}.match[{j}]"
            entry = {"name": name, "match": _route_match(m), "route": action}
            routes.append(with_route_policies(entry, http, m, port))  # rewrite, redirect, fault, cors, headers
    return routes


vs_routes = _vs_routes
"""Public name for the gateway translation (translate/gateway.py)."""


def _default_route(service: Service, port: ServicePort, mesh: MeshConfigSpec | None = None) -> dict[str, Any]:
    cluster = outbound_cluster(port.number, "", service.hostname)
    # Istio retries default routes too; the MeshConfig's timeout and retries apply here as well.
    action = with_action_policies({"cluster": cluster, "timeout": "0s"}, HTTPRoute(), lambda _: cluster, mesh)
    return {"name": "default", "match": {"prefix": "/"}, "route": action}


def outbound_route_config(snapshot: MeshSnapshot, client_namespace: str) -> dict[str, Any]:
    """The route table for every sidecar in ``client_namespace``."""
    vhosts: list[dict[str, Any]] = []
    used: set[str] = set()
    for svc in snapshot.services.values():
        for port in svc.ports:
            if not port.is_http:
                continue
            domains = [d for d in domains_for(svc, port, client_namespace, snapshot.domain_suffix) if d not in used]
            if not domains:
                continue
            used.update(domains)
            routes: list[dict[str, Any]] = []
            vss = snapshot.virtual_services_for(svc.hostname)
            if vss:
                routes = _vs_routes(snapshot, vss[0], port.number)
            if not routes:
                routes = [_default_route(svc, port, mesh_spec(snapshot))]
                add_hash_policy(snapshot, routes[0]["route"])  # consistent hashing without a VirtualService
                keep_hashed_host(routes[0]["route"])
            vhosts.append({"name": f"{svc.hostname}:{port.number}", "domains": domains, "routes": routes})
    vhosts.append(
        {
            "name": "not_found",
            "domains": ["*"],
            "routes": [
                {
                    "name": "not_found",
                    "match": {"prefix": "/"},
                    "direct_response": {"status": 404, "body": {"inline_string": NOT_FOUND_BODY}},
                }
            ],
        }
    )
    return {"name": OUTBOUND_ROUTE, "virtual_hosts": vhosts, "validate_clusters": False}
