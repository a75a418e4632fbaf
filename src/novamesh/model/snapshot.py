"""MeshSnapshot: the immutable, indexed state one push is translated from.

Built from the config set (store revision) and the registry (ready workloads). Services come from
two sources: auto-registered workloads (``<service>.<ns>.svc.<suffix>``) and ServiceEntries (each
host is a service; endpoints from ``endpoints``, from WorkloadEntries selected by
``workloadSelector``, or — for DNS — the host itself).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ..config.names import MESH_GATEWAY, resolve_gateway, resolve_host, service_fqdn
from ..config.resource import Resource, ResourceKey
from ..config.types import DestinationRuleSpec, ServiceEntrySpec, VirtualServiceSpec, WorkloadEntrySpec
from ..config.types_mesh import MESH_CONFIG_KIND, MESH_CONFIG_NAME, ROOT_NAMESPACE
from ..config.types_telemetry import MeshTelemetry, mesh_telemetry_from_settings
from ..registry.registry import Workload, WorkloadPort
from ..settings import Settings

__all__ = ["ServicePort", "Endpoint", "Service", "MeshSnapshot", "build_snapshot", "snapshot_for", "HTTP_PROTOCOLS"]

HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB"})
"""Port protocols routed by the HTTP connection manager."""


def protocol_for(protocol: str, name: str) -> str:
    """Istio's protocol selection: explicit protocol, else the port name's prefix (``http-``,
    ``grpc-``...), else TCP for ServiceEntries. Registry ports default to HTTP."""
    proto = (protocol or "").upper()
    if proto:
        return proto
    prefix = name.split("-", 1)[0].lower() if name else ""
    return {
        "http": "HTTP", "http2": "HTTP2", "grpc": "GRPC", "grpc-web": "GRPC-WEB",
        "tcp": "TCP", "tls": "TLS", "https": "HTTPS", "mongo": "MONGO", "udp": "UDP",
    }.get(prefix, "TCP")


@dataclass(frozen=True)
class ServicePort:
    number: int
    protocol: str
    name: str = ""
    target_port: int = 0

    @property
    def is_http(self) -> bool:
        return self.protocol in HTTP_PROTOCOLS


@dataclass(frozen=True)
class Endpoint:
    """An address serving a service; ``ports`` maps service port number to endpoint port."""

    address: str
    ports: tuple[tuple[int, int], ...]
    labels: tuple[tuple[str, str], ...] = ()
    weight: int = 1
    workload_id: str = ""
    service_account: str = ""

    def port_for(self, service_port: int) -> int | None:
        for sp, ep in self.ports:
            if sp == service_port:
                return ep
        return None

    def matches(self, selector: Mapping[str, str]) -> bool:
        labels = dict(self.labels)
        return all(labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True)
class Service:
    """One service host with its ports and endpoints."""

    hostname: str
    namespace: str
    ports: tuple[ServicePort, ...]
    endpoints: tuple[Endpoint, ...] = ()
    resolution: str = "EDS"  # EDS (registry / STATIC) | DNS | DNS_ROUND_ROBIN
    mesh_external: bool = False
    origin: str = "registry"  # "registry" or "ServiceEntry ns/name"
    short_name: str = ""  # registry services: the bare service name

    def port(self, number: int) -> ServicePort | None:
        for p in self.ports:
            if p.number == number:
                return p
        return None


@dataclass(frozen=True)
class MeshSnapshot:
    """Everything a translation needs, immutable and indexed."""

    revision: int
    registry_version: int
    domain_suffix: str
    services: Mapping[str, Service]
    virtual_services: tuple[Resource, ...]
    destination_rules: tuple[Resource, ...]
    version: str = ""
    _vs_by_host: Mapping[str, tuple[Resource, ...]] = field(default_factory=dict, repr=False)
    _dr_by_host: Mapping[str, Resource] = field(default_factory=dict, repr=False)
    sidecars: tuple[Resource, ...] = ()
    """Sidecar resources, sorted by key (translate/scoping.py picks the one for a proxy)."""
    gateways: tuple[Resource, ...] = ()
    _vs_by_gateway: Mapping[str, tuple[Resource, ...]] = field(default_factory=dict, repr=False)
    telemetries: tuple[Resource, ...] = ()
    """Telemetry resources, sorted by key (translate/telemetry.py resolves them per proxy)."""
    mesh_telemetry: MeshTelemetry = field(default_factory=MeshTelemetry)
    """Tracing and access-log providers and defaults (from settings)."""
    mesh_config: Resource | None = None
    """The MeshConfig ``istio-system/default`` (mesh-wide defaults), if any; translate/mesh_defaults.py reads it."""
    authorization_policies: tuple[Resource, ...] = ()
    """AuthorizationPolicy resources, sorted by key (translate/authz.py)."""
    request_authentications: tuple[Resource, ...] = ()
    """RequestAuthentication resources, sorted by key (translate/jwt.py)."""
    path_normalization: str = ""
    """Setting ``path_normalization`` (translate/authz.py; MeshConfig ``pathNormalization`` wins)."""
    peer_authentications: tuple[Resource, ...] = ()
    """PeerAuthentication resources, sorted by key (translate/peer_authn.py)."""
    trust_domain: str = "cluster.local"
    """SPIFFE trust domain of this mesh's workload identities (mTLS SAN checks)."""

    def gateways_selecting(self, labels: Mapping[str, str]) -> tuple[Resource, ...]:
        """Gateways whose selector picks a gateway workload with ``labels`` (Istio: in every
        namespace), sorted by key."""
        return tuple(g for g in self.gateways if all(labels.get(k) == v for k, v in getattr(g.spec, "selector", {}).items()))

    def virtual_services_for_gateway(self, ref: str) -> tuple[Resource, ...]:
        """VirtualServices bound to Gateway ``<namespace>/<name>``, sorted by key."""
        return self._vs_by_gateway.get(ref, ())

    def virtual_services_for(self, hostname: str) -> tuple[Resource, ...]:
        """VirtualServices whose hosts include ``hostname`` (exact or wildcard), oldest key first."""
        exact = self._vs_by_host.get(hostname, ())
        if exact:
            return exact
        for pattern, vss in self._vs_by_host.items():
            if pattern.startswith("*") and hostname.endswith(pattern[1:]):
                return vss
        return ()

    def destination_rule_for(self, hostname: str) -> Resource | None:
        return self._dr_by_host.get(hostname)

    def subset_labels(self, hostname: str, subset: str) -> dict[str, str] | None:
        dr = self.destination_rule_for(hostname)
        if dr is None:
            return None
        spec = dr.spec
        assert isinstance(spec, DestinationRuleSpec)
        for s in spec.subsets:
            if s.name == subset:
                return dict(s.labels)
        return None


