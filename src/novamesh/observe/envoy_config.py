"""The Envoy configuration behind Istio-style workload metrics (pure; used by translate/).

Upstream Envoy has no Istio stats filter, so every sidecar streams one access-log entry per
request (and per TCP connection) over Envoy's gRPC access-log service to its own agent, which
aggregates them into ``istio_*`` metrics (see :mod:`novamesh.observe.aggregate`). The peer's
identity crosses the wire in two headers, turned into dynamic metadata (which the log entry
carries) and removed before the app sees them:

* the client sidecar adds ``x-novamesh-source: <workload>,<namespace>,<app>,<version>`` to every
  outbound request; the server sidecar moves it into metadata ``novamesh.source``;
* the server sidecar adds ``x-novamesh-peer`` (the same fields, for itself) to every inbound
  response; the client sidecar moves it into metadata ``novamesh.peer``.

Only proxies whose bootstrap has the access-log cluster (``Proxy.telemetry_port`` set by the
agent) get any of this, so plain Envoys and the golden scenarios are unchanged.
"""

from __future__ import annotations

from typing import Any

from ..model.proxy import Proxy

__all__ = [
    "ALS_CLUSTER",
    "SOURCE_HEADER",
    "PEER_HEADER",
    "METADATA_NAMESPACE",
    "LOG_OUTBOUND",
    "LOG_INBOUND",
    "peer_value",
    "add_http_telemetry",
    "tcp_access_log",
    "als_cluster",
    "tcp_proxy_telemetry",
]

ALS_CLUSTER = "novamesh_als"
SOURCE_HEADER = "x-novamesh-source"
PEER_HEADER = "x-novamesh-peer"
METADATA_NAMESPACE = "novamesh"
LOG_OUTBOUND = "novamesh.outbound"
"""``log_name`` of outbound entries: this proxy is the *source* reporter."""
LOG_INBOUND = "novamesh.inbound"
"""``log_name`` of inbound entries: this proxy is the *destination* reporter."""

_HTTP_GRPC_LOG = "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
_TCP_GRPC_LOG = "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.TcpGrpcAccessLogConfig"
_HEADER_TO_METADATA = "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config"
_HEADER_MUTATION = "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation"
_FLUSH_INTERVAL = "1s"  # Envoy's default; metrics lag requests by at most this much


def peer_value(proxy: Proxy) -> str:
    """``<workload>,<namespace>,<app>,<version>`` describing ``proxy`` (the header value)."""
    labels = proxy.label_dict
    workload = f"{proxy.service}-{proxy.version}" if proxy.version else proxy.service
    return ",".join((workload, proxy.namespace, labels.get("app", proxy.service), labels.get("version", proxy.version)))


def _common(log_name: str) -> dict[str, Any]:
    return {
        "log_name": log_name,
        "grpc_service": {"envoy_grpc": {"cluster_name": ALS_CLUSTER}},
        "transport_api_version": "V3",
        "buffer_flush_interval": _FLUSH_INTERVAL,
    }


def _http_access_log(log_name: str) -> dict[str, Any]:
    return {
        "name": "envoy.access_loggers.http_grpc",
        "typed_config": {
            "@type": _HTTP_GRPC_LOG,
            "common_config": _common(log_name),
            "additional_request_headers_to_log": ["content-type"],
            "additional_response_headers_to_log": ["grpc-status"],
            "additional_response_trailers_to_log": ["grpc-status"],
        },
    }


def tcp_access_log(log_name: str) -> dict[str, Any]:
    """The ``access_log`` entry of a tcp_proxy filter (one entry per closed connection)."""
    return {
        "name": "envoy.access_loggers.tcp_grpc",
        "typed_config": {"@type": _TCP_GRPC_LOG, "common_config": _common(log_name)},
    }


def _to_metadata(header: str, key: str, *, response: bool) -> dict[str, Any]:
    rule = {
        "header": header,
        "on_header_present": {"metadata_namespace": METADATA_NAMESPACE, "key": key, "type": "STRING"},
        "remove": True,
    }
    return {
        "name": "novamesh.peer_to_metadata",
        "typed_config": {"@type": _HEADER_TO_METADATA, ("response_rules" if response else "request_rules"): [rule]},
    }


def _add_header(header: str, value: str, *, response: bool) -> dict[str, Any]:
    mutation = {"append": {"header": {"key": header, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}
    kind = "response_mutations" if response else "request_mutations"
    return {
        "name": "novamesh.peer_header",
        "typed_config": {"@type": _HEADER_MUTATION, "mutations": {kind: [mutation]}},
    }


def add_http_telemetry(hcm: dict[str, Any], proxy: Proxy, *, inbound: bool) -> dict[str, Any]:
    """Add the metrics access logger and the peer-identity filters to the HCM ``hcm`` (its
    typed_config dict, changed in place and returned). A no-op unless the proxy has telemetry.

    The logger is appended to ``access_log`` as its own entry (other loggers stay); the two
    filters go first in ``http_filters``, so the identity is captured before anything can
    answer locally (a fault abort is still logged, with an empty peer)."""
    if not proxy.telemetry_port:
        return hcm
    value = peer_value(proxy)
    if inbound:  # server side: read the caller's identity, announce ours on the response
        filters = [_to_metadata(SOURCE_HEADER, "source", response=False), _add_header(PEER_HEADER, value, response=True)]
        log_name = LOG_INBOUND
    else:  # client side: announce ourselves on the request, read the server's identity
        filters = [_to_metadata(PEER_HEADER, "peer", response=True), _add_header(SOURCE_HEADER, value, response=False)]
        log_name = LOG_OUTBOUND
    hcm["http_filters"] = [*filters, *hcm.get("http_filters", [])]
    hcm["access_log"] = [*hcm.get("access_log", []), _http_access_log(log_name)]
    return hcm


def als_cluster(proxy: Proxy) -> list[dict[str, Any]]:
    """Static bootstrap cluster(s) for the agent's access-log server (none without telemetry)."""
    if not proxy.telemetry_port:
        return []
    return [
        {
            "name": ALS_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": ALS_CLUSTER,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {"endpoint": {"address": {"socket_address": {"address": proxy.address, "port_value": proxy.telemetry_port}}}}
                        ]
                    }
                ],
            },
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
        }
    ]


def tcp_proxy_telemetry(proxy: Proxy, *, inbound: bool) -> dict[str, Any]:
    """Extra tcp_proxy fields (``access_log``) for ``proxy``; empty without telemetry."""
    if not proxy.telemetry_port:
        return {}
    return {"access_log": [tcp_access_log(LOG_INBOUND if inbound else LOG_OUTBOUND)]}
