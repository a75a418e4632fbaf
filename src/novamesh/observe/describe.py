"""``novamesh describe``: which config applies to a service or workload, in plain sentences.

Pure: everything is computed from a config set (``{key: Resource}``), the registry's workloads
and the proxies' sync status (``GET /api/v1/proxies`` dicts). The CLI fetches those three over
REST and prints :func:`render`; tests call the functions directly.

Besides the text, a description carries *facts*: short sentences naming the resource and field
behind each kind of behaviour (``connection_pool``, ``outlier_detection``, ``retries``...). The
response-flag explainer (:mod:`.flags`) points at them ("circuit breaker: DestinationRule
default/reviews sets http1MaxPendingRequests: 1").

This module is the entry point (:func:`describe_service`, :func:`describe_workload`,
:func:`render`; every public name below is importable from here). The sections live in:

- :mod:`.describe_base`: :class:`ServiceDescription`, :class:`WorkloadDescription`, :data:`TOPICS`;
- :mod:`.describe_routes`: route sentences, the VirtualServices and Gateways sections;
- :mod:`.describe_traffic`: traffic-policy sentences, the DestinationRule and mesh-defaults sections;
- :mod:`.describe_policies`: the Sidecars, Telemetry and security-kind sections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..config.names import resolve_host, service_fqdn
from ..config.resource import Resource, ResourceKey
from ..config.types import SPEC_TYPES, DestinationRuleSpec
from ..errors import NotFoundError
from ..model.snapshot import MeshSnapshot, Service
from ..registry.registry import Workload
from ..translate.scoping import outbound_policy, sidecar_for
from .describe_base import (
    TOPICS,
    ServiceDescription,
    WorkloadDescription,
    mesh_snapshot,
    proxy_line,
    proxy_synced,
)
from .describe_policies import (
    NOT_SUPPORTED_KINDS,
    add_sidecars,
    add_telemetry,
    add_unsupported,
    describe_telemetry,
)
from .describe_routes import (
    DEFAULT_RETRIES,
    add_virtual_services,
    describe_http_route,
    describe_retries,
    effective_retries,
    effective_timeout,
)
from .describe_traffic import (
    add_destination_rule,
    add_mesh_defaults,
    describe_outlier_detection,
    describe_traffic_policy,
)

__all__ = [
    "DEFAULT_RETRIES",
    "TOPICS",
    "ServiceDescription",
    "WorkloadDescription",
    "describe_http_route",
    "describe_outlier_detection",
    "describe_retries",
    "describe_service",
    "describe_telemetry",
    "describe_traffic_policy",
    "describe_workload",
    "effective_retries",
    "effective_timeout",
    "find_service",
    "host_annotations",
    "render",
]


def find_service(snapshot: MeshSnapshot, name: str, namespace: str) -> Service:
    """The service ``name`` means in ``namespace``: a short name, ``name.namespace``, an FQDN
    or a ServiceEntry host. NotFoundError lists the services that exist."""
    low = name.lower()
    candidates = [low, resolve_host(low, namespace, snapshot.domain_suffix)]
    if low.count(".") == 1:
        short, ns = low.split(".")
        candidates.append(service_fqdn(short, ns, snapshot.domain_suffix))
    for c in candidates:
        if c in snapshot.services:
            return snapshot.services[c]
    known = ", ".join(s.short_name + "." + s.namespace if s.short_name else s.hostname for s in snapshot.services.values())
    raise NotFoundError(
        f"no service {name!r} in namespace {namespace}; known services: {known or 'none'} "
        "(pass -n NAMESPACE or name.namespace)"
    )


def describe_service(
    name: str,
    namespace: str,
    resources: Mapping[ResourceKey, Resource],
    workloads: Sequence[Workload],
    proxies: Sequence[Mapping[str, Any]] = (),
    domain_suffix: str = "cluster.local",
) -> ServiceDescription:
    """Describe service ``name`` (see :func:`find_service`) as seen from the mesh."""
    snap = mesh_snapshot(resources, workloads, domain_suffix)
    svc = find_service(snap, name, namespace)
    host = svc.hostname
    desc = ServiceDescription(
        name=svc.short_name or host, namespace=svc.namespace, hostname=host,
        origin="registered workloads" if svc.origin == "registry" else svc.origin,
        ports=[f"{p.number}/{p.protocol}" + (f" ({p.name})" if p.name else "") for p in svc.ports],
    )
    dr = snap.destination_rule_for(host)
    _endpoints(desc, svc, workloads, dr, proxies)
    add_virtual_services(desc, snap, host)
    add_destination_rule(desc, dr, snap)
    add_mesh_defaults(desc, snap)
    members = [w for w in workloads if w.service == svc.short_name and w.namespace == svc.namespace]
    add_sidecars(desc, snap, members)
    add_telemetry(desc, resources, members, svc.namespace)
    for kind in NOT_SUPPORTED_KINDS:
        add_unsupported(desc, kind, resources, svc.namespace)
    return desc


def _endpoints(
    desc: ServiceDescription, svc: Service, workloads: Sequence[Workload], dr: Resource | None,
    proxies: Sequence[Mapping[str, Any]],
) -> None:
    """Add the Endpoints section (and fill :attr:`ServiceDescription.endpoints` and ``proxies``)."""
    subsets: list[tuple[str, dict[str, str]]] = []
    if dr is not None:
        assert isinstance(dr.spec, DestinationRuleSpec)
        subsets = [(s.name, dict(s.labels)) for s in dr.spec.subsets]
    by_id = {str(p.get("id")): p for p in proxies}
    lines: list[str] = []
    rows: list[tuple[str, dict[str, str], bool, str, str]] = []
    if svc.origin == "registry":
        for w in sorted(workloads, key=lambda w: w.id):
            if w.service == svc.short_name and w.namespace == svc.namespace and w.kind in ("sidecar", "gateway"):
                rows.append((w.address, w.label_dict, w.ready, w.id, w.version))
    else:
        rows = [(e.address, dict(e.labels), True, "", "") for e in svc.endpoints]
    ready = sum(1 for r in rows if r[2])
    for address, labels, is_ready, wid, version in rows:
        in_subsets = [n for n, sel in subsets if all(labels.get(k) == v for k, v in sel.items())]
        proxy = by_id.get(wid)
        sync = proxy_line(proxy).rsplit(") ", 1)[-1] if proxy is not None else ("no proxy connected" if wid else "")
        text = f"{address} {version}".strip() + (" ready" if is_ready else " NOT READY (not an endpoint)")
        if subsets:
            text += f"; subsets: {', '.join(in_subsets) or 'none'}"
        if wid:
            text += f"; workload {wid}" + (f", proxy {sync}" if sync else "")
        lines.append(text)
        desc.endpoints.append({"address": address, "labels": labels, "ready": is_ready, "workload": wid,
                               "subsets": in_subsets, "proxy": sync})
        if proxy is not None:
            desc.proxies.append(dict(proxy))
    desc.fact("endpoints", f"service {desc.name} has {ready} ready endpoint(s) of {len(rows)}")
    if svc.resolution != "EDS":
        desc.fact("resolution", f"{desc.origin} resolves {svc.hostname} with {svc.resolution}")
    desc.sections.append((f"Endpoints ({ready} ready, {len(rows) - ready} not ready)", lines or ["none"]))


def describe_workload(
    ref: str,
    namespace: str,
    resources: Mapping[ResourceKey, Resource],
    workloads: Sequence[Workload],
    proxies: Sequence[Mapping[str, Any]] = (),
    domain_suffix: str = "cluster.local",
) -> WorkloadDescription:
    """Describe one workload (id, ``service[.namespace]`` when unique, or address)."""
    from .proxyconfig import resolve_workload

    chosen = resolve_workload(ref, [w.to_dict() for w in workloads], namespace)
    w = next(x for x in workloads if x.id == chosen["id"])
    snap = mesh_snapshot(resources, workloads, domain_suffix)
    info = {"id": w.id, "service": w.service, "namespace": w.namespace, "version": w.version, "kind": w.kind,
            "address": w.address, "labels": w.label_dict, "ready": w.ready}
    sections: list[tuple[str, list[str]]] = []
    labels = ", ".join(f"{k}={v}" for k, v in sorted(w.label_dict.items()))
    sections.append(("Workload", [
        f"{w.id}: {w.kind} of service {w.service}.{w.namespace} version {w.version or '-'} at {w.address}",
        f"labels: {labels or 'none'}; {'ready (an endpoint)' if w.ready else 'NOT READY (not an endpoint)'}",
    ]))
    proxy = next((p for p in proxies if p.get("id") == w.id), None)
    sections.append(("Proxy", [proxy_line(proxy) if proxy is not None else "no proxy connected with this id"]))
    subset_lines: list[str] = []
    own_host = service_fqdn(w.service, w.namespace, domain_suffix)
    for dr in snap.destination_rules:
        spec = dr.spec
        assert isinstance(spec, DestinationRuleSpec)
        if resolve_host(spec.host, dr.namespace, domain_suffix) != own_host:
            continue  # a subset selects endpoints of its DestinationRule's host only
        for s in spec.subsets:
            if s.labels and all(w.label_dict.get(k) == v for k, v in s.labels.items()):
                subset_lines.append(f"in subset {s.name} of DestinationRule {dr.namespace}/{dr.name} (host {spec.host})")
    sections.append(("Subsets", subset_lines or ["in no DestinationRule subset"]))
    sc = sidecar_for(snap, w.namespace, w.label_dict)
    sc_ref = f"{sc.namespace}/{sc.name}" if sc is not None else ""
    mode, origin = outbound_policy(snap, sc_ref)
    sections.append(("Sidecar", [
        (f"Sidecar {sc_ref}" if sc_ref else "no Sidecar: sees every service") + f"; outbound traffic policy {mode} (from {origin})"
    ]))
    if w.kind == "gateway":
        gws = snap.gateways_selecting(w.label_dict)
        selecting = [f"Gateway {g.namespace}/{g.name} selects this workload" for g in gws]
        sections.append(("Gateways", selecting or ["no Gateway selects this workload"]))
    for kind in NOT_SUPPORTED_KINDS:
        found = [f"{kind} {k[1]}/{k[2]}" for k in sorted(resources) if k[0] == kind and k[1] == w.namespace]
        sections.append((kind, ["none (not supported yet)"] if kind not in SPEC_TYPES else found or ["none"]))
    service: ServiceDescription | None = None
    if w.ports:
        try:
            service = describe_service(w.service, w.namespace, resources, workloads, proxies, domain_suffix)
        except NotFoundError:
            service = None
    return WorkloadDescription(workload=info, service=service, sections=sections)


def host_annotations(
    resources: Mapping[ResourceKey, Resource], workloads: Sequence[Workload], domain_suffix: str = "cluster.local"
) -> tuple[dict[str, str], dict[str, str]]:
    """(FQDN -> ``name.namespace`` of the VirtualService that routes it, FQDN -> that of its
    DestinationRule), for the VIRTUAL SERVICE / DESTINATION RULE columns of ``proxy-config``."""
    snap = mesh_snapshot(resources, workloads, domain_suffix)
    vss: dict[str, str] = {}
    drs: dict[str, str] = {}
    for host in snap.services:
        applied = snap.virtual_services_for(host)
        if applied:
            vss[host] = f"{applied[0].name}.{applied[0].namespace}"
        dr = snap.destination_rule_for(host)
        if dr is not None:
            drs[host] = f"{dr.name}.{dr.namespace}"
    return vss, drs


def render(desc: ServiceDescription | WorkloadDescription) -> str:
    """The text ``novamesh describe`` prints."""
    out: list[str] = []
    if isinstance(desc, WorkloadDescription):
        for title, lines in desc.sections:
            out.append(f"{title}:")
            out += [f"  {line}" for line in lines]
        if desc.service is not None:
            out.append("")
            out.append(render(desc.service))
        return "\n".join(out).rstrip() + "\n"
    out.append(f"Service: {desc.hostname} (namespace {desc.namespace}; from {desc.origin})")
    out.append(f"Ports: {', '.join(desc.ports) or 'none'}")
    for title, lines in desc.sections:
        out.append(f"{title}:")
        out += [f"  {line}" for line in lines]
    synced = sum(1 for p in desc.proxies if proxy_synced(p))
    out.append(f"Proxies of this service: {synced} of {len(desc.proxies)} SYNCED")
    out += [f"  {proxy_line(p)}" for p in desc.proxies]
    return "\n".join(out) + "\n"
