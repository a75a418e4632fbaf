"""Typed model of the ``MeshConfig`` kind: mesh-wide defaults every service gets unless its own
VirtualService or DestinationRule says otherwise.

Istio keeps its MeshConfig in a ConfigMap outside its API; novamesh stores it as a versioned
resource (``apiVersion: novamesh.io/v1alpha1``, ``kind: MeshConfig``) so that history, rollback
and backup cover it like every other change. There is one per mesh: named ``default`` in the
root namespace ``istio-system`` (checked in :mod:`._semantic_mesh`).

Fields are named after Istio's MeshConfig where Istio has one (``defaultHttpRetryPolicy``,
``outboundTrafficPolicy``); ``defaultHttpTimeout`` and ``defaultTrafficPolicy`` are novamesh's
own. The models inside are the ones VirtualService and DestinationRule use, so a value means
the same thing in both places. How the defaults are applied: :mod:`novamesh.translate.mesh_defaults`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from .base import Duration, Spec, parse_duration
from .types_http import HTTPRetry
from .types_sidecar import OutboundTrafficPolicy
from .types_traffic import ConnectionPoolSettings, OutlierDetection
from .types_telemetry import ExtensionProvider
from .types_authz import PathNormalization

__all__ = [
    "MESH_CONFIG_API_VERSION",
    "MESH_CONFIG_GROUP",
    "MESH_CONFIG_KIND",
    "MESH_CONFIG_NAME",
    "MESH_NOT_YET_SUPPORTED",
    "ROOT_NAMESPACE",
    "MeshConfigSpec",
    "MeshTrafficPolicy",
]

MESH_CONFIG_KIND = "MeshConfig"
MESH_CONFIG_GROUP = "novamesh.io"
MESH_CONFIG_API_VERSION = f"{MESH_CONFIG_GROUP}/v1alpha1"
"""The only apiVersion a MeshConfig may have (it is not an Istio kind)."""

ROOT_NAMESPACE = "istio-system"
"""Istio's default config root namespace: home of the MeshConfig (and of mesh-wide Sidecars)."""

MESH_CONFIG_NAME = "default"
"""The name of the one MeshConfig of a mesh."""


class MeshTrafficPolicy(Spec):
    """The part of a DestinationRule ``trafficPolicy`` that makes sense for every service.

    A DestinationRule (its top level, a subset, a port-level entry) that sets ``connectionPool``
    or ``outlierDetection`` replaces the mesh default of that field as a whole, the way Istio
    merges traffic policies.
    """

    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None


class MeshConfigSpec(Spec):
    """Mesh-wide defaults. Every field is optional; an unset field keeps novamesh's default
    (shown by ``novamesh get mesh-config``)."""

    default_http_timeout: Duration | None = None
    """Timeout of every HTTP route without ``timeout`` (``0s``: none, Istio's default)."""
    default_http_retry_policy: HTTPRetry | None = None
    """Retry policy of every HTTP route without ``retries`` (Istio's ``defaultHttpRetryPolicy``)."""
    default_traffic_policy: MeshTrafficPolicy | None = None
    """Connection pool and outlier detection of every outbound cluster."""
    outbound_traffic_policy: OutboundTrafficPolicy | None = None
    """REGISTRY_ONLY / ALLOW_ANY for proxies no Sidecar gives a policy (Istio's field)."""
    extension_providers: list[ExtensionProvider] = Field(default_factory=list)
    """Tracing providers a Telemetry can name (Istio's field; see types_telemetry.py)."""
    path_normalization: PathNormalization | None = None
    """Inbound path normalization where policies apply (Istio's field; see translate/authz.py)."""

    def timeout_seconds(self) -> float:
        """``defaultHttpTimeout`` in seconds (0: no mesh-wide timeout)."""
        return parse_duration(self.default_http_timeout) if self.default_http_timeout is not None else 0.0


MESH_NOT_YET_SUPPORTED: dict[type[BaseModel], tuple[str, ...]] = {
    MeshConfigSpec: (
        "accessLogFile",
        "accessLogFormat",
        "accessLogEncoding",
        "enableTracing",
        "defaultConfig",
        "connectTimeout",
        "tcpKeepalive",
        "h2UpgradePolicy",
        "localityLbSetting",
        "rootNamespace",
        "trustDomain",
        "trustDomainAliases",
        "enableAutoMtls",
        "meshMTLS",
        "tlsDefaults",
        "defaultProviders",
        "defaultServiceExportTo",
        "defaultVirtualServiceExportTo",
        "defaultDestinationRuleExportTo",
        "protocolDetectionTimeout",
        "dnsRefreshRate",
        "discoverySelectors",
        "serviceSettings",
        "inboundTrafficPolicy",
        "ingressClass",
        "ingressService",
        "ingressControllerMode",
        "ingressSelector",
        "enablePrometheusMerge",
        "outboundClusterStatName",
        "inboundClusterStatName",
    ),
}
"""Istio MeshConfig fields that a novamesh MeshConfig rejects by name rather than silently
ignoring (merged into ``_schema.NOT_YET_SUPPORTED``). ``defaultTrafficPolicy`` takes only
``connectionPool`` and ``outlierDetection``: load balancing and TLS are per service by nature."""
