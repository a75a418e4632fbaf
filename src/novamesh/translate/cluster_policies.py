"""DestinationRule ``trafficPolicy`` on Envoy clusters, and the route ``hash_policy`` that
consistent hashing needs.

Which settings apply to a cluster ``outbound|<port>|<subset>|<host>`` follows Istio's
``MergeSubsetTrafficPolicy``:

1. At each level (the rule, then the subset) a ``portLevelSettings`` entry for the port
   *replaces* that level's settings: fields it omits fall back to defaults, not to the level's
   own ``loadBalancer``/``connectionPool``/``outlierDetection``.
2. The subset's result overrides the rule's field by field (``loadBalancer``,
   ``connectionPool``, ``outlierDetection``, ``tls`` each as a whole); when the subset has a
   port-level entry for the port, all four come from it.

Envoy mapping (as Istio does it): ``connectionPool`` becomes circuit-breaker thresholds,
``connect_timeout``, TCP keepalive and ``common_http_protocol_options``; a counter of 0 or unset
leaves Envoy's default (1024 connections/pending/requests, 3 retries). ``outlierDetection``
becomes ``outlier_detection`` with success-rate ejection off, and sets the healthy panic
threshold to ``minHealthPercent`` (default 0: no panic routing to ejected hosts). Consistent
hashing is ``RING_HASH`` (default) or ``MAGLEV`` on the cluster plus a ``hash_policy`` on every
route that sends to it. ``tls`` is translated by :mod:`.upstream_tls`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config.base import parse_duration
from ..config.names import parse_outbound_cluster
from ..config.resource import Resource
from ..config.types import DestinationRuleSpec
from ..config.types_traffic import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    ConsistentHashLB,
    LoadBalancerSettings,
    OutlierDetection,
    TrafficPolicy,
)
from ..model.snapshot import MeshSnapshot, ServicePort
from .common import T, duration, typed
from .upstream_tls import transport_socket

__all__ = ["EffectivePolicy", "add_hash_policy", "apply_traffic_policy", "effective_policy"]

HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_SIMPLE = {"ROUND_ROBIN": "ROUND_ROBIN", "LEAST_REQUEST": "LEAST_REQUEST", "LEAST_CONN": "LEAST_REQUEST", "RANDOM": "RANDOM"}
"""Istio SimpleLB -> Envoy lb_policy (UNSPECIFIED keeps the mesh default; PASSTHROUGH is rejected
at apply time)."""


@dataclass(frozen=True)
class EffectivePolicy:
    """The settings one cluster gets after Istio's port-level and subset merge."""

    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


_FIELDS = ("load_balancer", "connection_pool", "outlier_detection", "tls")  # EffectivePolicy's, in order


def _at_port(policy: TrafficPolicy | None, port: int) -> tuple[EffectivePolicy | None, bool]:
    """The level's settings for ``port`` and whether a port-level entry supplied them."""
    if policy is None:
        return None, False
    for pls in policy.port_level_settings:
        if pls.port is not None and pls.port.number == port:
            return EffectivePolicy(pls.load_balancer, pls.connection_pool, pls.outlier_detection, pls.tls), True
    return EffectivePolicy(policy.load_balancer, policy.connection_pool, policy.outlier_detection, policy.tls), False


def effective_policy(dr: Resource | None, subset: str | None, port: int) -> EffectivePolicy | None:
    """Settings for the cluster of ``port`` and ``subset`` (None: the whole host) under ``dr``."""
    if dr is None:
        return None
    spec = dr.spec
    assert isinstance(spec, DestinationRuleSpec)
    base, _ = _at_port(spec.traffic_policy, port)
    sub_policy = next((s.traffic_policy for s in spec.subsets if s.name == subset), None) if subset else None
    override, port_level = _at_port(sub_policy, port)
    if override is None:
        return base
    if base is None:
        return override

    def pick(name: str) -> Any:
        value = getattr(override, name)
        return value if value is not None or port_level else getattr(base, name)

    return EffectivePolicy(pick("load_balancer"), pick("connection_pool"), pick("outlier_detection"), pick("tls"))


