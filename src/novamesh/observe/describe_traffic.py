"""Traffic-policy sentences for ``novamesh describe``: load balancing, connection pool (the
circuit breaker), outlier detection and TLS of a DestinationRule and its subsets, and the
DestinationRule and mesh-wide defaults (MeshConfig) sections of a service description.
"""

from __future__ import annotations

from ..config.resource import Resource
from ..config.types import DestinationRuleSpec
from ..config.types_traffic import OutlierDetection, TrafficPolicy
from ..model.snapshot import MeshSnapshot
from ..translate.mesh_defaults import mesh_ref, mesh_spec
from .describe_base import ServiceDescription
from .describe_routes import describe_retries

__all__ = ["add_destination_rule", "add_mesh_defaults", "describe_outlier_detection", "describe_traffic_policy"]


def describe_outlier_detection(od: OutlierDetection) -> str:
    """``outlier detection: eject after 5 consecutive 5xx for 30s`` (Envoy defaults filled in)."""
    causes = []
    if od.consecutive_5xx_errors:
        causes.append(f"{od.consecutive_5xx_errors} consecutive 5xx")
    if od.consecutive_gateway_errors:
        causes.append(f"{od.consecutive_gateway_errors} consecutive gateway errors (502/503/504)")
    if not causes:
        return "outlier detection: configured but no ejection threshold set (consecutive5xxErrors 0)"
    text = f"outlier detection: eject after {' or '.join(causes)} for {od.base_ejection_time or '30s'}"
    text += f" (checked every {od.interval or '10s'}, at most {od.max_ejection_percent or 10}% of hosts ejected"
    text += f", panic below {od.min_health_percent or 0}% healthy)"
    return text


def describe_traffic_policy(tp: TrafficPolicy, where: str = "") -> list[tuple[str, str]]:
    """(topic, sentence) pairs for a traffic policy; ``where`` prefixes each (``subset v2: ``)."""
    out: list[tuple[str, str]] = []
    lb = tp.load_balancer
    if lb is not None:
        if lb.simple:
            out.append(("load_balancer", f"load balancing: {lb.simple}"))
        if lb.consistent_hash is not None:
            ch = lb.consistent_hash
            key = (
                f"header {ch.http_header_name}" if ch.http_header_name else
                f"cookie {ch.http_cookie.name}" if ch.http_cookie is not None else
                f"query parameter {ch.http_query_parameter_name}" if ch.http_query_parameter_name else
                "source IP"
            )
            out.append(("load_balancer", f"load balancing: consistent hash on {key}"))
    pool = tp.connection_pool
    if pool is not None:
        limits: list[str] = []
        if pool.tcp is not None:
            t = pool.tcp
            limits += [f"maxConnections: {t.max_connections}"] if t.max_connections is not None else []
            limits += [f"connectTimeout: {t.connect_timeout}"] if t.connect_timeout else []
        if pool.http is not None:
            h = pool.http
            for name, value in (
                ("http1MaxPendingRequests", h.http1_max_pending_requests),
                ("http2MaxRequests", h.http2_max_requests),
                ("maxRequestsPerConnection", h.max_requests_per_connection),
                ("maxRetries", h.max_retries),
                ("idleTimeout", h.idle_timeout),
            ):
                if value is not None:
                    limits.append(f"{name}: {value}")
        if limits:
            out.append(("connection_pool", "circuit breaker (connection pool): " + ", ".join(limits)))
    if tp.outlier_detection is not None:
        out.append(("outlier_detection", describe_outlier_detection(tp.outlier_detection)))
    if tp.tls is not None:
        tls = tp.tls
        detail = f" (sni {tls.sni})" if tls.sni else ""
        out.append(("tls", f"TLS to the destination: {tls.mode}{detail}"))
    for pl in tp.port_level_settings:
        port = pl.port.number if pl.port is not None else "?"
        sub = TrafficPolicy(load_balancer=pl.load_balancer, connection_pool=pl.connection_pool,
                            outlier_detection=pl.outlier_detection, tls=pl.tls)
        out += [(topic, f"port {port}: {text}") for topic, text in describe_traffic_policy(sub)]
    return [(topic, f"{where}{text}") for topic, text in out]


