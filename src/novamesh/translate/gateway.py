"""LDS and RDS of a gateway: the servers of the Gateways selecting it, routed by the
VirtualServices bound to those Gateways.

Istio semantics kept here:

- a Gateway selects gateway workloads by label in every namespace;
- one listener per server port; servers sharing a port share it (plain HTTP servers one route
  table, TLS servers one filter chain each, chosen by SNI from the server's hosts);
- a VirtualService is bound through ``gateways: [<namespace>/<name>]`` and serves the hosts it
  has in common with a server (the more specific of each pair: ``*.example.com`` on the server
  and ``shop.example.com`` in the VirtualService give ``shop.example.com``); a server host
  ``ns/host`` admits VirtualServices of ``ns`` only, ``./host`` those of the Gateway's namespace;
- match blocks naming other ``gateways`` do not apply here (routes.py filters them);
- ``httpsRedirect`` answers 301 to ``https://`` for every host of the server;
- a host nothing serves gets 404.

Conflicts between Gateways (the same port with and without TLS, a host claimed twice on one
port) cannot be rejected at apply time — they depend on which workloads the selectors pick — so
the first server in (namespace, name) order wins and later ones are left out.

Listeners are built per class with a placeholder address; :func:`bind_listeners` puts the
gateway's own address in, so every gateway with the same labels shares one translation.

Edge-safe defaults on every gateway connection manager (Envoy's "edge proxy" best practices):
the client address comes from the connection, not from ``x-forwarded-for`` (no trusted hops);
request headers are limited in size and count, headers with underscores are rejected (they
can smuggle past proxies that map ``_`` to ``-``), paths are normalised with slashes merged,
and slow or idle clients are timed out. The process-wide connection limit lives in the gateway's
bootstrap (novamesh.agent.gateway).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

# Registers the TLS messages this module names in an Any (see translate/protos.py).
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401

from ..observe.envoy_config import add_gateway_telemetry, edge_strip_filter
from ..config.names import resolve_host
from ..config.resource import Resource
from ..config.types_gateway import GatewaySpec, Server, served_hosts, server_host_parts
from ..model.proxy import Proxy
from ..model.snapshot import MeshSnapshot
from .common import ROUTER_FILTER, T, socket_address, typed
from .http_policies import POLICY_FILTERS
from .routes import vs_routes

__all__ = [
    "CONNECTION_BUFFER_LIMIT",
    "GATEWAY_KIND",
    "MAX_HEADERS_COUNT",
    "MAX_REQUEST_HEADERS_KB",
    "NO_ROUTE_BODY",
    "bind_listeners",
    "gateway_listeners_and_routes",
]

GATEWAY_KIND = "gateway"
"""``Proxy.kind`` of a gateway Envoy."""

MAX_REQUEST_HEADERS_KB = 60
"""Largest request header block accepted (Envoy's default, written out so it is explicit)."""
MAX_HEADERS_COUNT = 100
"""Most request headers accepted (Envoy's default; an attacker's header flood stops here)."""
CONNECTION_BUFFER_LIMIT = 32768
"""Per-connection read/write buffer: Envoy's edge recommendation (default is 1 MiB)."""

DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TLS_INSPECTOR = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
_PLACEHOLDER = "0.0.0.0"  # replaced by the gateway's address in bind_listeners

NO_ROUTE_BODY = (
    "novamesh gateway: no VirtualService bound to this gateway serves this host "
    "(route not found). Bind one with `gateways: [<namespace>/<gateway>]`.\n"
)

_Servers = list[tuple[Resource, Server]]


def _hcm(stat_prefix: str, route_name: str) -> dict[str, Any]:
    return typed(
        T.HCM,
        stat_prefix=stat_prefix,
        codec_type="AUTO",
        # As on sidecars (per-route CORS and fault), after the identity-header strip.
        http_filters=[edge_strip_filter(), *POLICY_FILTERS, ROUTER_FILTER],
        generate_request_id=True,
        # The gateway is the edge: the client is the peer of the connection. Trusting no
        # x-forwarded-for hops means a client cannot pose as another address.
        use_remote_address=True,
        xff_num_trusted_hops=0,
        normalize_path=True,
        merge_slashes=True,
        path_with_escaped_slashes_action="KEEP_UNCHANGED",
        # Hosts are matched without the port: clients write Host: shop.example.com:8443.
        strip_any_host_port=True,
        max_request_headers_kb=MAX_REQUEST_HEADERS_KB,
        common_http_protocol_options={
            "idle_timeout": "3600s",
            "max_headers_count": MAX_HEADERS_COUNT,
            "headers_with_underscores_action": "REJECT_REQUEST",
        },
        http2_protocol_options={
            "max_concurrent_streams": 100,
            "initial_stream_window_size": 65536,
            "initial_connection_window_size": 1048576,
        },
        stream_idle_timeout="300s",
        request_headers_timeout="10s",
        rds={"config_source": {"ads": {}, "resource_api_version": "V3"}, "route_config_name": route_name},
    )


def _servers_by_port(gateways: tuple[Resource, ...]) -> dict[int, _Servers]:
    """Servers of ``gateways`` grouped by port, in (gateway key, server index) order; a server
    whose TLS-ness differs from the port's first server is dropped (see the module doc)."""
    out: dict[int, _Servers] = {}
    for gw in gateways:
        spec = gw.spec
        assert isinstance(spec, GatewaySpec)
        for server in spec.servers:
            group = out.setdefault(server.port.number, [])
            if group and _terminates_tls(group[0][1]) != _terminates_tls(server):
                continue
            group.append((gw, server))
    return dict(sorted(out.items()))


def _terminates_tls(server: Server) -> bool:
    return server.port.protocol == "HTTPS"


def _server_vhosts(snapshot: MeshSnapshot, gw: Resource, server: Server, used: set[str]) -> list[dict[str, Any]]:
    """Virtual hosts of one server: one per bound VirtualService, plus, with httpsRedirect, one
    redirecting the server's remaining hosts. Domains already in ``used`` are skipped."""
    ref = f"{gw.namespace}/{gw.name}"
    port = server.port.number
    redirect = server.tls is not None and server.tls.https_redirect
    vhosts: list[dict[str, Any]] = []
    for vs in snapshot.virtual_services_for_gateway(ref):
        vs_hosts = [resolve_host(h, vs.namespace, snapshot.domain_suffix) for h in getattr(vs.spec, "hosts", [])]
        domains = sorted(served_hosts(server, vs_hosts, vs.namespace, gw.namespace) - used)
        routes = vs_routes(snapshot, vs, port, ref)
        if not domains or not (routes or redirect):
            continue
        used.update(domains)
        vhosts.append({"name": f"{domains[0]}:{port}", "domains": domains, "routes": routes})
    if redirect:
        rest = sorted({server_host_parts(h)[1] for h in server.hosts} - used)
        if rest:
            used.update(rest)
            vhosts.append({"name": f"{rest[0]}:{port}", "domains": rest, "routes": []})
        for vh in vhosts:
            vh["require_tls"] = "ALL"  # Envoy answers 301 https://<host><path> before routing
    return vhosts


def _route_config(name: str, vhosts: list[dict[str, Any]], used: set[str]) -> dict[str, Any]:
    if "*" not in used:
        vhosts = vhosts + [
            {
                "name": "not_found",
                "domains": ["*"],
                "routes": [
                    {
                        "name": "not_found",
                        "match": {"prefix": "/"},
                        "direct_response": {"status": 404, "body": {"inline_string": NO_ROUTE_BODY}},
                    }
                ],
            }
        ]
    return {
        "name": name,
        "virtual_hosts": vhosts,
        "validate_clusters": False,
        # The mesh's identity headers stay inside the mesh (an outside caller can neither forge
        # the source of its request nor read which workload answered): edge_strip_filter, first
        # in the HCM, removes them. Not here: the router applies a route's header removals
        # before the gateway's own identity filters could add or read them.
    }


def _tls_socket(server: Server) -> dict[str, Any]:
    tls = server.tls
    assert tls is not None
    common: dict[str, Any] = {
        "tls_certificates": [
            {"certificate_chain": {"filename": tls.server_certificate}, "private_key": {"filename": tls.private_key}}
        ],
        "alpn_protocols": ["h2", "http/1.1"],
    }
    context: dict[str, Any] = {"common_tls_context": common}
    if tls.mode == "MUTUAL":
        common["validation_context"] = {"trusted_ca": {"filename": tls.ca_certificates}}
        context["require_client_certificate"] = True
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed(DOWNSTREAM_TLS, **context)}