def apply_traffic_policy(
    cluster: dict[str, Any], dr: Resource | None, subset: str | None, port: ServicePort, mesh_default: EffectivePolicy | None = None
) -> dict[str, Any]:
    """``cluster`` with the DestinationRule's settings for it applied (changed in place).
    ``mesh_default`` (the MeshConfig's, see mesh_defaults.py) fills each field no level of the rule sets."""
    policy = effective_policy(dr, subset, port.number)
    if mesh_default is not None:
        policy = mesh_default if policy is None else EffectivePolicy(
            *(getattr(policy, f) if getattr(policy, f) is not None else getattr(mesh_default, f) for f in _FIELDS))
    if policy is None:
        return cluster
    if policy.load_balancer is not None:
        _load_balancer(cluster, policy.load_balancer)
    if policy.connection_pool is not None:
        _connection_pool(cluster, policy.connection_pool, port)
    if policy.outlier_detection is not None:
        _outlier_detection(cluster, policy.outlier_detection)
    if policy.tls is not None:
        parsed = parse_outbound_cluster(cluster["name"])
        socket = transport_socket(policy.tls, parsed[2] if parsed else "", port.protocol in ("HTTP2", "GRPC"))
        if socket is not None:
            cluster["transport_socket"] = socket
    return cluster


def _load_balancer(cluster: dict[str, Any], lb: LoadBalancerSettings) -> None:
    if lb.simple in _SIMPLE:
        cluster["lb_policy"] = _SIMPLE[lb.simple]
        return
    ch = lb.consistent_hash
    if ch is None:
        return
    if ch.maglev is not None:
        cluster["lb_policy"] = "MAGLEV"
        if ch.maglev.table_size:
            cluster["maglev_lb_config"] = {"table_size": ch.maglev.table_size}
        return
    # Ring hash is Istio's default consistent-hash algorithm; minimumRingSize is its
    # deprecated spelling of ringHash.minimumRingSize.
    cluster["lb_policy"] = "RING_HASH"
    ring = ch.ring_hash.minimum_ring_size if ch.ring_hash is not None else ch.minimum_ring_size
    if ring:
        cluster["ring_hash_lb_config"] = {"minimum_ring_size": ring}


def _connection_pool(cluster: dict[str, Any], pool: ConnectionPoolSettings, port: ServicePort) -> None:
    thresholds: dict[str, int] = {}
    common: dict[str, Any] = {}
    if pool.tcp is not None:
        tcp = pool.tcp
        if tcp.max_connections:
            thresholds["max_connections"] = tcp.max_connections
        if tcp.connect_timeout is not None:
            cluster["connect_timeout"] = duration(parse_duration(tcp.connect_timeout))
        if tcp.tcp_keepalive is not None:
            ka = tcp.tcp_keepalive
            keepalive: dict[str, int] = {}
            if ka.probes:
                keepalive["keepalive_probes"] = ka.probes
            if ka.time is not None:
                keepalive["keepalive_time"] = int(parse_duration(ka.time))
            if ka.interval is not None:
                keepalive["keepalive_interval"] = int(parse_duration(ka.interval))
            # An empty tcp_keepalive still turns SO_KEEPALIVE on with the OS defaults, as in Istio.
            cluster["upstream_connection_options"] = {"tcp_keepalive": keepalive}
    if pool.http is not None:
        http = pool.http
        # Istio treats 0 as "not set" for these counters (0 would block every request).
        if http.http1_max_pending_requests:
            thresholds["max_pending_requests"] = http.http1_max_pending_requests
        if http.http2_max_requests:
            thresholds["max_requests"] = http.http2_max_requests
        if http.max_retries:
            thresholds["max_retries"] = http.max_retries
        if http.max_requests_per_connection:
            common["max_requests_per_connection"] = http.max_requests_per_connection
        if http.idle_timeout is not None:
            common["idle_timeout"] = duration(parse_duration(http.idle_timeout))
    if thresholds:
        cluster["circuit_breakers"] = {"thresholds": [thresholds]}
    if common and port.is_http:
        options = cluster.setdefault("typed_extension_protocol_options", {})
        current = options.get(HTTP_OPTIONS_KEY)
        if current is None:
            current = typed(T.HTTP_OPTIONS, explicit_http_config={"http_protocol_options": {}})
        options[HTTP_OPTIONS_KEY] = {**current, "common_http_protocol_options": common}