def _registry_services(
    workloads: Iterable[Workload], suffix: str, departed: Iterable[tuple[str, str, tuple[WorkloadPort, ...]]] = ()
) -> dict[str, Service]:
    grouped: dict[tuple[str, str], list[Workload]] = {}
    for w in workloads:
        if w.kind not in ("sidecar", "gateway") or not w.ports:  # a gateway is its own service
            continue
        grouped.setdefault((w.namespace, w.service), []).append(w)
    out: dict[str, Service] = {}
    for (ns, name), ws in sorted(grouped.items()):
        ports: dict[int, ServicePort] = {}
        for w in ws:
            for p in w.ports:
                ports.setdefault(p.number, ServicePort(p.number, protocol_for(p.protocol, p.name) if p.protocol else "HTTP", p.name))
        endpoints = tuple(
            Endpoint(
                address=w.address,
                ports=tuple((p.number, p.number) for p in w.ports),
                labels=w.labels,
                workload_id=w.id,
                service_account=w.service_account,
            )
            for w in sorted(ws, key=lambda w: w.id)
            if w.ready
        )
        fqdn = service_fqdn(name, ns, suffix)
        out[fqdn] = Service(
            hostname=fqdn,
            namespace=ns,
            ports=tuple(sorted(ports.values(), key=lambda p: p.number)),
            endpoints=endpoints,
            short_name=name,
        )
    for ns, name, wports in departed:
        fqdn = service_fqdn(name, ns, suffix)
        if fqdn not in out:
            out[fqdn] = Service(
                hostname=fqdn, namespace=ns, short_name=name,
                ports=tuple(ServicePort(p.number, p.protocol or "HTTP", p.name) for p in sorted(wports, key=lambda p: p.number)),
            )
    return dict(sorted(out.items()))


def _entry_endpoint(we: WorkloadEntrySpec, ports: tuple[ServicePort, ...]) -> Endpoint:
    mapping = []
    for p in ports:
        target = we.ports.get(p.name) if p.name else None
        mapping.append((p.number, int(target or p.target_port or p.number)))
    return Endpoint(
        address=we.address,
        ports=tuple(mapping),
        labels=tuple(sorted(we.labels.items())),
        weight=we.weight or 1,
        service_account=we.service_account,
    )


def _entry_services(
    entries: Iterable[Resource], workload_entries: Iterable[Resource], suffix: str
) -> dict[str, Service]:
    wes = list(workload_entries)
    out: dict[str, Service] = {}
    for res in entries:
        spec = res.spec
        assert isinstance(spec, ServiceEntrySpec)
        ports = tuple(
            ServicePort(p.number, protocol_for(p.protocol, p.name), p.name, p.target_port or 0)
            for p in sorted(spec.ports, key=lambda p: p.number)
        )
        members = list(spec.endpoints)
        if spec.workload_selector is not None and spec.workload_selector.labels:
            sel = spec.workload_selector.labels
            for we in wes:
                wspec = we.spec
                assert isinstance(wspec, WorkloadEntrySpec)
                if we.namespace == res.namespace and all(wspec.labels.get(k) == v for k, v in sel.items()):
                    members.append(wspec)
        resolution = spec.resolution
        for host in spec.hosts:
            fqdn = resolve_host(host, res.namespace, suffix)
            if fqdn in out:
                continue  # first ServiceEntry (sorted by key) wins; analyzers report conflicts
            if resolution in ("DNS", "DNS_ROUND_ROBIN", "NONE"):
                kind = "DNS_ROUND_ROBIN" if resolution == "DNS_ROUND_ROBIN" else "DNS"
                if members:
                    eps = tuple(_entry_endpoint(m, ports) for m in members)
                elif "*" in fqdn:
                    eps = ()
                else:
                    eps = (Endpoint(address=fqdn, ports=tuple((p.number, p.target_port or p.number) for p in ports)),)
            else:
                kind = "EDS"
                eps = tuple(_entry_endpoint(m, ports) for m in members)
            out[fqdn] = Service(
                hostname=fqdn,
                namespace=res.namespace,
                ports=ports,
                endpoints=eps,
                resolution=kind,
                mesh_external=spec.location == "MESH_EXTERNAL",
                origin=f"ServiceEntry {res.namespace}/{res.name}",
            )
    return out


