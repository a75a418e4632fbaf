"""EDS: one ClusterLoadAssignment per EDS cluster (a service port, optionally a subset).

Each endpoint of a registered workload carries metadata: ``envoy.transport_socket_match``
(``tlsMode: istio`` when it is reached over mesh mTLS, see :mod:`.mtls`) and ``novamesh.peer``,
the workload's ``<workload>,<namespace>,<app>,<version>`` (see
:func:`novamesh.observe.envoy_config.endpoint_peer_metadata`), from which the client sidecar's
metrics name the destination workload of TCP connections and of requests that got no answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config.names import outbound_cluster
from ..model.snapshot import Endpoint, MeshSnapshot, Service
from ..observe.envoy_config import endpoint_peer_metadata
from .common import socket_address
from .mtls import endpoint_metadata

__all__ = ["load_assignment", "endpoints_for_service"]


def _lb_endpoints(endpoints: list[Endpoint], port: int, metadata: Callable[[Endpoint], dict[str, Any] | None] | None = None) -> list[dict[str, Any]]:
    out = []
    for ep in sorted(endpoints, key=lambda e: (e.address, e.workload_id)):
        target = ep.port_for(port)
        if target is None:
            continue
        entry: dict[str, Any] = {"endpoint": {"address": socket_address(ep.address, target)}}
        md = metadata(ep) if metadata is not None else None
        if md:
            entry["metadata"] = md  # tlsMode (mtls.py) and the workload's identity for metrics
        if ep.weight != 1:
            entry["load_balancing_weight"] = ep.weight
        out.append(entry)
    return out


def _metadata(snapshot: MeshSnapshot, service: Service, endpoint: Endpoint, port: int) -> dict[str, Any] | None:
    """The mTLS match metadata and, for a registered workload, its identity for metrics."""
    md = endpoint_metadata(snapshot, service, endpoint, port)
    if not endpoint.workload_id:  # WorkloadEntry or DNS endpoints: no registered workload to name
        return md
    filters = dict(md["filter_metadata"]) if md else {}
    name = service.short_name or service.hostname.split(".")[0]
    filters.update(endpoint_peer_metadata(name, service.namespace, dict(endpoint.labels)))
    return {"filter_metadata": dict(sorted(filters.items()))}


def load_assignment(cluster_name: str, service: Service, port: int, selector: dict[str, str] | None,
                    snapshot: MeshSnapshot | None = None) -> dict[str, Any]:  # fmt: skip
    """The endpoints of ``service`` on ``port`` matching ``selector`` (all if None); with
    ``snapshot``, each endpoint carries its metadata (module docstring)."""
    eps = [e for e in service.endpoints if selector is None or e.matches(selector)]
    md = (lambda ep: _metadata(snapshot, service, ep, port)) if snapshot is not None else None
    lb = _lb_endpoints(eps, port, md)
    return {"cluster_name": cluster_name, "endpoints": [{"lb_endpoints": lb}] if lb else []}


def endpoints_for_service(snapshot: MeshSnapshot, service: Service) -> dict[str, dict[str, Any]]:
    """All EDS assignments of one service: per port, and per port and DestinationRule subset."""
    out: dict[str, dict[str, Any]] = {}
    if service.resolution != "EDS":
        return out
    dr = snapshot.destination_rule_for(service.hostname)
    subsets = [(s.name, dict(s.labels)) for s in getattr(dr.spec, "subsets", [])] if dr else []
    for p in service.ports:
        name = outbound_cluster(p.number, "", service.hostname)
        out[name] = load_assignment(name, service, p.number, None, snapshot)
        for sname, labels in subsets:
            sub = outbound_cluster(p.number, sname, service.hostname)
            out[sub] = load_assignment(sub, service, p.number, labels, snapshot)
    return out