def _outlier_detection(cluster: dict[str, Any], od: OutlierDetection) -> None:
    out: dict[str, Any] = {"enforcing_success_rate": 0}  # Istio turns success-rate ejection off
    if od.consecutive_5xx_errors is not None:
        out["consecutive_5xx"] = od.consecutive_5xx_errors
        out["enforcing_consecutive_5xx"] = 100 if od.consecutive_5xx_errors > 0 else 0
    if od.consecutive_gateway_errors is not None:
        out["consecutive_gateway_failure"] = od.consecutive_gateway_errors
        out["enforcing_consecutive_gateway_failure"] = 100 if od.consecutive_gateway_errors > 0 else 0
    if od.interval is not None:
        out["interval"] = duration(parse_duration(od.interval))
    if od.base_ejection_time is not None:
        out["base_ejection_time"] = duration(parse_duration(od.base_ejection_time))
    if od.max_ejection_percent:
        out["max_ejection_percent"] = od.max_ejection_percent
    cluster["outlier_detection"] = out
    # Istio sets the panic threshold to minHealthPercent (default 0): with few endpoints Envoy's
    # 50 % default would route to ejected hosts as soon as one of two is out.
    lb_config = dict(cluster.get("common_lb_config") or {})
    lb_config["healthy_panic_threshold"] = {"value": float(od.min_health_percent or 0)}
    cluster["common_lb_config"] = lb_config


def _hash_policy(ch: ConsistentHashLB) -> dict[str, Any] | None:
    if ch.http_header_name:
        return {"header": {"header_name": ch.http_header_name}}
    if ch.http_cookie is not None:
        cookie: dict[str, Any] = {"name": ch.http_cookie.name}
        if ch.http_cookie.path:
            cookie["path"] = ch.http_cookie.path
        if ch.http_cookie.ttl is not None:
            cookie["ttl"] = duration(parse_duration(ch.http_cookie.ttl))
        return {"cookie": cookie}
    if ch.use_source_ip:
        return {"connection_properties": {"source_ip": True}}
    if ch.http_query_parameter_name:
        return {"query_parameter": {"name": ch.http_query_parameter_name}}
    return None


def add_hash_policy(snapshot: MeshSnapshot, action: dict[str, Any]) -> dict[str, Any]:
    """Add the consistent-hash ``hash_policy`` of the clusters a route action sends to.

    Like Istio, each destination's own policy is appended in destination order; unlike Istio,
    the policy is the one the destination's *cluster* uses (so port-level settings count even
    when the route names no port) and duplicates are dropped. Changes ``action`` in place.
    """
    names = [action["cluster"]] if "cluster" in action else [c["name"] for c in action.get("weighted_clusters", {}).get("clusters", [])]
    policies: list[dict[str, Any]] = []
    for name in names:
        parsed = parse_outbound_cluster(name)
        if parsed is None:
            continue
        port, subset, fqdn = parsed
        policy = effective_policy(snapshot.destination_rule_for(fqdn), subset or None, port)
        lb = policy.load_balancer if policy is not None else None
        if lb is None or lb.consistent_hash is None:
            continue
        hp = _hash_policy(lb.consistent_hash)
        if hp is not None and hp not in policies:
            policies.append(hp)
    if policies:
        action["hash_policy"] = policies
    return action