def _fingerprint(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def build_snapshot(
    resources: Mapping[ResourceKey, Resource],
    workloads: Iterable[Workload],
    *,
    revision: int,
    registry_version: int,
    domain_suffix: str = "cluster.local",
    departed: Iterable[tuple[str, str, tuple[WorkloadPort, ...]]] = (),
    mesh_telemetry: MeshTelemetry | None = None,
    trust_domain: str = "cluster.local",
    path_normalization: str = "",
) -> MeshSnapshot:
    """Pure: build the indexed snapshot from a config set and the registry's workloads."""
    by_kind: dict[str, list[Resource]] = {}
    for key in sorted(resources):
        by_kind.setdefault(key[0], []).append(resources[key])
    services = _registry_services(workloads, domain_suffix, departed)
    for fqdn, svc in _entry_services(by_kind.get("ServiceEntry", []), by_kind.get("WorkloadEntry", []), domain_suffix).items():
        services.setdefault(fqdn, svc)  # a registered service wins over an entry of the same name
    vss = tuple(by_kind.get("VirtualService", []))
    drs = tuple(by_kind.get("DestinationRule", []))
    vs_by_host: dict[str, list[Resource]] = {}
    vs_by_gateway: dict[str, list[Resource]] = {}
    for vs in vss:
        spec = vs.spec
        assert isinstance(spec, VirtualServiceSpec)
        for ref in dict.fromkeys(resolve_gateway(g, vs.namespace) for g in spec.gateways if g != MESH_GATEWAY):
            vs_by_gateway.setdefault(ref, []).append(vs)
        if spec.gateways and "mesh" not in spec.gateways:
            continue
        for h in spec.hosts:
            vs_by_host.setdefault(resolve_host(h, vs.namespace, domain_suffix), []).append(vs)
    dr_by_host: dict[str, Resource] = {}
    for dr in drs:
        spec = dr.spec
        assert isinstance(spec, DestinationRuleSpec)
        dr_by_host.setdefault(resolve_host(spec.host, dr.namespace, domain_suffix), dr)
    version = _fingerprint(
        revision,
        sorted(
            (repr(s) for s in services.values()),
        ),
    )
    return MeshSnapshot(
        revision=revision,
        registry_version=registry_version,
        domain_suffix=domain_suffix,
        services=MappingProxyType(dict(sorted(services.items()))),
        virtual_services=vss,
        destination_rules=drs,
        sidecars=tuple(by_kind.get("Sidecar", [])),
        version=version,
        _vs_by_host=MappingProxyType({k: tuple(v) for k, v in vs_by_host.items()}),
        _dr_by_host=MappingProxyType(dr_by_host),
        gateways=tuple(by_kind.get("Gateway", [])),
        _vs_by_gateway=MappingProxyType({k: tuple(v) for k, v in vs_by_gateway.items()}),
        telemetries=tuple(by_kind.get("Telemetry", [])),
        mesh_telemetry=mesh_telemetry or MeshTelemetry(),
        mesh_config=resources.get((MESH_CONFIG_KIND, ROOT_NAMESPACE, MESH_CONFIG_NAME)),
        authorization_policies=tuple(by_kind.get("AuthorizationPolicy", [])),
        request_authentications=tuple(by_kind.get("RequestAuthentication", [])),
        path_normalization=path_normalization,
        peer_authentications=tuple(by_kind.get("PeerAuthentication", [])),
        trust_domain=trust_domain,
    )


def snapshot_for(
    settings: Settings,
    resources: Mapping[ResourceKey, Resource],
    workloads: Iterable[Workload],
    *,
    revision: int,
    registry_version: int,
    departed: Iterable[tuple[str, str, tuple[WorkloadPort, ...]]] = (),
) -> MeshSnapshot:
    """:func:`build_snapshot` with every mesh-wide input taken from ``settings``. The one way the
    control plane builds snapshots: what it pushes and what guarded apply checks are translated
    from the same inputs."""
    return build_snapshot(
        resources, workloads, revision=revision, registry_version=registry_version,
        domain_suffix=settings.domain_suffix, departed=departed,
        mesh_telemetry=mesh_telemetry_from_settings(settings), trust_domain=settings.trust_domain,
        path_normalization=settings.path_normalization,
    )
