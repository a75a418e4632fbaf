"""Typed models for L4 traffic and egress scoping: the Sidecar kind and VirtualService ``tcp`` and
``tls`` routes.

Field names follow Istio's YAML exactly (camelCase aliases, unknown fields rejected). Real Istio
fields the data plane does not honour yet are left out of the models and listed in
``NOT_YET_SUPPORTED`` (config/_schema.py), so they are rejected by name. Semantic checks live in
:mod:`._semantic_sidecar`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from .base import Destination, Spec, WorkloadSelector

__all__ = [
    "SIDECAR_NOT_YET_SUPPORTED",
    "IstioEgressListener",
    "L4MatchAttributes",
    "OutboundTrafficPolicy",
    "RouteDestination",
    "SidecarPort",
    "SidecarSpec",
    "TCPRoute",
    "TLSMatchAttributes",
    "TLSRoute",
]


class L4MatchAttributes(Spec):
    """Istio L4MatchAttributes (``tcp[].match[]``): conditions on a TCP connection."""

    port: int | None = Field(default=None, ge=1, le=65535)
    source_namespace: str | None = None


class TLSMatchAttributes(Spec):
    """Istio TLSMatchAttributes (``tls[].match[]``): SNI names plus L4 conditions."""

    sni_hosts: list[str] = Field(default_factory=list)
    port: int | None = Field(default=None, ge=1, le=65535)
    source_namespace: str | None = None


class RouteDestination(Spec):
    """Istio RouteDestination: a destination and its share of connections (0-100)."""

    destination: Destination
    weight: int | None = Field(default=None, ge=0, le=100)


class TCPRoute(Spec):
    """Istio TCPRoute: the first route whose match applies picks the connection's destination."""

    match: list[L4MatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(default_factory=list)


class TLSRoute(Spec):
    """Istio TLSRoute: TLS passthrough routed by the client's SNI."""

    match: list[TLSMatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(default_factory=list)


class SidecarPort(Spec):
    """Istio SidecarPort of an egress listener (only ``number`` changes behaviour here)."""

    number: int = Field(ge=1, le=65535)
    protocol: str = ""
    name: str = ""


class IstioEgressListener(Spec):
    """One egress entry: the hosts (``namespace/dnsName``) the proxy may reach, optionally on one
    port only."""

    port: SidecarPort | None = None
    hosts: list[str] = Field(min_length=1)


class OutboundTrafficPolicy(Spec):
    """What the sidecar does with a request for a host the mesh does not know."""

    # Istio's proto zero value: `outboundTrafficPolicy: {}` means REGISTRY_ONLY.
    mode: Literal["REGISTRY_ONLY", "ALLOW_ANY"] = "REGISTRY_ONLY"

    @field_validator("mode", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        # Istio enums are case-sensitive in proto JSON, but accepting `allow_any` costs nothing.
        return value.upper() if isinstance(value, str) else value


class SidecarSpec(Spec):
    """Istio Sidecar: which services a proxy sees (egress) and its outbound traffic policy."""

    workload_selector: WorkloadSelector | None = None
    egress: list[IstioEgressListener] = Field(default_factory=list)
    outbound_traffic_policy: OutboundTrafficPolicy | None = None


SIDECAR_NOT_YET_SUPPORTED: dict[type[BaseModel], tuple[str, ...]] = {
    L4MatchAttributes: ("destinationSubnets", "sourceLabels", "gateways"),
    TLSMatchAttributes: ("destinationSubnets", "sourceLabels", "gateways"),
    SidecarPort: ("targetPort",),
    IstioEgressListener: ("bind", "captureMode"),
    OutboundTrafficPolicy: ("egressProxy",),
    SidecarSpec: ("ingress", "inboundConnectionPool"),
}
"""Real Istio fields of these models that novamesh rejects as not supported yet (merged into
``NOT_YET_SUPPORTED`` in config/_schema.py)."""
