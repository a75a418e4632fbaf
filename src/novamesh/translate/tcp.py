"""Outbound TCP, TLS and gRPC for apps without traffic capture, and the outbound traffic policy.

How an app reaches a non-HTTP service in local mode (docs/getting-started.md, "TCP, TLS and
gRPC services"):

- **TCP and TLS ports** get a local listener on the workload's own address at the service port:
  ``mysql:3306`` is ``$NOVAMESH_ADDRESS:3306``. Plain TCP carries no host name, so one TCP
  service owns a port: the client's own namespace first, then by host name (Istio does the same
  for TCP services without a VIP: first wins). TLS ports use SNI, so several TLS services share
  a port: a ``tls_inspector`` reads the SNI and a filter chain per SNI host picks the service
  (``tls`` routes of VirtualServices first). No listener is opened where it could not bind or
  would clash: ports below 1024 (an unprivileged Envoy cannot bind them, and one failed bind
  makes Envoy reject the whole listener update), Envoy's and novamesh's 15000-15099, and the
  workload's own service and app ports.
- **CONNECT** on the outbound HTTP proxy (``$NOVAMESH_ADDRESS:15001``) reaches every TCP and
  TLS service port (``CONNECT mysql:3306``), including the ports above that have no listener.
- **gRPC and HTTP/2**: grpcio honours ``http_proxy`` by sending ``CONNECT reviews:9080`` to the
  proxy, so ``grpc.insecure_channel("reviews:9080")`` works unchanged. The CONNECT is
  terminated and its bytes (HTTP/2) are fed back into the same outbound listener through the
  ``outbound_loop`` cluster, where they are routed per request by ``:authority`` like any HTTP
  request — VirtualService ``http`` routes, weights and retries apply to each gRPC call rather
  than once per connection.

Outbound traffic policy: REGISTRY_ONLY answers unknown hosts from the catch-all virtual host;
ALLOW_ANY sends them to ``PassthroughCluster`` (Istio's name), a dynamic forward proxy that
resolves the requested host itself.

Listeners made here are class-level templates bound to ``0.0.0.0``; :func:`bind_to_proxy` puts
them on the proxy's address, drops the clashing ones and adds the per-proxy loop cluster.
"""

from __future__ import annotations

import copy
from typing import Any

from ..config.names import outbound_cluster, resolve_host
from ..config.resource import Resource
from ..config.types import VirtualServiceSpec
from ..config.types_sidecar import RouteDestination, TCPRoute, TLSRoute
from ..model.proxy import Proxy
from ..observe.envoy_config import add_tcp_telemetry
from ..model.snapshot import MeshSnapshot, Service, ServicePort
from .common import T, duration, socket_address, typed
from .routes import domains_for

__all__ = [
    "L4_PROTOCOLS",
    "LOOP_CLUSTER",
    "PASSTHROUGH_CLUSTER",
    "add_l4",
    "bind_to_proxy",
    "listener_port_usable",
]

TLS_PROTOCOLS = frozenset({"TLS", "HTTPS"})
L4_PROTOCOLS = frozenset({"TCP", "MONGO"}) | TLS_PROTOCOLS
"""Port protocols proxied as opaque TCP (TLS ones routed by SNI)."""

CONNECT_PROTOCOLS = frozenset({"GRPC", "HTTP2"})
"""HTTP ports whose virtual hosts also accept CONNECT (grpcio's way through an HTTP proxy)."""

LOOP_CLUSTER = "outbound_loop"
PASSTHROUGH_CLUSTER = "PassthroughCluster"
TEMPLATE_ADDRESS = "0.0.0.0"
RESERVED_PORTS = range(15000, 15100)
DNS_CACHE = {"name": "novamesh_passthrough_dns", "dns_lookup_family": "V4_PREFERRED"}
DFP_CLUSTER_TYPE = "type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig"
DFP_FILTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig"
TLS_INSPECTOR = {
    "name": "envoy.filters.listener.tls_inspector",
    "typed_config": typed("type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"),
}
_CONNECT = [{"upgrade_type": "CONNECT", "connect_config": {}}]


def listener_port_usable(port: int) -> bool:
    """Whether a local outbound listener may be opened on ``port`` (see the module docstring)."""
    return port >= 1024 and port not in RESERVED_PORTS


# -- routes of TCP / TLS ------------------------------------------------------------------


def _vs_spec(snapshot: MeshSnapshot, svc: Service) -> tuple[Resource, VirtualServiceSpec] | None:
    vss = snapshot.virtual_services_for(svc.hostname)
    if not vss:
        return None
    spec = vss[0].spec
    assert isinstance(spec, VirtualServiceSpec)
    return vss[0], spec


