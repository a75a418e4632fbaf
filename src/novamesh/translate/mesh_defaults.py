"""Mesh-wide defaults from the MeshConfig (``istio-system/default``), for translation and display.

Precedence, lowest first (each level replaces the one below it):

- HTTP routes: built-in default (no timeout; Istio's default retry policy) < MeshConfig
  ``defaultHttpTimeout`` / ``defaultHttpRetryPolicy`` < the route's own ``timeout`` / ``retries``.
  A route's ``retries`` replaces the mesh policy as a whole (fields it omits come from Istio's
  built-in policy, exactly as without a MeshConfig); ``timeout: 0s`` on a route turns the mesh
  timeout off for it. Default routes (services without a VirtualService) get the mesh values.
- Outbound clusters: Envoy's defaults < MeshConfig ``defaultTrafficPolicy`` < DestinationRule
  ``trafficPolicy`` < subset ``trafficPolicy`` < ``portLevelSettings`` — field by field at the
  level of ``connectionPool`` and ``outlierDetection`` (each replaced as a whole), as Istio
  merges traffic policies (see :mod:`.cluster_policies`).
- ``outboundTrafficPolicy``: the proxy's Sidecar, else the root namespace's selector-less
  Sidecar, else the MeshConfig, else REGISTRY_ONLY (:func:`.scoping.outbound_policy`).

Pure: everything is read from the snapshot. :func:`effective_mesh_config` lists every value with
where it came from (``novamesh get mesh-config``, ``GET /api/v1/mesh-config``).
"""

from __future__ import annotations

from typing import Any

from ..config.types_mesh import MeshConfigSpec
from ..model.snapshot import MeshSnapshot
from .cluster_policies import EffectivePolicy
from .common import duration
from .scoping import outbound_policy

__all__ = ["BUILTIN_RETRY_ON", "effective_mesh_config", "mesh_ref", "mesh_spec", "traffic_default"]

BUILTIN_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,503"
"""Istio's default ``retryOn`` (translate/http_policies.py DEFAULT_RETRY_POLICY), as Istio writes it."""

_ISTIO = "Istio default"
_ENVOY = "Envoy default"


def mesh_spec(snapshot: MeshSnapshot) -> MeshConfigSpec | None:
    """The MeshConfig's spec, or None when the mesh has none."""
    resource = snapshot.mesh_config
    if resource is None or not isinstance(resource.spec, MeshConfigSpec):
        return None
    return resource.spec


def mesh_ref(snapshot: MeshSnapshot) -> str:
    """``MeshConfig <namespace>/<name>`` for messages, or "" without one."""
    resource = snapshot.mesh_config
    return f"{resource.kind} {resource.namespace}/{resource.name}" if resource is not None else ""


def traffic_default(snapshot: MeshSnapshot) -> EffectivePolicy | None:
    """The MeshConfig's ``defaultTrafficPolicy`` as the lowest level of the cluster merge."""
    spec = mesh_spec(snapshot)
    tp = spec.default_traffic_policy if spec is not None else None
    if tp is None:
        return None
    return EffectivePolicy(connection_pool=tp.connection_pool, outlier_detection=tp.outlier_detection)


class _Rows:
    """Collects (field, value, source) rows and the nested spec-shaped view of the same values."""

    def __init__(self, configured_by: str) -> None:
        self.configured_by = configured_by
        self.rows: list[dict[str, Any]] = []
        self.effective: dict[str, Any] = {}

    def add(self, path: str, configured: Any, default: Any, default_source: str) -> None:
        is_set = configured is not None
        value = configured if is_set else default
        self.rows.append({"field": path, "value": value, "source": self.configured_by if is_set else default_source,
                          "configured": is_set})
        node = self.effective
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value


def _unset_zero(value: int | None) -> int | None:
    # Istio reads 0 in these connection-pool counters as "not set" (translate/cluster_policies.py).
    return value or None


