"""Golden scenarios for mesh mTLS: auto mTLS towards sidecars with certificates (mixed with a
plain-text endpoint), a DestinationRule ISTIO_MUTUAL / DISABLE, a destination whose
PeerAuthentication DISABLEs its port (reached in plain text), and the server side under
STRICT, PERMISSIVE (port level) and DISABLE."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from scenarios import _snap, res, wl

from novamesh.config.names import TLS_MODE_LABEL
from novamesh.config.resource import Resource
from novamesh.config.types import SPEC_TYPES
from novamesh.model.proxy import Proxy, ProxyPort
from novamesh.model.snapshot import MeshSnapshot
from novamesh.registry import Workload

TLS = (TLS_MODE_LABEL, "istio")


def pa(name: str, spec: dict[str, Any], namespace: str = "default") -> Resource:
    """A security.istio.io/v1 PeerAuthentication."""
    api = "security.istio.io/v1"
    manifest = {"apiVersion": api, "kind": "PeerAuthentication", "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    return Resource("PeerAuthentication", name, namespace, api, SPEC_TYPES["PeerAuthentication"].model_validate(spec), manifest)


def meshed(w: Workload, sa: str = "") -> Workload:
    """``w`` with a certificate (the agent's tlsMode label) and a service account."""
    return replace(w, labels=tuple(sorted((*w.labels, TLS))), service_account=sa or w.service)


WORKLOADS = [
    meshed(wl("front1", "frontend", "v1", "127.1.0.2")),
    meshed(wl("rev1", "reviews", "v1", "127.1.0.3"), "bookinfo-reviews"),
    wl("rev2", "reviews", "v2", "127.1.0.4"),  # no certificate: plain text
    meshed(wl("rat1", "ratings", "v1", "127.1.0.6")),
    meshed(wl("det1", "details", "v1", "127.1.0.8")),
]

FRONTEND = Proxy(
    id="front1", service="frontend", namespace="default", version="v1", address="127.1.0.2", service_account="frontend",
    labels=(("app", "frontend"), TLS, ("version", "v1")),
    ports=(ProxyPort(9080, "HTTP", "http", 40001), ProxyPort(9090, "TCP", "tcp", 40002), ProxyPort(9091, "HTTP", "http-admin", 40003)),
)


def scenarios() -> dict[str, tuple[MeshSnapshot, Proxy]]:
    ratings_dr = res("DestinationRule", "ratings", {"host": "ratings", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}})
    details_dr = res("DestinationRule", "details", {"host": "details", "trafficPolicy": {"tls": {"mode": "DISABLE"}}})
    reviews_disable = pa("reviews-legacy", {"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "DISABLE"}})
    strict_ns = pa("default", {"mtls": {"mode": "STRICT"}})
    mesh_strict = pa("default", {"mtls": {"mode": "STRICT"}}, namespace="istio-system")
    frontend_ports = pa("frontend", {
        "selector": {"matchLabels": {"app": "frontend"}},
        "mtls": {"mode": "UNSET"},
        "portLevelMtls": {"9090": {"mode": "PERMISSIVE"}, "9091": {"mode": "DISABLE"}},
    })
    return {
        "mtls_auto_client_and_permissive_server": (_snap([ratings_dr, details_dr], WORKLOADS), FRONTEND),
        "mtls_client_follows_destination_disable": (_snap([reviews_disable], WORKLOADS), FRONTEND),
        "mtls_strict_namespace": (_snap([strict_ns], WORKLOADS), FRONTEND),
        "mtls_mesh_strict_port_overrides": (_snap([mesh_strict, frontend_ports], WORKLOADS), FRONTEND),
        # a sidecar without a certificate: plain text both ways, whatever the policies say
        "mtls_proxy_without_certificate": (_snap([strict_ns], WORKLOADS), replace(FRONTEND, labels=(("app", "frontend"), ("version", "v1")))),
    }
