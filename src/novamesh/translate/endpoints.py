"""EDS: one ClusterLoadAssignment per EDS cluster (a service port, optionally a subset)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config.names import outbound_cluster
from ..model.snapshot import Endpoint, MeshSnapshot, Service
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
            entry["metadata"] = md  # tlsMode for the cluster's transport_socket_matches (mtls.py)
        if ep.weight != 1:
            entry["load_balancing_weight"] = ep.weight
        out.append(entry)
    return out


def load_assignment(cluster_name: str, service: Service, port: int, selector: dict[str, str] | None,
                    snapshot: MeshSnapshot | None = None) -> dict[str, Any]:  # fmt: skip
    """The endpoints of ``service`` on ``port`` matching ``selector`` (all if None); with
    ``snapshot``, each endpoint carries its mesh mTLS metadata."""
    eps = [e for e in service.endpoints if selector is None or e.matches(selector)]
    md = (lambda ep: endpoint_metadata(snapshot, service, ep, port)) if snapshot is not None else None
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
