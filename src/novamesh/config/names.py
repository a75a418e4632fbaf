"""Istio's naming rules: short-name resolution, FQDNs, cluster names, SPIFFE ids."""

from __future__ import annotations

import ipaddress

__all__ = [
    "TLS_MODE_LABEL",
    "resolve_host",
    "service_fqdn",
    "outbound_cluster",
    "inbound_cluster",
    "parse_outbound_cluster",
    "spiffe_id",
    "KIND_ALIASES",
    "canonical_kind",
    "resolve_gateway",
    "MESH_GATEWAY",
]

MESH_GATEWAY = "mesh"
"""The reserved gateway name meaning "the sidecars" in a VirtualService's ``gateways``."""


def resolve_gateway(ref: str, namespace: str) -> str:
    """A VirtualService's gateway reference as ``<namespace>/<name>`` (Istio: a name without a
    namespace is in the VirtualService's own namespace); ``mesh`` stays ``mesh``."""
    if ref == MESH_GATEWAY or "/" in ref:
        return ref
    return f"{namespace}/{ref}"


def is_ip(value: str) -> bool:
    """True for an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def resolve_host(host: str, namespace: str, domain_suffix: str = "cluster.local") -> str:
    """Resolve a host as Istio does: a name without a dot is short for
    ``<name>.<namespace>.svc.<suffix>``; anything with a dot, ``*`` and IPs are taken as given."""
    if not host or host == "*" or is_ip(host) or "." in host:
        return host.lower()
    return f"{host}.{namespace}.svc.{domain_suffix}".lower()


def service_fqdn(name: str, namespace: str, domain_suffix: str = "cluster.local") -> str:
    """FQDN of a mesh service: ``<name>.<namespace>.svc.<suffix>``."""
    return f"{name}.{namespace}.svc.{domain_suffix}".lower()


def outbound_cluster(port: int, subset: str, fqdn: str) -> str:
    """Istio's outbound cluster name ``outbound|<port>|<subset>|<fqdn>``."""
    return f"outbound|{port}|{subset}|{fqdn}"


def inbound_cluster(port: int) -> str:
    """Istio's inbound cluster name ``inbound|<port>||``."""
    return f"inbound|{port}||"


def parse_outbound_cluster(name: str) -> tuple[int, str, str] | None:
    """(port, subset, fqdn) of an outbound cluster name, or None."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] != "outbound":
        return None
    try:
        return int(parts[1]), parts[2], parts[3]
    except ValueError:
        return None


TLS_MODE_LABEL = "security.istio.io/tlsMode"
"""Istio's workload / endpoint label ``istio``: the workload's sidecar holds a mesh certificate."""


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """``spiffe://<trust-domain>/ns/<ns>/sa/<sa>``."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


KIND_ALIASES: dict[str, str] = {
    "virtualservice": "VirtualService",
    "virtualservices": "VirtualService",
    "vs": "VirtualService",
    "destinationrule": "DestinationRule",
    "destinationrules": "DestinationRule",
    "dr": "DestinationRule",
    "serviceentry": "ServiceEntry",
    "serviceentries": "ServiceEntry",
    "se": "ServiceEntry",
    "workloadentry": "WorkloadEntry",
    "workloadentries": "WorkloadEntry",
    "we": "WorkloadEntry",
    "sidecar": "Sidecar",
    "sidecars": "Sidecar",
    "gateway": "Gateway",
    "gateways": "Gateway",
    "gw": "Gateway",
    "telemetry": "Telemetry",
    "telemetries": "Telemetry",
    "meshconfig": "MeshConfig",
    "meshconfigs": "MeshConfig",
    "mesh-config": "MeshConfig",
    "authorizationpolicy": "AuthorizationPolicy",
    "authorizationpolicies": "AuthorizationPolicy",
    "ap": "AuthorizationPolicy",
    "requestauthentication": "RequestAuthentication",
    "requestauthentications": "RequestAuthentication",
    "ra": "RequestAuthentication",
    "peerauthentication": "PeerAuthentication",
    "peerauthentications": "PeerAuthentication",
    "pa": "PeerAuthentication",
}


def canonical_kind(kind: str) -> str | None:
    """The canonical kind for a user-typed kind (case-insensitive, plural and short forms)."""
    return KIND_ALIASES.get(kind.lower())