def _listener(port: int, chains: list[dict[str, Any]], tls: bool) -> dict[str, Any]:
    listener: dict[str, Any] = {
        "name": f"gateway_{port}",
        "address": socket_address(_PLACEHOLDER, port),
        "traffic_direction": "OUTBOUND",  # as Istio marks gateway listeners
        "per_connection_buffer_limit_bytes": CONNECTION_BUFFER_LIMIT,
        "filter_chains": chains,
    }
    if tls:
        listener["listener_filters"] = [
            {"name": "envoy.filters.listener.tls_inspector", "typed_config": typed(TLS_INSPECTOR)}
        ]
    return listener


def _hcm_filter(stat_prefix: str, route_name: str) -> dict[str, Any]:
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": _hcm(stat_prefix, route_name)}


def gateway_listeners_and_routes(
    snapshot: MeshSnapshot, labels: Mapping[str, str]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(listeners, route configs) of a gateway workload with ``labels``. Listener addresses are
    placeholders until :func:`bind_listeners`."""
    listeners: dict[str, dict[str, Any]] = {}
    routes: dict[str, dict[str, Any]] = {}
    for port, servers in _servers_by_port(snapshot.gateways_selecting(labels)).items():
        if not _terminates_tls(servers[0][1]):
            used: set[str] = set()
            vhosts = [vh for gw, server in servers for vh in _server_vhosts(snapshot, gw, server, used)]
            name = f"http.{port}"
            routes[name] = _route_config(name, vhosts, used)
            listeners[f"gateway_{port}"] = _listener(port, [{"filters": [_hcm_filter(f"gateway_{port}", name)]}], False)
            continue
        chains: list[dict[str, Any]] = []
        claimed: set[str] = set()  # SNI names already given to a filter chain on this port
        for gw, server in servers:
            names = sorted({server_host_parts(h)[1] for h in server.hosts} - claimed)
            if not names:
                continue
            claimed.update(names)
            name = f"https.{port}.{server.port.name}.{gw.name}.{gw.namespace}"
            used = set()
            routes[name] = _route_config(name, _server_vhosts(snapshot, gw, server, used), used)
            chain: dict[str, Any] = {
                "name": name,
                "transport_socket": _tls_socket(server),
                "filters": [_hcm_filter(f"gateway_https_{port}", name)],
            }
            if "*" not in names:
                chain["filter_chain_match"] = {"server_names": names}
            chains.append(chain)
        if chains:
            listeners[f"gateway_{port}"] = _listener(port, chains, True)
    return listeners, routes


def bind_listeners(listeners: Mapping[str, dict[str, Any]], proxy: Proxy) -> dict[str, dict[str, Any]]:
    """``listeners`` bound to the gateway's own address (local mode: its loopback address)."""
    out: dict[str, dict[str, Any]] = {}
    for name, listener in sorted(listeners.items()):
        port = listener["address"]["socket_address"]["port_value"]
        out[name] = {**listener, "address": socket_address(proxy.address, port)}
        if proxy.telemetry_port:  # metrics: the gateway reports as source (a copy per proxy)
            out[name]["filter_chains"] = chains = copy.deepcopy(listener["filter_chains"])
            for chain in chains:
                for f in chain["filters"]:
                    add_gateway_telemetry(f["typed_config"], proxy)
    return out