def _clusters(snapshot: MeshSnapshot, vs: Resource, route: list[RouteDestination], port: int) -> list[tuple[str, int]]:
    out = []
    for d in route:
        fqdn = resolve_host(d.destination.host, vs.namespace, snapshot.domain_suffix)
        number = d.destination.port.number if d.destination.port else None
        if number is None:
            target = snapshot.services.get(fqdn)
            number = target.ports[0].number if target is not None and len(target.ports) == 1 else port
        out.append((outbound_cluster(number, d.destination.subset or "", fqdn), 100 if d.weight is None else d.weight))
    live = [(c, w) for c, w in out if w > 0]
    return live or out[:1]


def _tcp_destinations(snapshot: MeshSnapshot, svc: Service, port: int, client_ns: str) -> list[tuple[str, int]]:
    found = _vs_spec(snapshot, svc)
    if found is not None:
        vs, spec = found
        for route in spec.tcp:
            if _l4_applies(route, port, client_ns):
                return _clusters(snapshot, vs, route.route, port)
    return [(outbound_cluster(port, "", svc.hostname), 100)]


def _l4_applies(route: TCPRoute | TLSRoute, port: int, client_ns: str) -> bool:
    if not route.match:
        return True
    return any((m.port is None or m.port == port) and m.source_namespace in (None, client_ns) for m in route.match)


def _sni_routes(snapshot: MeshSnapshot, svc: Service, port: int, client_ns: str) -> list[tuple[list[str], list[tuple[str, int]]]]:
    """(SNI hosts, destinations) of the service's VirtualService ``tls`` routes on ``port``."""
    found = _vs_spec(snapshot, svc)
    if found is None:
        return []
    vs, spec = found
    out = []
    for route in spec.tls:
        snis = [
            sni.lower()
            for m in route.match
            if (m.port is None or m.port == port) and m.source_namespace in (None, client_ns)
            for sni in m.sni_hosts
        ]
        if snis:
            out.append((snis, _clusters(snapshot, vs, route.route, port)))
    return out


def _tcp_proxy(stat_prefix: str, dests: list[tuple[str, int]]) -> dict[str, Any]:
    fields: dict[str, Any] = {"stat_prefix": stat_prefix}
    if len(dests) == 1:
        fields["cluster"] = dests[0][0]
    else:
        fields["weighted_clusters"] = {"clusters": [{"name": c, "weight": w} for c, w in dests]}
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": typed(T.TCP_PROXY, **fields)}


# -- listeners ----------------------------------------------------------------------------


def _l4_ports(snapshot: MeshSnapshot, client_ns: str) -> dict[int, list[tuple[Service, ServicePort]]]:
    """Per port number, the L4 service ports on it: the client's namespace first, then by host."""
    by_port: dict[int, list[tuple[Service, ServicePort]]] = {}
    for svc in sorted(snapshot.services.values(), key=lambda s: (s.namespace != client_ns, s.hostname)):
        if svc.resolution != "EDS" and not svc.endpoints:
            continue  # no cluster exists for it (wildcard DNS entries)
        for port in svc.ports:
            if port.protocol in L4_PROTOCOLS:
                by_port.setdefault(port.number, []).append((svc, port))
    return dict(sorted(by_port.items()))


def _listener(snapshot: MeshSnapshot, number: int, members: list[tuple[Service, ServicePort]], client_ns: str) -> dict[str, Any] | None:
    name = f"outbound|{number}"
    chains: list[dict[str, Any]] = []
    claimed: set[str] = set()
    default: dict[str, Any] | None = None
    for svc, port in members:
        if port.protocol in TLS_PROTOCOLS:
            for snis, dests in _sni_routes(snapshot, svc, number, client_ns) + [
                ([svc.hostname], [(outbound_cluster(number, "", svc.hostname), 100)])
            ]:
                fresh = [s for s in snis if s not in claimed]
                if not fresh:
                    continue
                claimed.update(fresh)
                chains.append(
                    {
                        "filter_chain_match": {"server_names": fresh},
                        "filters": [_tcp_proxy(dests[0][0] if len(dests) == 1 else name, dests)],
                    }
                )
        elif default is None:
            dests = _tcp_destinations(snapshot, svc, number, client_ns)
            default = {"filters": [_tcp_proxy(dests[0][0] if len(dests) == 1 else name, dests)]}
    if not chains and default is None:
        return None
    listener: dict[str, Any] = {
        "name": name,
        "address": socket_address(TEMPLATE_ADDRESS, number),
        "traffic_direction": "OUTBOUND",
    }
    if chains:
        listener["listener_filters"] = [TLS_INSPECTOR]
        listener["filter_chains"] = chains
        if default is not None:
            listener["default_filter_chain"] = default
    else:
        listener["filter_chains"] = [default]
    return listener


# -- route table additions ----------------------------------------------------------------


