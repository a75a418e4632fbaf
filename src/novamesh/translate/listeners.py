"""LDS: the sidecar's outbound HTTP-proxy listener and one inbound listener per served port.

Local mode has no traffic capture: the app reaches the mesh through ``HTTP_PROXY`` pointing at
the outbound listener (``<workload address>:15001``), which routes by Host/authority. Other
sidecars reach this workload at ``<workload address>:<service port>``, where the inbound
listener forwards to the app on ``app_host:app_port``.
"""

from __future__ import annotations

from typing import Any

from ..config.names import inbound_cluster
from ..model.proxy import Proxy, ProxyPort
from ..observe.envoy_config import add_http_telemetry, tcp_proxy_telemetry
from .common import ROUTER_FILTER, T, socket_address, typed
from .http_policies import POLICY_FILTERS
from .routes import OUTBOUND_ROUTE

__all__ = ["outbound_listener", "inbound_listener", "listeners_for"]

OUTBOUND_LISTENER = "virtualOutbound"


def _hcm(stat_prefix: str, route: dict[str, Any], *, inbound: bool) -> dict[str, Any]:
    hcm: dict[str, Any] = typed(
        T.HCM,
        stat_prefix=stat_prefix,
        codec_type="AUTO",
        http_filters=[*POLICY_FILTERS, ROUTER_FILTER],  # per-route CORS and fault; router last
        # Keep the request id the client (or the previous hop) set; make one otherwise.
        generate_request_id=True,
        use_remote_address=False,
        normalize_path=True,
        merge_slashes=True,
        path_with_escaped_slashes_action="KEEP_UNCHANGED",
        http_protocol_options={"allow_absolute_url": True},
        stream_idle_timeout="0s" if inbound else "300s",
    )
    hcm.update(route)
    return hcm


def outbound_listener(proxy: Proxy) -> dict[str, Any]:
    """The HTTP proxy listener apps talk to through ``HTTP_PROXY``."""
    route = {"rds": {"config_source": {"ads": {}, "resource_api_version": "V3"}, "route_config_name": OUTBOUND_ROUTE}}
    return {
        "name": OUTBOUND_LISTENER,
        "address": socket_address(proxy.address, proxy.outbound_port),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": add_http_telemetry(_hcm("outbound_http", route, inbound=False), proxy, inbound=False)}]}
        ],
    }


def inbound_listener(proxy: Proxy, port: ProxyPort) -> dict[str, Any]:
    """``<address>:<port>`` → the app; HTTP ports through the HCM, others through tcp_proxy."""
    cluster = inbound_cluster(port.number)
    name = f"inbound|{port.number}"
    if port.protocol in ("TCP", "TLS", "MONGO", "HTTPS"):  # HTTPS: TLS passed through to the app
        filters = [
            {
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": typed(T.TCP_PROXY, stat_prefix=cluster, cluster=cluster, **tcp_proxy_telemetry(proxy, inbound=True)),
            }
        ]
    else:
        route = {
            "route_config": {
                "name": f"inbound|{port.number}",
                "virtual_hosts": [
                    {
                        "name": f"inbound|http|{port.number}",
                        "domains": ["*"],
                        "routes": [
                            {"name": "default", "match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}
                        ],
                    }
                ],
                "validate_clusters": False,
            }
        }
        filters = [
            {
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": add_http_telemetry(_hcm(f"inbound_{port.number}", route, inbound=True), proxy, inbound=True),
            }
        ]
    return {
        "name": name,
        "address": socket_address(proxy.address, port.number),
        "traffic_direction": "INBOUND",
        "filter_chains": [{"filters": filters}],
    }


def listeners_for(proxy: Proxy) -> dict[str, dict[str, Any]]:
    out = {OUTBOUND_LISTENER: outbound_listener(proxy)}
    for p in proxy.ports:
        if p.app_port:
            ln = inbound_listener(proxy, p)
            out[ln["name"]] = ln
    return out
