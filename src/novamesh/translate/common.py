"""Shared bits of the translation: type URLs, durations, addresses."""

from __future__ import annotations

from typing import Any

__all__ = ["T", "duration", "socket_address", "typed", "ROUTER_FILTER"]


class T:
    """Envoy type URLs used in xDS responses and typed configs."""

    CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
    ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
    HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


XDS_ORDER = (T.CLUSTER, T.ENDPOINT, T.LISTENER, T.ROUTE)
"""Make-before-break push order."""

SHORT_NAMES = {T.CLUSTER: "CDS", T.ENDPOINT: "EDS", T.LISTENER: "LDS", T.ROUTE: "RDS"}


def duration(seconds: float) -> str:
    """Protobuf JSON duration ('1.5s')."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def socket_address(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def typed(type_url: str, **fields: Any) -> dict[str, Any]:
    """A ``typed_config`` dict (protobuf JSON ``Any``)."""
    return {"@type": type_url, **fields}


ROUTER_FILTER = {"name": "envoy.filters.http.router", "typed_config": typed(T.ROUTER)}
