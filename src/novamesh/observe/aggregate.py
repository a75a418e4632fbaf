"""Envoy access-log entries → Istio metric labels (pure functions, no I/O).

Which side reports follows the entry's ``log_name`` (:data:`~.envoy_config.LOG_OUTBOUND`: this
sidecar is the *source* reporter; :data:`~.envoy_config.LOG_INBOUND`: the *destination*). The
reporting sidecar fills its own side from :class:`LocalIdentity`; the other side comes from the
peer metadata (``novamesh.source`` / ``novamesh.peer``) and the upstream cluster name
(``outbound|<port>|<subset>|<fqdn>``). On the source side, when no ``novamesh.peer`` came back
(a TCP connection, a request the server never answered), the destination workload is the one
the upstream host's EDS metadata names (custom tag :data:`~.envoy_config.UPSTREAM_PEER_TAG`).
What is not known is ``"unknown"``, as in Istio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2

from .envoy_config import (
    LOG_INBOUND,
    METADATA_NAMESPACE,
    UPSTREAM_LOCAL_PRINCIPAL_TAG,
    UPSTREAM_PEER_PRINCIPAL_TAG,
    UPSTREAM_PEER_TAG,
)
from .workload_metrics import HTTP_LABELS, TCP_LABELS, WorkloadMetrics

__all__ = [
    "LocalIdentity",
    "Peer",
    "response_flags",
    "http_labels",
    "tcp_labels",
    "record_http",
    "record_tcp",
    "UNKNOWN",
]

UNKNOWN = "unknown"

# Envoy's short response-flag codes, in the order Envoy prints them.
_FLAG_CODES = (
    ("failed_local_healthcheck", "LH"),
    ("no_healthy_upstream", "UH"),
    ("upstream_request_timeout", "UT"),
    ("local_reset", "LR"),
    ("upstream_remote_reset", "UR"),
    ("upstream_connection_failure", "UF"),
    ("upstream_connection_termination", "UC"),
    ("upstream_overflow", "UO"),
    ("no_route_found", "NR"),
    ("delay_injected", "DI"),
    ("fault_injected", "FI"),
    ("rate_limited", "RL"),
    ("rate_limit_service_error", "RLSE"),
    ("downstream_connection_termination", "DC"),
    ("upstream_retry_limit_exceeded", "URX"),
    ("stream_idle_timeout", "SI"),
    ("invalid_envoy_request_headers", "IH"),
    ("downstream_protocol_error", "DPE"),
    ("upstream_max_stream_duration_reached", "UMSDR"),
    ("response_from_cache_filter", "RFCF"),
    ("no_filter_config_found", "NFCF"),
    ("duration_timeout", "DT"),
    ("upstream_protocol_error", "UPE"),
    ("no_cluster_found", "NC"),
    ("overload_manager", "OM"),
    ("dns_resolution_failure", "DF"),
    ("downstream_remote_reset", "DR"),
)


_CACHE_MAX = 4096
"""Bound of each parse cache below (cleared when full: header values are caller-controlled)."""


@dataclass(frozen=True)
class Peer:
    """One side of a request: workload, namespace, app, version (Istio's workload labels)."""

    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN

    @classmethod
    def parse(cls, value: str) -> Peer:
        """From a ``workload,namespace,app,version`` header value; unknown parts stay unknown."""
        peer = _PEERS.get(value)
        if peer is None:
            peer = cls._parse(value)
            if len(_PEERS) >= _CACHE_MAX:
                _PEERS.clear()
            _PEERS[value] = peer
        return peer

    @classmethod
    def _parse(cls, value: str) -> Peer:
        parts = [p.strip() or UNKNOWN for p in value.split(",")] if value else []
        parts += [UNKNOWN] * (4 - len(parts))
        return cls(*parts[:4])


@dataclass(frozen=True)
class LocalIdentity:
    """The reporting workload: who it is and the service it serves."""

    peer: Peer
    service_fqdn: str
    domain_suffix: str = "cluster.local"

    @property
    def service_name(self) -> str:
        """The short name of the served service."""
        return self.service_fqdn.split(".")[0]


_PEERS: dict[str, Peer] = {}
_FLAG_BY_FIELD = dict(_FLAG_CODES)
_FLAG_ORDER = {field: i for i, (field, _) in enumerate(_FLAG_CODES)}
_SERVICES: dict[tuple[LocalIdentity, str, str], tuple[str, str, str]] = {}


def response_flags(flags: accesslog_pb2.ResponseFlags) -> str:
    """Envoy's short codes (``"UF,URX"``), or ``"-"`` without any (Istio's convention)."""
    # ListFields() yields only the flags that are set (usually none): far cheaper than
    # probing all of them.
    set_fields = [f.name for f, v in flags.ListFields() if v is True and f.name in _FLAG_BY_FIELD]
    codes = [_FLAG_BY_FIELD[name] for name in sorted(set_fields, key=_FLAG_ORDER.__getitem__)]
    if flags.HasField("unauthorized_details"):
        codes.append("UAEX")
    return ",".join(codes) or "-"


def _metadata(common: accesslog_pb2.AccessLogCommon, key: str) -> str:
    md = common.metadata.filter_metadata.get(METADATA_NAMESPACE)
    if md is None or key not in md.fields:
        return ""
    return str(md.fields[key].string_value)


def _qualify(host: str, namespace: str, suffix: str) -> str:
    """A Host header as the client wrote it (``front``, ``front.ns``, ``front.ns.svc``) made a
    FQDN the way the sidecar's route table resolves it: relative to the client's namespace."""
    if host.startswith("[") or host.replace(".", "").isdigit():  # an IP address
        return host
    labels = host.split(".")
    if len(labels) == 1:
        return f"{host}.{namespace}.svc.{suffix}"
    if len(labels) == 2:
        return f"{host}.svc.{suffix}"
    if len(labels) == 3 and labels[2] == "svc":
        return f"{host}.{suffix}"
    return host


def _service_of(me: LocalIdentity, cluster: str, authority: str) -> tuple[str, str, str]:
    """(destination_service, _name, _namespace), cached per (cluster, authority)."""
    key = (me, cluster, authority)
    found = _SERVICES.get(key)
    if found is None:
        found = _compute_service(me, cluster, authority)
        if len(_SERVICES) >= _CACHE_MAX:
            _SERVICES.clear()
        _SERVICES[key] = found
    return found


def _compute_service(me: LocalIdentity, cluster: str, authority: str) -> tuple[str, str, str]:
    """From the outbound cluster name, else (a local reply such as a fault abort, before any
    cluster was picked) from the authority."""
    parts = cluster.split("|")
    if len(parts) == 4 and parts[0] == "outbound" and parts[3]:
        fqdn = parts[3]
    else:
        host = authority
        if authority.startswith("["):  # [v6 address]:port
            host = authority.split("]", 1)[0] + "]"
        elif authority.count(":") == 1:
            host = authority.rsplit(":", 1)[0]
        if not host:
            return UNKNOWN, UNKNOWN, UNKNOWN
        fqdn = _qualify(host, me.peer.namespace, me.domain_suffix)
    labels = fqdn.split(".")
    svc_ns = labels[1] if len(labels) > 2 and fqdn.endswith(f".svc.{me.domain_suffix}") else UNKNOWN
    return fqdn, labels[0], svc_ns


def _principal(value: str) -> str:
    """A principal from a formatted custom tag (empty or ``-`` when there was no certificate)."""
    return value if value and value != "-" else UNKNOWN


def _uri(props: Any) -> str:
    for san in props.subject_alt_name:
        if san.uri:
            return str(san.uri)
    return ""


def _sides(
    me: LocalIdentity, inbound: bool, common: accesslog_pb2.AccessLogCommon, authority: str, protocol: str
) -> tuple[tuple[str, ...], str, str]:
    """(the peer labels of ``_PEER_LABELS`` in order, response_flags, connection_security_policy)."""
    src_principal = dst_principal = UNKNOWN
    if inbound:
        src, dst = Peer.parse(_metadata(common, "source")), me.peer
        svc = (me.service_fqdn, me.service_name, me.peer.namespace)
        # The caller's certificate on the downstream TLS connection.
        if common.HasField("tls_properties"):
            tls = common.tls_properties
            src_principal = _uri(tls.peer_certificate_properties) or UNKNOWN
            dst_principal = _uri(tls.local_certificate_properties) or UNKNOWN
        policy = "mutual_tls" if src_principal != UNKNOWN else "none"
    else:
        # The server's own answer first; else the workload the chosen endpoint belongs to.
        tags = common.custom_tags
        src, dst = me.peer, Peer.parse(_metadata(common, "peer") or tags.get(UPSTREAM_PEER_TAG, ""))
        svc = _service_of(me, common.upstream_cluster, authority)
        # The upstream connection's certificates, when it used mTLS.
        src_principal = _principal(tags.get(UPSTREAM_LOCAL_PRINCIPAL_TAG, ""))
        dst_principal = _principal(tags.get(UPSTREAM_PEER_PRINCIPAL_TAG, ""))
        policy = UNKNOWN  # as in Istio: the client side does not report it
    peer = (
        "destination" if inbound else "source",
        src.workload, src.namespace, src_principal, src.app, src.version,
        dst.workload, dst.namespace, dst_principal, dst.app, dst.version,
        svc[0], svc[1], svc[2],
        protocol,
    )  # fmt: skip
    return peer, response_flags(common.response_flags), policy


def _header(headers: Any, name: str) -> str:
    return str(headers.get(name, "")) if headers is not None else ""


def _http_values(me: LocalIdentity, log_name: str, entry: accesslog_pb2.HTTPAccessLogEntry) -> tuple[str, ...]:
    req, resp = entry.request, entry.response
    grpc = _header(req.request_headers, "content-type").startswith("application/grpc")
    peer, flags, policy = _sides(me, log_name == LOG_INBOUND, entry.common_properties, req.authority, "grpc" if grpc else "http")
    code = resp.response_code.value if resp.HasField("response_code") else 0
    status = _header(resp.response_trailers, "grpc-status") or _header(resp.response_headers, "grpc-status")
    return (*peer, str(code), flags, status, policy)


def http_labels(me: LocalIdentity, log_name: str, entry: accesslog_pb2.HTTPAccessLogEntry) -> dict[str, str]:
    """Every label of :data:`~.workload_metrics.HTTP_LABELS` for one HTTP access-log entry."""
    return dict(zip(HTTP_LABELS, _http_values(me, log_name, entry), strict=True))


def _ms(d: Any) -> float:
    return float(d.seconds) * 1000.0 + float(d.nanos) / 1e6


_TUNNEL_UP = accesslog_pb2.AccessLogType.DownstreamTunnelSuccessfullyEstablished
_TCP_UP = accesslog_pb2.AccessLogType.TcpUpstreamConnected
_CONNECT = base_pb2.RequestMethod.Value("CONNECT")


def record_http(metrics: WorkloadMetrics, me: LocalIdentity, log_name: str, entry: accesslog_pb2.HTTPAccessLogEntry) -> None:
    """Count one HTTP entry into ``metrics``. A CONNECT tunnel to a TCP service (not the
    loop-back of gRPC, whose requests are logged one by one) is counted as a TCP connection:
    opened when its tunnel is up, closed with its bytes when it ends."""
    common = entry.common_properties
    if entry.request.request_method == _CONNECT:
        if common.upstream_cluster == _LOOP_CLUSTER:
            return  # only carries the gRPC requests, each logged (and counted) on its own
        if common.access_log_type == _TUNNEL_UP:
            metrics.record_tcp_values(_tcp_values(me, log_name, common, entry.request.authority), sent=0, received=0, opened=1, closed=0)
        elif not common.intermediate_log_entry:
            up = entry.response.HasField("response_code") and entry.response.response_code.value == 200
            metrics.record_tcp_values(
                _tcp_values(me, log_name, common, entry.request.authority),
                sent=int(entry.response.response_body_bytes),
                received=int(entry.request.request_body_bytes),
                opened=0 if up else 1,
                closed=1,
            )
        return
    if common.intermediate_log_entry or common.access_log_type == _TUNNEL_UP:
        return
    if common.HasField("duration"):
        ms = _ms(common.duration)
    else:
        ms = _ms(common.time_to_last_downstream_tx_byte)
    metrics.record_request_values(
        _http_values(me, log_name, entry), ms, int(entry.request.request_body_bytes), int(entry.response.response_body_bytes)
    )


_LOOP_CLUSTER = "outbound_loop"  # translate.tcp.LOOP_CLUSTER (not imported: observe stays below translate)


def _tcp_values(me: LocalIdentity, log_name: str, common: accesslog_pb2.AccessLogCommon, authority: str = "") -> tuple[str, ...]:
    peer, flags, policy = _sides(me, log_name == LOG_INBOUND, common, authority, "tcp")
    return (*peer, flags, policy)


def tcp_labels(me: LocalIdentity, log_name: str, entry: accesslog_pb2.TCPAccessLogEntry) -> dict[str, str]:
    """Every label of :data:`~.workload_metrics.TCP_LABELS` for one TCP access-log entry."""
    return dict(zip(TCP_LABELS, _tcp_values(me, log_name, entry.common_properties), strict=True))


def record_tcp(metrics: WorkloadMetrics, me: LocalIdentity, log_name: str, entry: accesslog_pb2.TCPAccessLogEntry) -> None:
    """Count one TCP entry into ``metrics``: with ``flush_access_log_on_connected`` Envoy sends
    one when the upstream connection is up (counted as opened) and one at close (closed, and
    the bytes both ways; also opened if the upstream never connected, so every connection is
    counted opened exactly once). Other intermediate (periodic) entries are ignored."""
    common = entry.common_properties
    if common.access_log_type == _TCP_UP:
        metrics.record_tcp_values(_tcp_values(me, log_name, common), sent=0, received=0, opened=1, closed=0)
        return
    if common.intermediate_log_entry:
        return
    conn = entry.connection_properties
    # The upstream connection's local address is set exactly when it was established (the
    # moment Envoy sent the "connected" entry); without it, opened is counted now.
    connected = common.HasField("upstream_local_address")
    metrics.record_tcp_values(
        _tcp_values(me, log_name, common),
        sent=int(conn.sent_bytes),
        received=int(conn.received_bytes),
        opened=0 if connected else 1,
        closed=1,
    )