def _mesh_traffic(desc: ServiceDescription, snap: MeshSnapshot, own: TrafficPolicy | None) -> list[str]:
    """Lines (and facts) for the MeshConfig ``defaultTrafficPolicy`` fields the DestinationRule's
    top level does not replace."""
    spec = mesh_spec(snap)
    mtp = spec.default_traffic_policy if spec is not None else None
    if mtp is None:
        return []
    inherited = TrafficPolicy(
        connection_pool=mtp.connection_pool if own is None or own.connection_pool is None else None,
        outlier_detection=mtp.outlier_detection if own is None or own.outlier_detection is None else None,
    )
    lines: list[str] = []
    ref = mesh_ref(snap)
    for topic, text in describe_traffic_policy(inherited):
        lines.append(f"  {text} (mesh default from {ref})")
        if topic == "connection_pool":
            desc.fact(topic, f"circuit breaker: {ref} sets {text.replace('circuit breaker (connection pool): ', '')} (mesh default)")
        else:
            desc.fact(topic, f"{ref} sets {text} (mesh default)")
    return lines


def add_destination_rule(desc: ServiceDescription, dr: Resource | None, snap: MeshSnapshot) -> None:
    """Add the DestinationRule section: the rule ``dr`` that applies (``None``: none does), its
    subsets with their ready endpoints (so :attr:`ServiceDescription.endpoints` must be filled
    first), its traffic policies and the mesh-wide defaults it does not replace."""
    if dr is None:
        inherited = _mesh_traffic(desc, snap, None)
        defaults = ", Envoy's default limits (1024 connections/pending/requests), no outlier detection"
        desc.sections.append(("DestinationRule", ["none: round robin" + ("" if inherited else defaults), *inherited]))
        desc.fact("subsets", f"no DestinationRule for {desc.hostname}, so it has no subsets")
        return
    spec = dr.spec
    assert isinstance(spec, DestinationRuleSpec)
    ref = f"{dr.namespace}/{dr.name}"
    desc.destination_rules.append(ref)
    lines = [f"DestinationRule {ref} (host: {spec.host}):"]
    counts = {s: 0 for s in (x.name for x in spec.subsets)}
    for ep in desc.endpoints:
        for s in ep["subsets"]:
            if ep["ready"]:
                counts[s] = counts.get(s, 0) + 1
    for s in spec.subsets:
        sel = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) or "every endpoint"
        lines.append(f"  subset {s.name}: {sel} ({counts.get(s.name, 0)} ready endpoint(s))")
        desc.fact("subsets", f"DestinationRule {ref} subset {s.name} selects {sel}: {counts.get(s.name, 0)} ready endpoint(s)")
    policies: list[tuple[str, str]] = []
    if spec.traffic_policy is not None:
        policies += describe_traffic_policy(spec.traffic_policy)
    for s in spec.subsets:
        if s.traffic_policy is not None:
            policies += describe_traffic_policy(s.traffic_policy, f"subset {s.name}: ")
    for topic, text in policies:
        lines.append(f"  {text}")
        if topic == "connection_pool":
            desc.fact(topic, f"circuit breaker: DestinationRule {ref} sets {text.replace('circuit breaker (connection pool): ', '')}")
        else:
            desc.fact(topic, f"DestinationRule {ref} sets {text}")
    inherited = _mesh_traffic(desc, snap, spec.traffic_policy)
    lines += inherited
    if not policies and not inherited:
        lines.append("  no traffic policy: Envoy's defaults apply")
    desc.sections.append(("DestinationRule", lines))


def add_mesh_defaults(desc: ServiceDescription, snap: MeshSnapshot) -> None:
    """Add the Mesh-wide defaults section: the MeshConfig (``istio-system/default``) values every
    service gets unless overridden."""
    spec = mesh_spec(snap)
    if spec is None:
        desc.sections.append(("Mesh-wide defaults", ["none: no MeshConfig istio-system/default; built-in defaults apply"]))
        return
    ref = mesh_ref(snap)
    lines = [f"{ref}:"]
    if spec.default_http_timeout is not None:
        lines.append(f"  defaultHttpTimeout: {spec.default_http_timeout} (routes without their own timeout)")
    if spec.default_http_retry_policy is not None:
        lines.append(f"  defaultHttpRetryPolicy: {describe_retries(spec.default_http_retry_policy)} (routes without their own retries)")
    if spec.default_traffic_policy is not None:
        tp = TrafficPolicy(connection_pool=spec.default_traffic_policy.connection_pool,
                           outlier_detection=spec.default_traffic_policy.outlier_detection)
        lines += [f"  defaultTrafficPolicy: {text}" for _, text in describe_traffic_policy(tp)]
    if spec.outbound_traffic_policy is not None:
        lines.append(f"  outboundTrafficPolicy: {spec.outbound_traffic_policy.mode} (proxies no Sidecar gives a policy)")
    if len(lines) == 1:
        lines.append("  (sets nothing: built-in defaults apply)")
    desc.sections.append(("Mesh-wide defaults", lines))