def effective_mesh_config(snapshot: MeshSnapshot, connect_timeout: float) -> dict[str, Any]:
    """Every mesh-wide default in effect: ``fields`` (one row per value: ``field``, ``value``,
    ``source``, ``configured``), the same values as a spec-shaped ``effective`` mapping, and
    the MeshConfig they came from (``meshConfig``, "" when none)."""
    spec = mesh_spec(snapshot) or MeshConfigSpec()
    rows = _Rows(mesh_ref(snapshot))
    rows.add("defaultHttpTimeout", spec.default_http_timeout, "0s", f"{_ISTIO} (no timeout)")
    retry = spec.default_http_retry_policy
    rows.add("defaultHttpRetryPolicy.attempts", retry.attempts if retry else None, 2, _ISTIO)
    # A retry policy is one unit: fields the mesh policy omits come from Istio's built-in one.
    rows.add("defaultHttpRetryPolicy.retryOn", retry.retry_on if retry else None, BUILTIN_RETRY_ON, _ISTIO)
    rows.add("defaultHttpRetryPolicy.perTryTimeout", retry.per_try_timeout if retry else None, "none",
             f"{_ISTIO} (each try is bounded only by the route timeout)")
    rows.add("defaultHttpRetryPolicy.retryRemoteLocalities", retry.retry_remote_localities if retry else None, False, _ISTIO)

    tp = spec.default_traffic_policy
    pool = tp.connection_pool if tp else None
    tcp = pool.tcp if pool else None
    http = pool.http if pool else None
    base = "defaultTrafficPolicy.connectionPool"
    rows.add(f"{base}.tcp.maxConnections", _unset_zero(tcp.max_connections if tcp else None), 1024, _ENVOY)
    rows.add(f"{base}.tcp.connectTimeout", tcp.connect_timeout if tcp else None, duration(connect_timeout),
             "novamesh setting connect_timeout")
    keepalive = tcp.tcp_keepalive.model_dump(by_alias=True, exclude_none=True) if tcp and tcp.tcp_keepalive else None
    rows.add(f"{base}.tcp.tcpKeepalive", keepalive, "off", _ENVOY)
    rows.add(f"{base}.http.http1MaxPendingRequests", _unset_zero(http.http1_max_pending_requests if http else None), 1024, _ENVOY)
    rows.add(f"{base}.http.http2MaxRequests", _unset_zero(http.http2_max_requests if http else None), 1024, _ENVOY)
    rows.add(f"{base}.http.maxRequestsPerConnection", _unset_zero(http.max_requests_per_connection if http else None),
             "unlimited", _ENVOY)
    rows.add(f"{base}.http.maxRetries", _unset_zero(http.max_retries if http else None), 3, _ENVOY)
    rows.add(f"{base}.http.idleTimeout", http.idle_timeout if http else None, "1h", _ENVOY)

    od = tp.outlier_detection if tp else None
    base = "defaultTrafficPolicy.outlierDetection"
    if od is None:
        rows.add(base, None, "off", "novamesh default (no outlier detection)")
    else:
        rows.add(f"{base}.consecutive5xxErrors", od.consecutive_5xx_errors, 5, _ENVOY)
        rows.add(f"{base}.consecutiveGatewayErrors", od.consecutive_gateway_errors, 0, f"{_ENVOY} (off)")
        rows.add(f"{base}.interval", od.interval, "10s", _ENVOY)
        rows.add(f"{base}.baseEjectionTime", od.base_ejection_time, "30s", _ENVOY)
        rows.add(f"{base}.maxEjectionPercent", _unset_zero(od.max_ejection_percent), 10, _ENVOY)
        rows.add(f"{base}.minHealthPercent", od.min_health_percent, 0, _ISTIO)

    mode, source = outbound_policy(snapshot, "")  # a Sidecar in istio-system outranks the MeshConfig
    rows.rows.append({"field": "outboundTrafficPolicy.mode", "value": mode, "source": source,
                      "configured": source != "the novamesh default"})
    rows.effective["outboundTrafficPolicy"] = {"mode": mode}
    return {"meshConfig": mesh_ref(snapshot), "revision": snapshot.revision, "fields": rows.rows, "effective": rows.effective}
