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

A response header cannot describe a TCP connection, nor a request that got no answer from the
server (a timeout, a reset). So the control plane also writes the same value on every EDS
endpoint of a registered workload (lb_endpoint metadata ``novamesh.peer``, see
:func:`endpoint_peer_metadata`), and the client side's loggers copy the chosen upstream host's
value into the entry's ``custom_tags`` (:data:`UPSTREAM_PEER_TAG`); the aggregator reads it when
the response brought no header. Istio's stats filter falls back to endpoint metadata the same way.
Two more custom tags carry the SPIFFE ids of the upstream connection's certificates (mTLS only),
so the source reporter labels ``source_principal``/``destination_principal`` as Istio's does.

TCP connections are logged by tcp_proxy filters on both sides (:func:`add_tcp_telemetry` for a
client's local TCP listeners). Gateways report like a client sidecar (:func:`add_gateway_telemetry`)
behind :func:`edge_strip_filter`, which drops identity headers coming from outside.

Only proxies whose bootstrap has the access-log cluster (``Proxy.telemetry_port`` set by the
agent) get the loggers and filters, so plain Envoys and the golden scenarios are unchanged; the
endpoint metadata is in every EDS answer (harmless where nothing reads it).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
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
    "workload_peer_value",
    "UPSTREAM_PEER_TAG",
    "UPSTREAM_PEER_PRINCIPAL_TAG",
    "UPSTREAM_LOCAL_PRINCIPAL_TAG",
    "endpoint_peer_metadata",
    "add_http_telemetry",
    "tcp_access_log",
    "als_cluster",
    "tcp_proxy_telemetry",
    "add_tcp_telemetry",
    "EDGE_STRIP_FILTER",
    "edge_strip_filter",
    "add_gateway_telemetry",
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
UPSTREAM_PEER_TAG = "novamesh.upstream_peer"
"""Custom tag of outbound log entries: the ``novamesh.peer`` metadata of the upstream host."""
UPSTREAM_PEER_PRINCIPAL_TAG = "novamesh.upstream_peer_principal"
"""Custom tag of outbound log entries: the upstream's certificate URI SAN (mTLS only)."""
UPSTREAM_LOCAL_PRINCIPAL_TAG = "novamesh.upstream_local_principal"
"""Custom tag of outbound log entries: this sidecar's own certificate URI SAN (mTLS only)."""
_PEER_KEY = "peer"


def peer_value(proxy: Proxy) -> str:
    """``<workload>,<namespace>,<app>,<version>`` describing ``proxy`` (the header value)."""
    labels = proxy.label_dict
    workload = f"{proxy.service}-{proxy.version}" if proxy.version else proxy.service
    return ",".join((workload, proxy.namespace, labels.get("app", proxy.service), labels.get("version", proxy.version)))


def workload_peer_value(service: str, namespace: str, labels: Mapping[str, str]) -> str:
    """:func:`peer_value` of a registered workload known by its service, namespace and labels
    (the agent labels every workload with ``app`` and, when it has one, ``version``)."""
    version = labels.get("version", "")
    workload = f"{service}-{version}" if version else service
    return ",".join((workload, namespace, labels.get("app", service), version))


def endpoint_peer_metadata(service: str, namespace: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """``filter_metadata`` entry naming the workload behind an EDS endpoint, read back by the
    client's access loggers through :data:`UPSTREAM_PEER_TAG`."""
    return {METADATA_NAMESPACE: {_PEER_KEY: workload_peer_value(service, namespace, labels)}}


def _upstream_tags() -> list[dict[str, Any]]:
    """Custom tags of the client side's entries: who the upstream host is (its EDS metadata)
    and, over mTLS, both certificates' SPIFFE ids (what Istio's source reporter labels with)."""
    key = {"key": METADATA_NAMESPACE, "path": [{"key": _PEER_KEY}]}
    return [
        {"tag": UPSTREAM_PEER_TAG, "metadata": {"kind": {"host": {}}, "metadata_key": key}},
        {"tag": UPSTREAM_PEER_PRINCIPAL_TAG, "value": "%UPSTREAM_PEER_URI_SAN%"},
        {"tag": UPSTREAM_LOCAL_PRINCIPAL_TAG, "value": "%UPSTREAM_LOCAL_URI_SAN%"},
    ]


def _common(log_name: str) -> dict[str, Any]:
    common: dict[str, Any] = {
        "log_name": log_name,
        "grpc_service": {"envoy_grpc": {"cluster_name": ALS_CLUSTER}},
        "transport_api_version": "V3",
        "buffer_flush_interval": _FLUSH_INTERVAL,
    }
    if log_name == LOG_OUTBOUND:  # the client side names the upstream workload from its endpoint
        common["custom_tags"] = _upstream_tags()
    return common


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
    """The ``access_log`` entry of a tcp_proxy filter (with :func:`tcp_proxy_telemetry`'s
    options: one entry when the upstream connection is up, one when it closes)."""
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
    if not inbound:  # a CONNECT tunnel (TCP through the HTTP proxy) is counted opened when it is up
        hcm.setdefault("access_log_options", {})["flush_log_on_tunnel_successfully_established"] = True
    return hcm


EDGE_STRIP_FILTER = "novamesh.edge_strip"


def edge_strip_filter() -> dict[str, Any]:
    """A gateway's first HTTP filter: drops ``x-novamesh-source`` from requests (an outside
    caller cannot forge its identity) and ``x-novamesh-peer`` from responses (the serving
    workload's identity does not leak out). A filter rather than the route's
    ``request_headers_to_remove``: the router applies that after every filter, so it would also
    drop the source header the gateway adds itself (:func:`add_gateway_telemetry`)."""
    return {
        "name": EDGE_STRIP_FILTER,
        "typed_config": {
            "@type": _HEADER_MUTATION,
            "mutations": {
                "request_mutations": [{"remove": SOURCE_HEADER}],
                "response_mutations": [{"remove": PEER_HEADER}],
            },
        },
    }


def add_gateway_telemetry(hcm: dict[str, Any], proxy: Proxy) -> dict[str, Any]:
    """Instrument a gateway's HCM (in place) like a client sidecar's outbound one: the gateway
    reports as ``source`` (as Istio's gateways do) and announces itself to the upstream. The
    identity filters go right after :func:`edge_strip_filter`, so the header it adds is the one
    forwarded, and the upstream's ``x-novamesh-peer`` is read before it is stripped."""
    filters = list(hcm.get("http_filters", []))
    at = next((i + 1 for i, f in enumerate(filters) if f.get("name") == EDGE_STRIP_FILTER), 0)
    add_http_telemetry(hcm, proxy, inbound=False)  # prepends its two filters
    if proxy.telemetry_port:
        added = hcm["http_filters"][:2]
        hcm["http_filters"] = filters[:at] + added + filters[at:]
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
    return {
        "access_log": [tcp_access_log(LOG_INBOUND if inbound else LOG_OUTBOUND)],
        # One entry when the upstream connection is up (counted as opened then), one at close.
        "access_log_options": {"flush_access_log_on_connected": True},
    }


def add_tcp_telemetry(listener: dict[str, Any], proxy: Proxy, *, inbound: bool) -> dict[str, Any]:
    """Add the TCP access logger to every tcp_proxy filter of ``listener`` (in place, returned).
    A no-op unless the proxy has telemetry."""
    extra = tcp_proxy_telemetry(proxy, inbound=inbound)
    if not extra:
        return listener
    chains = [*listener.get("filter_chains", [])]
    if "default_filter_chain" in listener:
        chains.append(listener["default_filter_chain"])
    for chain in chains:
        for f in chain.get("filters", []):
            if f.get("name") == "envoy.filters.network.tcp_proxy":
                f["typed_config"].update(copy.deepcopy(extra))
    return listener
