"""What :mod:`.describe` produces: the description types every section fills, and the helpers
the sections share (the snapshot they read, the one-line proxy sync summary).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config.resource import Resource, ResourceKey
from ..model.snapshot import MeshSnapshot, build_snapshot
from ..registry.registry import Workload

__all__ = ["TOPICS", "ServiceDescription", "WorkloadDescription", "mesh_snapshot", "proxy_line", "proxy_synced"]

TOPICS = (
    "routes", "subsets", "endpoints", "connection_pool", "outlier_detection", "load_balancer", "tls",
    "retries", "timeouts", "faults", "sidecar", "authorization", "resolution",
)
"""Keys of :attr:`ServiceDescription.facts` (what :mod:`.flags` looks up per response flag)."""


@dataclass
class ServiceDescription:
    """What applies to one service; :func:`.describe.render` prints it, :meth:`to_dict` is ``-o json``."""

    name: str
    namespace: str
    hostname: str
    origin: str
    ports: list[str] = field(default_factory=list)
    sections: list[tuple[str, list[str]]] = field(default_factory=list)
    """(heading, lines) in print order."""
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    proxies: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, list[str]] = field(default_factory=dict)
    """Topic (see :data:`TOPICS`) -> sentences naming the resource and field responsible."""
    virtual_services: list[str] = field(default_factory=list)
    destination_rules: list[str] = field(default_factory=list)

    def fact(self, topic: str, sentence: str) -> None:
        """Record ``sentence`` under ``topic`` (one of :data:`TOPICS`)."""
        self.facts.setdefault(topic, []).append(sentence)

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.name, "namespace": self.namespace, "hostname": self.hostname, "origin": self.origin,
            "ports": self.ports, "virtualServices": self.virtual_services, "destinationRules": self.destination_rules,
            "sections": [{"title": t, "lines": lines} for t, lines in self.sections],
            "endpoints": self.endpoints, "proxies": self.proxies, "facts": self.facts,
        }


@dataclass
class WorkloadDescription:
    """A workload, its service's description and what selects the workload itself."""

    workload: dict[str, Any]
    service: ServiceDescription | None
    sections: list[tuple[str, list[str]]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "sections": [{"title": t, "lines": lines} for t, lines in self.sections],
            "service": self.service.to_dict() if self.service is not None else None,
        }


def mesh_snapshot(resources: Mapping[ResourceKey, Resource], workloads: Sequence[Workload], suffix: str) -> MeshSnapshot:
    """The snapshot the control plane would build from this config and these workloads."""
    return build_snapshot(resources, workloads, revision=0, registry_version=0, domain_suffix=suffix)


def proxy_synced(p: Mapping[str, Any]) -> bool:
    """Whether every xDS type of a proxy (a ``GET /api/v1/proxies`` dict) is SYNCED or NOT SENT."""
    states = [st.get("status", "?") for st in p.get("types", {}).values()]
    return bool(states) and all(s in ("SYNCED", "NOT SENT") for s in states)


def proxy_line(p: Mapping[str, Any]) -> str:
    """``<id> (<service> <version>) SYNCED``, or the status of each xDS type when not synced."""
    states = {t: st.get("status", "?") for t, st in sorted(p.get("types", {}).items())}
    if proxy_synced(p):
        summary = "SYNCED"
    else:
        summary = ", ".join(f"{t} {s}" for t, s in states.items()) or "unknown"
    return f"{p.get('id')} ({p.get('service')} {p.get('version') or ''}) {summary}".replace(" )", ")")
