"""CDS: outbound clusters per service port and subset, inbound clusters per workload port."""

from __future__ import annotations

from typing import Any

from ..config.names import inbound_cluster, outbound_cluster
from ..model.proxy import Proxy
from ..model.snapshot import MeshSnapshot, Service, ServicePort
from .cluster_policies import apply_traffic_policy
from .common import T, duration, socket_address, typed
from .endpoints import load_assignment
from .mesh_defaults import traffic_default
from .mtls import apply_auto_mtls, dr_tls_mode

__all__ = ["outbound_clusters", "inbound_clusters", "TranslateOptions"]

HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
"""Envoy keys typed_extension_protocol_options by extension name, not by type URL."""


class TranslateOptions:
    """Settings the translation reads (kept tiny and explicit so translation stays pure)."""

    def __init__(self, connect_timeout: float = 10.0) -> None:
        self.connect_timeout = connect_timeout


def _protocol_options(port: ServicePort) -> dict[str, Any] | None:
    if port.protocol in ("HTTP2", "GRPC"):
        return {
            HTTP_OPTIONS_KEY: typed(T.HTTP_OPTIONS, explicit_http_config={"http2_protocol_options": {}})
        }
    return None


def _cluster(name: str, service: Service, port: ServicePort, subset: dict[str, str] | None, opts: TranslateOptions) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name,
        "connect_timeout": duration(opts.connect_timeout),
        "lb_policy": "ROUND_ROBIN",
        "common_lb_config": {},
    }
    if service.resolution == "EDS":
        c["type"] = "EDS"
        c["eds_cluster_config"] = {
            "eds_config": {"ads": {}, "resource_api_version": "V3"},
            "service_name": name,
        }
    else:
        c["type"] = "LOGICAL_DNS" if service.resolution == "DNS_ROUND_ROBIN" else "STRICT_DNS"
        c["dns_lookup_family"] = "V4_PREFERRED"
        c["load_assignment"] = load_assignment(name, service, port.number, subset)
    options = _protocol_options(port)
    if options:
        c["typed_extension_protocol_options"] = options
    return c


def outbound_clusters(snapshot: MeshSnapshot, opts: TranslateOptions) -> dict[str, dict[str, Any]]:
    """Every service port, plus one cluster per DestinationRule subset."""
    out: dict[str, dict[str, Any]] = {}
    mesh_default = traffic_default(snapshot)  # MeshConfig defaultTrafficPolicy: below every DestinationRule
    for svc in snapshot.services.values():
        if svc.resolution != "EDS" and not svc.endpoints:
            continue  # wildcard DNS entries have nothing to resolve
        dr = snapshot.destination_rule_for(svc.hostname)
        subsets = [(s.name, dict(s.labels)) for s in getattr(dr.spec, "subsets", [])] if dr else []
        for port in svc.ports:
            name = outbound_cluster(port.number, "", svc.hostname)
            out[name] = apply_traffic_policy(_cluster(name, svc, port, None, opts), dr, None, port, mesh_default)
            apply_auto_mtls(out[name], snapshot, svc, dr_tls_mode(dr, None, port.number))  # mesh mTLS
            for sname, labels in subsets:
                sub = outbound_cluster(port.number, sname, svc.hostname)
                out[sub] = apply_traffic_policy(_cluster(sub, svc, port, labels, opts), dr, sname, port, mesh_default)
                apply_auto_mtls(out[sub], snapshot, svc, dr_tls_mode(dr, sname, port.number))
    return out


def inbound_clusters(proxy: Proxy, opts: TranslateOptions) -> dict[str, dict[str, Any]]:
    """One static cluster per served port, pointing at the app."""
    out: dict[str, dict[str, Any]] = {}
    for p in proxy.ports:
        if not p.app_port:
            continue
        name = inbound_cluster(p.number)
        c: dict[str, Any] = {
            "name": name,
            "type": "STATIC",
            "connect_timeout": duration(opts.connect_timeout),
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(proxy.app_host or proxy.address, p.app_port)}}]}],
            },
        }
        if p.protocol in ("HTTP2", "GRPC"):
            c["typed_extension_protocol_options"] = {
                HTTP_OPTIONS_KEY: typed(T.HTTP_OPTIONS, explicit_http_config={"http2_protocol_options": {}})
            }
        out[name] = c
    return out
