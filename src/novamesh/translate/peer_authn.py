"""PeerAuthentication: which mTLS mode a workload's sidecar enforces on each inbound port.

Istio's precedence, resolved for one workload (namespace + labels) and port:

1. a *workload* policy: a PeerAuthentication in the workload's namespace whose ``selector``
   matches its labels (the oldest — first by name here, as the store keeps no creation time —
   when several do); its ``portLevelMtls`` entry for the port wins over its ``mtls``;
2. the *namespace* policy: the one without a selector in the workload's namespace;
3. the *mesh* policy: the one without a selector in the root namespace (``istio-system``);
4. the mesh default, ``PERMISSIVE`` (Istio's default).

``UNSET`` (or no ``mtls``) at one level means "ask the next level". Ports are the ports the
sidecar serves (the service ports other workloads connect to; in local mode the app's own port is
a private detail of the host).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..config.resource import Resource
from ..config.types_mesh import ROOT_NAMESPACE
from ..config.types_security import PeerAuthenticationMTLS, PeerAuthenticationSpec
from ..model.snapshot import MeshSnapshot

__all__ = ["DEFAULT_MODE", "InboundMtls", "effective_mode", "inbound_mtls"]

DEFAULT_MODE = "PERMISSIVE"
"""Istio's mesh default when no PeerAuthentication says otherwise."""


@dataclass(frozen=True)
class InboundMtls:
    """The resolved modes of one workload: ``default`` for every port, ``ports`` overriding it."""

    default: str = DEFAULT_MODE
    ports: tuple[tuple[int, str], ...] = ()

    def mode(self, port: int) -> str:
        """The mode enforced on inbound ``port``: STRICT, PERMISSIVE or DISABLE."""
        return dict(self.ports).get(port, self.default)


def _spec(r: Resource) -> PeerAuthenticationSpec:
    assert isinstance(r.spec, PeerAuthenticationSpec)
    return r.spec


def _mode(mtls: PeerAuthenticationMTLS | None) -> str | None:
    return None if mtls is None or mtls.mode == "UNSET" else mtls.mode


def _levels(snapshot: MeshSnapshot, namespace: str, labels: Mapping[str, str]) -> tuple[Resource | None, Resource | None, Resource | None]:
    workload = ns_wide = mesh = None
    for r in snapshot.peer_authentications:  # sorted by key: the first is the oldest name
        spec = _spec(r)
        selector = spec.selector.match_labels if spec.selector is not None else {}
        if r.namespace == namespace and selector:
            if workload is None and all(labels.get(k) == v for k, v in selector.items()):
                workload = r
        elif r.namespace == namespace and not selector:
            ns_wide = ns_wide or r
        if r.namespace == ROOT_NAMESPACE and not selector:
            mesh = mesh or r
    return workload, ns_wide, mesh


def inbound_mtls(snapshot: MeshSnapshot, namespace: str, labels: Mapping[str, str], ports: tuple[int, ...] = ()) -> InboundMtls:
    """The modes for a workload in ``namespace`` with ``labels`` serving ``ports``."""
    workload, ns_wide, mesh = _levels(snapshot, namespace, labels)
    default = DEFAULT_MODE
    for r in (mesh, ns_wide, workload):  # each more specific level overrides a set mode
        m = _mode(_spec(r).mtls) if r is not None else None
        if m is not None:
            default = m
    overrides: list[tuple[int, str]] = []
    if workload is not None:
        for port, mtls in sorted(_spec(workload).port_level_mtls.items()):
            m = _mode(mtls)
            if m is not None and (not ports or port in ports) and m != default:
                overrides.append((port, m))
    return InboundMtls(default, tuple(overrides))


def effective_mode(snapshot: MeshSnapshot, namespace: str, labels: Mapping[str, str], port: int) -> str:
    """The mode one workload enforces on ``port`` (STRICT, PERMISSIVE or DISABLE)."""
    return inbound_mtls(snapshot, namespace, labels).mode(port)