def _connect_route(dests: list[tuple[str, int]]) -> dict[str, Any]:
    # A tunnel lives as long as its connection: no request timeout, and Istio's TCP idle
    # timeout (1h) instead of the HTTP stream idle timeout.
    action: dict[str, Any] = {"upgrade_configs": copy.deepcopy(_CONNECT), "timeout": "0s", "idle_timeout": "3600s"}
    if len(dests) == 1:
        action["cluster"] = dests[0][0]
    else:
        action["weighted_clusters"] = {"clusters": [{"name": c, "weight": w} for c, w in dests]}
    return {"name": "connect", "match": {"connect_matcher": {}}, "route": action}


def _l4_connect_dests(snapshot: MeshSnapshot, svc: Service, port: ServicePort, client_ns: str) -> list[tuple[str, int]]:
    if port.protocol in TLS_PROTOCOLS:
        for snis, dests in _sni_routes(snapshot, svc, port.number, client_ns):
            if svc.hostname in snis:
                return dests
        return [(outbound_cluster(port.number, "", svc.hostname), 100)]
    return _tcp_destinations(snapshot, svc, port.number, client_ns)


def _add_connect(route_config: dict[str, Any], snapshot: MeshSnapshot, client_ns: str) -> bool:
    """CONNECT routes: loop-back for gRPC/HTTP2 hosts, straight to the cluster for TCP/TLS
    hosts. Returns whether a loop-back route was added (the class then needs the loop cluster)."""
    vhosts: list[dict[str, Any]] = route_config["virtual_hosts"]
    used = {d for vh in vhosts for d in vh["domains"]}
    looped = False
    for vh in vhosts:
        host, _, number = str(vh.get("name", "")).rpartition(":")
        svc = snapshot.services.get(host)
        port = svc.port(int(number)) if svc is not None and number.isdigit() else None
        if port is not None and port.protocol in CONNECT_PROTOCOLS:
            vh["routes"] = [_connect_route([(LOOP_CLUSTER, 100)])] + vh["routes"]
            looped = True
    extra = []
    for members in _l4_ports(snapshot, client_ns).values():
        for svc, port in members:
            domains = [d for d in domains_for(svc, port, client_ns, snapshot.domain_suffix) if ":" in d and d not in used]
            if not domains:
                continue
            used.update(domains)
            dests = _l4_connect_dests(snapshot, svc, port, client_ns)
            extra.append({"name": f"{svc.hostname}:{port.number}", "domains": domains, "routes": [_connect_route(dests)]})
    # Before the catch-all, which must stay last.
    catch_all = [vh for vh in vhosts if vh["domains"] == ["*"]]
    rest = [vh for vh in vhosts if vh["domains"] != ["*"]]
    route_config["virtual_hosts"] = rest + sorted(extra, key=lambda v: str(v["name"])) + catch_all
    return looped


def _policy_catch_all(route_config: dict[str, Any], mode: str, source: str) -> None:
    for vh in route_config["virtual_hosts"]:
        if vh["domains"] != ["*"]:
            continue
        if mode == "ALLOW_ANY":
            vh["routes"] = [
                _connect_route([(PASSTHROUGH_CLUSTER, 100)]),
                {"name": "allow_any", "match": {"prefix": "/"}, "route": {"cluster": PASSTHROUGH_CLUSTER, "timeout": "0s"}},
            ]
        else:
            for route in vh["routes"]:
                body = route.get("direct_response", {}).get("body")
                if body is not None:
                    body["inline_string"] = (
                        f"novamesh: no service in this proxy's scope matches this request's host "
                        f"(route not found); outboundTrafficPolicy REGISTRY_ONLY ({source}) blocks "
                        "hosts outside it. Check the host and port, the Sidecar's egress hosts, "
                        "and `novamesh get serviceentry` for external hosts.\n"
                    )


def _passthrough_cluster(connect_timeout: float) -> dict[str, Any]:
    return {
        "name": PASSTHROUGH_CLUSTER,
        "connect_timeout": duration(connect_timeout),
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.dynamic_forward_proxy",
            "typed_config": typed(DFP_CLUSTER_TYPE, dns_cache_config=dict(DNS_CACHE)),
        },
    }


def _loop_cluster(connect_timeout: float) -> dict[str, Any]:
    return {
        "name": LOOP_CLUSTER,
        "type": "STATIC",
        "connect_timeout": duration(connect_timeout),
        "load_assignment": {
            "cluster_name": LOOP_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(TEMPLATE_ADDRESS, 15001)}}]}],
        },
    }


