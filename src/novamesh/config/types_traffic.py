"""Typed models of a DestinationRule's ``trafficPolicy`` (Istio's TrafficPolicy message).

Used by :class:`~novamesh.config.types.DestinationRuleSpec` and
:class:`~novamesh.config.types.Subset`. Field names follow Istio's YAML exactly; checks that a
type cannot express (one hash key, prime Maglev table, millisecond durations) live in
:mod:`._semantic_traffic`. Istio fields of these messages that the data plane does not honour
yet are listed in :data:`TRAFFIC_NOT_YET_SUPPORTED` and rejected by name.

Optional numbers are ``None`` when unset, so "not written" (Envoy's default applies) and an
explicit value stay distinguishable, as Istio's wrapper types keep them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .base import Duration, PortSelector, Spec

__all__ = [
    "SIMPLE_LB",
    "TRAFFIC_NOT_YET_SUPPORTED",
    "ClientTLSSettings",
    "ConnectionPoolSettings",
    "ConsistentHashLB",
    "HTTPCookie",
    "HTTPSettings",
    "LoadBalancerSettings",
    "MagLev",
    "OutlierDetection",
    "PortTrafficPolicy",
    "RingHash",
    "TCPKeepalive",
    "TCPSettings",
    "TrafficPolicy",
]

_INT32 = 2**31 - 1  # Istio's counters are int32 / UInt32Value; Envoy's thresholds are uint32

SimpleLB = Literal["UNSPECIFIED", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN"]
SIMPLE_LB: tuple[str, ...] = ("UNSPECIFIED", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN")
"""Istio's SimpleLB names (``LEAST_CONN`` is Istio's deprecated alias of ``LEAST_REQUEST``)."""


class HTTPCookie(Spec):
    """Hash on a cookie; Envoy generates it (with ``ttl``, ``0s`` = session cookie) when absent."""

    name: str = ""
    path: str = ""
    ttl: Duration | None = None


class RingHash(Spec):
    minimum_ring_size: int | None = Field(default=None, ge=0)


class MagLev(Spec):
    table_size: int | None = Field(default=None, ge=0)


class ConsistentHashLB(Spec):
    """Exactly one hash key, and at most one of ``ringHash``, ``maglev``, ``minimumRingSize``."""

    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: int | None = Field(default=None, ge=0)
    """Deprecated in Istio in favour of ``ringHash.minimumRingSize``; still honoured."""


class LoadBalancerSettings(Spec):
    simple: SimpleLB | None = None
    consistent_hash: ConsistentHashLB | None = None


class TCPKeepalive(Spec):
    probes: int | None = Field(default=None, ge=0, le=_INT32)
    time: Duration | None = None
    interval: Duration | None = None


class TCPSettings(Spec):
    max_connections: int | None = Field(default=None, ge=0, le=_INT32)
    connect_timeout: Duration | None = None
    tcp_keepalive: TCPKeepalive | None = None


class HTTPSettings(Spec):
    http1_max_pending_requests: int | None = Field(default=None, ge=0, le=_INT32, alias="http1MaxPendingRequests")
    http2_max_requests: int | None = Field(default=None, ge=0, le=_INT32, alias="http2MaxRequests")
    max_requests_per_connection: int | None = Field(default=None, ge=0, le=_INT32)
    max_retries: int | None = Field(default=None, ge=0, le=_INT32)
    idle_timeout: Duration | None = None


class ConnectionPoolSettings(Spec):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(Spec):
    consecutive_5xx_errors: int | None = Field(default=None, ge=0, le=_INT32, alias="consecutive5xxErrors")
    consecutive_gateway_errors: int | None = Field(default=None, ge=0, le=_INT32)
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: int | None = Field(default=None, ge=0, le=100)
    min_health_percent: int | None = Field(default=None, ge=0, le=100)


class ClientTLSSettings(Spec):
    """TLS the sidecar originates to the destination (for services outside the mesh).

    Certificate paths are files on the sidecar's host, read by Envoy. ``ISTIO_MUTUAL`` uses the
    workload's mesh certificate (translate/mtls.py).
    """

    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] = "DISABLE"
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    subject_alt_names: list[str] = Field(default_factory=list)
    sni: str = ""
    insecure_skip_verify: bool | None = None


class PortTrafficPolicy(Spec):
    """Settings for one destination port; they replace the level's own settings (see
    :mod:`novamesh.translate.cluster_policies` for the merge)."""

    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TrafficPolicy(Spec):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list)


TRAFFIC_NOT_YET_SUPPORTED: dict[type[BaseModel], tuple[str, ...]] = {
    TrafficPolicy: ("tunnel", "proxyProtocol"),
    ClientTLSSettings: ("credentialName", "caCrl"),
    LoadBalancerSettings: ("localityLbSetting", "warmupDurationSecs", "warmup"),
    TCPSettings: ("maxConnectionDuration", "idleTimeout"),
    HTTPSettings: ("h2UpgradePolicy", "useClientProtocol", "maxConcurrentStreams"),
    OutlierDetection: ("consecutiveErrors", "splitExternalLocalOriginErrors", "consecutiveLocalOriginFailures"),
}
"""Real Istio fields of the traffic policy messages that novamesh rejects for now."""
