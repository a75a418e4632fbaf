"""Typed models of the Istio kinds novamesh accepts.

Field names follow Istio's YAML (camelCase) exactly. Models forbid unknown fields, so a typo is
an error with its field path rather than a silently ignored setting. Fields are added here only
when the data plane honours them; docs/istio-fields.md lists the status of every Istio field.
"""

from __future__ import annotations

import typing
from typing import Literal

from pydantic import Field, field_validator

from .base import Destination, Duration, Percent, PortSelector, Spec, StringMatch, WorkloadSelector, parse_duration
from .types_traffic import TrafficPolicy
from .types_sidecar import SidecarSpec, TCPRoute, TLSRoute
from .types_security import PeerAuthenticationSpec
from .types_gateway import GatewaySpec
from .types_telemetry import TelemetrySpec
from .types_mesh import MESH_CONFIG_GROUP, MeshConfigSpec
from .types_authz import SECURITY_GROUP, AuthorizationPolicySpec, RequestAuthenticationSpec
from .types_http import CorsPolicy, Headers, HTTPDirectResponse, HTTPFaultInjection, HTTPMirrorPolicy, HTTPRedirect, HTTPRetry, HTTPRewrite

__all__ = [
    "Spec",
    "Duration",
    "Percent",
    "parse_duration",
    "StringMatch",
    "PortSelector",
    "Destination",
    "HTTPMatchRequest",
    "HTTPRouteDestination",
    "HTTPRoute",
    "VirtualServiceSpec",
    "Subset",
    "DestinationRuleSpec",
    "ServicePort",
    "PROTOCOLS",
    "WorkloadEntrySpec",
    "WorkloadSelector",
    "ServiceEntrySpec",
    "SPEC_TYPES",
    "API_GROUPS",
]


class HTTPMatchRequest(Spec):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    port: int | None = Field(default=None, ge=1, le=65535)
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool = False
    without_headers: dict[str, StringMatch] = Field(default_factory=dict)
    source_labels: dict[str, str] = Field(default_factory=dict)
    source_namespace: str | None = None
    gateways: list[str] = Field(default_factory=list)


class HTTPRouteDestination(Spec):
    destination: Destination
    weight: int | None = Field(default=None, ge=0, le=100)
    headers: Headers | None = None


class HTTPRoute(Spec):
    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    # Per-route policies (models in types_http.py, translation in translate/http_policies.py).
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirrors: list[HTTPMirrorPolicy] = Field(default_factory=list)
    mirror_percentage: Percent | None = None
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None


class VirtualServiceSpec(Spec):
    hosts: list[str] = Field(min_length=1)
    gateways: list[str] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    tls: list[TLSRoute] = Field(default_factory=list)
    tcp: list[TCPRoute] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)


class Subset(Spec):
    name: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class DestinationRuleSpec(Spec):
    host: str = Field(min_length=1)
    subsets: list[Subset] = Field(default_factory=list)
    traffic_policy: TrafficPolicy | None = None
    export_to: list[str] = Field(default_factory=list)


Protocol = Literal["HTTP", "HTTPS", "GRPC", "HTTP2", "GRPC-WEB", "MONGO", "TCP", "TLS", "UDP"]

PROTOCOLS: tuple[str, ...] = typing.get_args(Protocol)
"""Port protocols accepted in a ServicePort (Istio's names; matched case-insensitively)."""


class ServicePort(Spec):
    number: int = Field(ge=1, le=65535)
    protocol: str = ""
    name: str = ""
    target_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        # Istio matches protocol names case-insensitively; store the canonical upper-case form
        # so later stages compare one spelling.
        upper = value.upper()
        if upper not in PROTOCOLS:
            raise ValueError(f"unknown protocol {value!r}; expected one of {', '.join(PROTOCOLS)}")
        return upper


class WorkloadEntrySpec(Spec):
    address: str = ""
    ports: dict[str, int] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    network: str = ""
    locality: str = ""
    weight: int | None = Field(default=None, ge=0)
    service_account: str = ""


class ServiceEntrySpec(Spec):
    hosts: list[str] = Field(min_length=1)
    addresses: list[str] = Field(default_factory=list)
    ports: list[ServicePort] = Field(default_factory=list)
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"] = "NONE"
    endpoints: list[WorkloadEntrySpec] = Field(default_factory=list)
    workload_selector: WorkloadSelector | None = None
    export_to: list[str] = Field(default_factory=list)
    subject_alt_names: list[str] = Field(default_factory=list)


SPEC_TYPES: dict[str, type[Spec]] = {
    "VirtualService": VirtualServiceSpec,
    "DestinationRule": DestinationRuleSpec,
    "ServiceEntry": ServiceEntrySpec,
    "WorkloadEntry": WorkloadEntrySpec,
    "Sidecar": SidecarSpec,
    "Gateway": GatewaySpec,
    "MeshConfig": MeshConfigSpec,  # novamesh.io/v1alpha1; see types_mesh.py
    "Telemetry": TelemetrySpec,  # telemetry.istio.io; see types_telemetry.py
    "AuthorizationPolicy": AuthorizationPolicySpec,  # security.istio.io; see types_authz.py
    "RequestAuthentication": RequestAuthenticationSpec,  # security.istio.io
    "PeerAuthentication": PeerAuthenticationSpec,  # security.istio.io; see types_security.py
}
"""Kinds accepted today, mapped to their spec model."""

API_GROUPS: dict[str, tuple[str, ...]] = {
    "networking.istio.io": ("v1", "v1beta1", "v1alpha3"),
    "telemetry.istio.io": ("v1", "v1alpha1"),  # Telemetry only
    SECURITY_GROUP: ("v1", "v1beta1"),  # AuthorizationPolicy, RequestAuthentication
    MESH_CONFIG_GROUP: ("v1alpha1",),  # MeshConfig only (checked in _semantic_mesh.py)
}
"""API groups and versions accepted (``apiVersion: <group>/<version>``)."""