def add_l4(
    resources: dict[str, dict[str, dict[str, Any]]],
    snapshot: MeshSnapshot,
    client_ns: str,
    policy: tuple[str, str],
    connect_timeout: float,
) -> None:
    """Add (in place) the class-level L4 pieces to a sidecar class translation: listener
    templates, CONNECT routes, the outbound traffic policy and the clusters they use."""
    for number, members in _l4_ports(snapshot, client_ns).items():
        if listener_port_usable(number):
            ln = _listener(snapshot, number, members, client_ns)
            if ln is not None:
                resources[T.LISTENER][ln["name"]] = ln
    mode, source = policy
    for rc in resources[T.ROUTE].values():
        if _add_connect(rc, snapshot, client_ns):
            resources[T.CLUSTER][LOOP_CLUSTER] = _loop_cluster(connect_timeout)
        if mode == "ALLOW_ANY" or source.startswith("Sidecar"):
            _policy_catch_all(rc, mode, source)
    if mode == "ALLOW_ANY":
        resources[T.CLUSTER][PASSTHROUGH_CLUSTER] = _passthrough_cluster(connect_timeout)
    resources[T.CLUSTER] = dict(sorted(resources[T.CLUSTER].items()))
    resources[T.LISTENER] = dict(sorted(resources[T.LISTENER].items()))


# -- per proxy ----------------------------------------------------------------------------


def _rebind(resource: dict[str, Any], address: str, port: int | None = None) -> dict[str, Any]:
    out = copy.deepcopy(resource)
    if "address" in out:
        out["address"]["socket_address"]["address"] = address
    else:
        sa = out["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        sa["address"] = address
        if port is not None:
            sa["port_value"] = port
    return out


def _outbound_hcm(listener: dict[str, Any]) -> dict[str, Any] | None:
    for chain in listener.get("filter_chains", []):
        for f in chain.get("filters", []):
            if f.get("name") == "envoy.filters.network.http_connection_manager":
                tc: dict[str, Any] = f["typed_config"]
                return tc
    return None


_CONNECT_MEMO: dict[int, tuple[dict[str, dict[str, Any]], bool]] = {}
_CONNECT_MEMO_SIZE = 8  # route tables remembered (one per recently bound class)


def _uses_connect(class_resources: dict[str, dict[str, dict[str, Any]]]) -> bool:
    """Whether a route of the class accepts CONNECT (then the outbound HCM must upgrade it).

    Every proxy of a class is bound from the same class route table, so the answer is
    remembered per table instead of rescanning every route once per proxy. Keyed by identity;
    the memo holds the table itself, so its id cannot be reused by another table while
    remembered. Class translations are never changed once built, so the answer stays right."""
    routes = class_resources[T.ROUTE]
    hit = _CONNECT_MEMO.get(id(routes))
    if hit is not None and hit[0] is routes:
        return hit[1]
    found = any(
        "connect_matcher" in r.get("match", {})
        for rc in routes.values()
        for vh in rc.get("virtual_hosts", [])
        for r in vh.get("routes", [])
    )
    if len(_CONNECT_MEMO) >= _CONNECT_MEMO_SIZE:
        _CONNECT_MEMO.pop(next(iter(_CONNECT_MEMO), 0), None)  # oldest first
    _CONNECT_MEMO[id(routes)] = (routes, found)
    return found


def bind_to_proxy(
    class_resources: dict[str, dict[str, dict[str, Any]]],
    clusters: dict[str, dict[str, Any]],
    listeners: dict[str, dict[str, Any]],
    proxy: Proxy,
    outbound_name: str,
) -> None:
    """Add (in place) the class's listener templates bound to ``proxy.address`` (minus those
    clashing with the proxy's own ports), bind the loop cluster, and turn on CONNECT and the
    dynamic forward proxy on the outbound HTTP listener when the class uses them."""
    own = {p.number for p in proxy.ports} | {p.app_port for p in proxy.ports if p.app_port}
    own |= {proxy.admin_port, proxy.outbound_port}
    for name, template in class_resources[T.LISTENER].items():
        port = template["address"]["socket_address"]["port_value"]
        if port not in own and name not in listeners:
            listeners[name] = add_tcp_telemetry(_rebind(template, proxy.address), proxy, inbound=False)
    if LOOP_CLUSTER in clusters:
        clusters[LOOP_CLUSTER] = _rebind(clusters[LOOP_CLUSTER], proxy.address, proxy.outbound_port)
    outbound = listeners.get(outbound_name)
    hcm = _outbound_hcm(outbound) if outbound is not None else None
    if hcm is None:
        return
    if _uses_connect(class_resources):
        hcm["upgrade_configs"] = [{"upgrade_type": "CONNECT"}]
    if PASSTHROUGH_CLUSTER in clusters:
        filters = hcm["http_filters"]
        at = next((i for i, f in enumerate(filters) if f.get("name") == "envoy.filters.http.router"), len(filters))
        dfp = {"name": "envoy.filters.http.dynamic_forward_proxy", "typed_config": typed(DFP_FILTER_TYPE, dns_cache_config=dict(DNS_CACHE))}
        hcm["http_filters"] = filters[:at] + [dfp] + filters[at:]
