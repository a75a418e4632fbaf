"""The Sidecar resource: which Sidecar applies to a proxy, and the services it may reach.

Istio's precedence: a Sidecar in the proxy's namespace whose ``workloadSelector`` picks the
proxy, else the namespace's Sidecar without a selector, else the selector-less Sidecar of the
root namespace (``istio-system``). Proxies that end up with the same Sidecar (and namespace)
see the same services, so they share one class translation (see ``ClassKey.sidecar``).

Egress hosts are ``namespace/dnsName``: ``.`` is the proxy's namespace (also for the root
namespace's Sidecar, as in Istio), ``*`` any namespace, ``~`` none; ``dnsName`` is ``*``, a
wildcard ``*.example.com``, or a host — short names resolve in the namespace before the slash.
An egress entry with ``port`` admits only that port of the hosts it names.

The outbound traffic policy of a proxy is its Sidecar's ``outboundTrafficPolicy``; without one,
the root namespace's selector-less Sidecar's; without that, the MeshConfig's (types_mesh.py);
without that, REGISTRY_ONLY — see docs/architecture.md for why the default differs from Istio.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from ..config.names import resolve_host
from ..config.resource import Resource
from ..config.types_mesh import MeshConfigSpec
from ..config.types_sidecar import SidecarSpec
from ..model.snapshot import MeshSnapshot, Service

__all__ = ["ROOT_NAMESPACE", "outbound_policy", "scoped_snapshot", "sidecar_for", "sidecar_ref"]

ROOT_NAMESPACE = "istio-system"
"""Istio's default config root namespace: its selector-less Sidecar is the mesh-wide default."""


def _spec(resource: Resource) -> SidecarSpec:
    spec = resource.spec
    assert isinstance(spec, SidecarSpec)
    return spec


def _selector(resource: Resource) -> dict[str, str]:
    sel = _spec(resource).workload_selector
    return dict(sel.labels) if sel is not None else {}


def sidecar_for(snapshot: MeshSnapshot, namespace: str, labels: Mapping[str, str]) -> Resource | None:
    """The Sidecar that applies to a proxy in ``namespace`` with ``labels`` (None: no scoping)."""
    own = [s for s in snapshot.sidecars if s.namespace == namespace]
    for sc in own:  # sorted by key, so the first by name wins among overlapping selectors
        sel = _selector(sc)
        if sel and all(labels.get(k) == v for k, v in sel.items()):
            return sc
    for sc in own:
        if not _selector(sc):
            return sc
    return _root_default(snapshot)


def _root_default(snapshot: MeshSnapshot) -> Resource | None:
    return next((s for s in snapshot.sidecars if s.namespace == ROOT_NAMESPACE and not _selector(s)), None)


def sidecar_ref(snapshot: MeshSnapshot, namespace: str, labels: Mapping[str, str]) -> str:
    """``<namespace>/<name>`` of the Sidecar for a proxy, or "" when none applies."""
    sc = sidecar_for(snapshot, namespace, labels)
    return f"{sc.namespace}/{sc.name}" if sc is not None else ""


def _by_ref(snapshot: MeshSnapshot, ref: str) -> Resource | None:
    return next((s for s in snapshot.sidecars if f"{s.namespace}/{s.name}" == ref), None)


def outbound_policy(snapshot: MeshSnapshot, ref: str) -> tuple[str, str]:
    """(mode, where it came from) for the proxies of Sidecar ``ref`` ("" = none)."""
    for sc in (_by_ref(snapshot, ref) if ref else None, _root_default(snapshot)):
        if sc is not None and _spec(sc).outbound_traffic_policy is not None:
            policy = _spec(sc).outbound_traffic_policy
            assert policy is not None
            return policy.mode, f"Sidecar {sc.namespace}/{sc.name}"
    mesh = snapshot.mesh_config  # the mesh-wide fallback after every Sidecar (types_mesh.py)
    if mesh is not None and isinstance(mesh.spec, MeshConfigSpec) and mesh.spec.outbound_traffic_policy is not None:
        return mesh.spec.outbound_traffic_policy.mode, f"MeshConfig {mesh.namespace}/{mesh.name}"
    return "REGISTRY_ONLY", "the novamesh default"


def _host_matches(pattern_ns: str, pattern: str, svc: Service, client_ns: str, suffix: str) -> bool:
    if pattern_ns == "~":
        return False
    ns = client_ns if pattern_ns == "." else pattern_ns
    if ns != "*" and svc.namespace != ns:
        return False
    host = svc.hostname
    if pattern == "*":
        return True
    pattern = pattern.lower()
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    if "." not in pattern and ns == "*":
        return svc.short_name == pattern or host == pattern
    return host == resolve_host(pattern, ns, suffix)


def scoped_snapshot(snapshot: MeshSnapshot, ref: str, client_ns: str) -> MeshSnapshot:
    """``snapshot`` with only the services (and ports) Sidecar ``ref``'s egress admits for a
    proxy in ``client_ns``. Without a Sidecar or without egress, the snapshot itself."""
    sc = _by_ref(snapshot, ref) if ref else None
    if sc is None or not _spec(sc).egress:
        return snapshot
    egress = _spec(sc).egress
    kept: dict[str, Service] = {}
    for name, svc in snapshot.services.items():
        ports = []
        for port in svc.ports:
            for listener in egress:
                if listener.port is not None and listener.port.number != port.number:
                    continue
                if any(
                    _host_matches(ns, host, svc, client_ns, snapshot.domain_suffix)
                    for ns, _, host in (h.partition("/") for h in listener.hosts)
                ):
                    ports.append(port)
                    break
        if ports:
            kept[name] = svc if len(ports) == len(svc.ports) else dataclasses.replace(svc, ports=tuple(ports))
    return dataclasses.replace(snapshot, services=MappingProxyType(kept))
