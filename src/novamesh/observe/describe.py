"""``novamesh describe``: which config applies to a service or workload, in plain sentences.

Pure: everything is computed from a config set (``{key: Resource}``), the registry's workloads
and the proxies' sync status (``GET /api/v1/proxies`` dicts). The CLI fetches those three over
REST and prints :func:`render`; tests call the functions directly.

Besides the text, a description carries *facts*: short sentences naming the resource and field
behind each kind of behaviour (``connection_pool``, ``outlier_detection``, ``retries``...). The
response-flag explainer (:mod:`.flags`) points at them ("circuit breaker: DestinationRule
default/reviews sets http1MaxPendingRequests: 1").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config.base import Destination, StringMatch
from ..config.names import MESH_GATEWAY, resolve_gateway, resolve_host, service_fqdn
from ..config.resource import Resource, ResourceKey
from ..config.types import (
    SPEC_TYPES,
    DestinationRuleSpec,
    HTTPMatchRequest,
    HTTPRoute,
    VirtualServiceSpec,
)
from ..config.types_http import HTTPRetry
from ..config.types_mesh import MeshConfigSpec
from ..config.types_sidecar import TCPRoute, TLSRoute
from ..config.types_telemetry import TelemetrySpec
from ..config.types_traffic import OutlierDetection, TrafficPolicy
from ..errors import NotFoundError
from ..model.snapshot import MeshSnapshot, Service, build_snapshot
from ..registry.registry import Workload
from ..translate.mesh_defaults import mesh_ref, mesh_spec
from ..translate.scoping import outbound_policy, sidecar_for

__all__ = [
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
    "find_service",
    "host_annotations",
    "render",
]

TOPICS = (
    "routes", "subsets", "endpoints", "connection_pool", "outlier_detection", "load_balancer", "tls",
    "retries", "timeouts", "faults", "sidecar", "authorization", "resolution",
)
"""Keys of :attr:`ServiceDescription.facts` (what :mod:`.flags` looks up per response flag)."""

DEFAULT_RETRIES = "2 attempts on connect-failure,refused-stream,unavailable,cancelled,503 (the mesh default)"
"""The retry policy of routes without ``retries`` (translate/http_policies.DEFAULT_RETRY_POLICY)."""

_NOT_SUPPORTED_KINDS = ("PeerAuthentication", "AuthorizationPolicy")


# -- sentences ---------------------------------------------------------------------------------
def _string_match(sm: StringMatch) -> str:
    if sm.exact is not None:
        return f"={sm.exact}"
    if sm.prefix is not None:
        return f" starting with {sm.prefix!r}"
    if sm.regex is not None:
        return f" matching regex {sm.regex!r}"
    return " present"


def _match_sentence(m: HTTPMatchRequest) -> str:
    parts: list[str] = []
    if m.uri is not None:
        if m.uri.exact is not None:
            parts.append(f"path {m.uri.exact}")
        elif m.uri.prefix is not None:
            parts.append(f"path starting with {m.uri.prefix}")
        elif m.uri.regex is not None:
            parts.append(f"path matching regex {m.uri.regex!r}")
        if m.ignore_uri_case:
            parts[-1] += " (any case)"
    for label, sm in (("method", m.method), ("authority", m.authority), ("scheme", m.scheme)):
        if sm is not None:
            parts.append(f"{label}{_string_match(sm)}")
    parts += [f"header {k}{_string_match(v)}" for k, v in sorted(m.headers.items())]
    parts += [f"query parameter {k}{_string_match(v)}" for k, v in sorted(m.query_params.items())]
    parts += [f"without header {k}" if v.is_empty() else f"header {k} not{_string_match(v)}" for k, v in sorted(m.without_headers.items())]
    if m.port is not None:
        parts.append(f"on port {m.port}")
    if m.source_labels:
        parts.append("from workloads labelled " + ",".join(f"{k}={v}" for k, v in sorted(m.source_labels.items())))
    if m.source_namespace:
        parts.append(f"from namespace {m.source_namespace}")
    if m.gateways:
        parts.append("through " + ", ".join(m.gateways))
    return " and ".join(parts) or "any request"


def _dest(d: Destination, own_host: str, namespace: str, suffix: str) -> str:
    host = resolve_host(d.host, namespace, suffix)
    text = "" if host == own_host else d.host
    if d.subset:
        text = f"{text} subset {d.subset}".strip()
    if d.port is not None:
        text = f"{text or d.host} port {d.port.number}"
    return text or d.host


def describe_retries(retries: HTTPRetry | None) -> str:
    """``retries: 3 attempts on 5xx,reset, per try 2s`` (or the mesh default / disabled)."""
    if retries is None:
        return f"retries: {DEFAULT_RETRIES}"
    if not retries.attempts:
        return "retries: disabled (attempts: 0)"
    text = f"retries: {retries.attempts} attempts on {retries.retry_on or 'connect-failure,refused-stream,unavailable,cancelled,503'}"
    if retries.per_try_timeout:
        text += f", per try {retries.per_try_timeout}"
    return text


def _percent(p: Any) -> str:
    value = 100.0 if p is None else float(p.value)
    return f"{value:g}%"


def effective_retries(route_retries: HTTPRetry | None, mesh: MeshConfigSpec | None) -> str:
    """The retry sentence of a route: its own ``retries``, else the MeshConfig's
    ``defaultHttpRetryPolicy``, else Istio's built-in default."""
    if route_retries is None and mesh is not None and mesh.default_http_retry_policy is not None:
        return describe_retries(mesh.default_http_retry_policy) + " (MeshConfig default)"
    return describe_retries(route_retries)


def effective_timeout(route_timeout: str | None, mesh: MeshConfigSpec | None) -> str:
    """The timeout of a route ("" when none): its own, else the MeshConfig's ``defaultHttpTimeout``."""
    if route_timeout is not None:
        return "" if route_timeout in ("0s", "0") else route_timeout
    if mesh is not None and mesh.default_http_timeout and mesh.timeout_seconds() > 0:
        return f"{mesh.default_http_timeout} (MeshConfig default)"
    return ""


def describe_http_route(
    route: HTTPRoute, index: int, namespace: str, own_host: str, suffix: str, *, after_match: bool,
    mesh: MeshConfigSpec | None = None,
) -> list[str]:
    """Sentences for one ``http`` route of a VirtualService in ``namespace``: where requests go,
    then each policy. ``own_host`` (the described service's FQDN) is left out of destinations;
    ``after_match`` says whether an earlier route had a match (so this one takes "the others");
    ``mesh`` supplies the MeshConfig's default timeout and retries for routes without their own."""
    if route.match:
        who = "requests with " + " or ".join(_match_sentence(m) for m in route.match)
    else:
        who = "all other requests" if after_match else "all requests"
    label = f"[{route.name or f'http[{index}]'}] "
    if route.redirect is not None:
        r = route.redirect
        target = "".join(x for x in (r.scheme and f"{r.scheme}://", r.authority, r.port and f":{r.port}", r.uri) if x)
        where = f"are redirected to {target or 'the same URL'} ({r.redirect_code or 301})"
    elif route.direct_response is not None:
        where = f"are answered directly with {route.direct_response.status}"
    elif len(route.route) == 1:
        where = f"go to {_dest(route.route[0].destination, own_host, namespace, suffix)}"
    else:
        where = "go " + ", ".join(
            f"{d.weight or 0}% to {_dest(d.destination, own_host, namespace, suffix)}" for d in route.route
        )
    out = [f"{label}{who} {where}"]
    extra: list[str] = []
    forwards = route.redirect is None and route.direct_response is None
    timeout = effective_timeout(route.timeout, mesh) if forwards else ""
    if timeout:
        extra.append(f"timeout {timeout}")
    if forwards:
        extra.append(effective_retries(route.retries, mesh))
    if route.fault is not None:
        f = route.fault
        if f.abort is not None:
            code = f"{f.abort.http_status}" if f.abort.http_status is not None else f"gRPC {f.abort.grpc_status}"
            extra.append(f"fault injection: abort {_percent(f.abort.percentage)} of requests with {code}")
        if f.delay is not None:
            extra.append(f"fault injection: delay {_percent(f.delay.percentage)} of requests by {f.delay.fixed_delay}")
    if route.mirror is not None:
        extra.append(f"mirror {_percent(route.mirror_percentage)} of requests to {route.mirror.host}")
    for mp in route.mirrors:
        extra.append(f"mirror {_percent(mp.percentage)} of requests to {mp.destination.host}")
    if route.rewrite is not None:
        rw = route.rewrite
        if rw.uri is not None:
            extra.append(f"path (matched prefix) rewritten to {rw.uri}")
        if rw.uri_regex_rewrite is not None:
            extra.append(f"path regex {rw.uri_regex_rewrite.match!r} rewritten to {rw.uri_regex_rewrite.rewrite!r}")
        if rw.authority is not None:
            extra.append(f"authority rewritten to {rw.authority}")
    if route.headers is not None and route.headers.request is not None:
        ops = route.headers.request
        changes = [f"set {k}" for k in ops.set] + [f"add {k}" for k in ops.add] + [f"remove {k}" for k in ops.remove]
        if changes:
            extra.append("request headers: " + ", ".join(changes))
    if route.cors_policy is not None:
        extra.append("CORS policy answered by the sidecar")
    out += [f"    {e}" for e in extra]
    return out


def describe_outlier_detection(od: OutlierDetection) -> str:
    """``outlier detection: eject after 5 consecutive 5xx for 30s`` (Envoy defaults filled in)."""
    causes = []
    if od.consecutive_5xx_errors:
        causes.append(f"{od.consecutive_5xx_errors} consecutive 5xx")
    if od.consecutive_gateway_errors:
        causes.append(f"{od.consecutive_gateway_errors} consecutive gateway errors (502/503/504)")
    if not causes:
        return "outlier detection: configured but no ejection threshold set (consecutive5xxErrors 0)"
    text = f"outlier detection: eject after {' or '.join(causes)} for {od.base_ejection_time or '30s'}"
    text += f" (checked every {od.interval or '10s'}, at most {od.max_ejection_percent or 10}% of hosts ejected"
    text += f", panic below {od.min_health_percent or 0}% healthy)"
    return text


def describe_traffic_policy(tp: TrafficPolicy, where: str = "") -> list[tuple[str, str]]:
    """(topic, sentence) pairs for a traffic policy; ``where`` prefixes each (``subset v2: ``)."""
    out: list[tuple[str, str]] = []
    lb = tp.load_balancer
    if lb is not None:
        if lb.simple:
            out.append(("load_balancer", f"load balancing: {lb.simple}"))
        if lb.consistent_hash is not None:
            ch = lb.consistent_hash
            key = (
                f"header {ch.http_header_name}" if ch.http_header_name else
                f"cookie {ch.http_cookie.name}" if ch.http_cookie is not None else
                f"query parameter {ch.http_query_parameter_name}" if ch.http_query_parameter_name else
                "source IP"
            )
            out.append(("load_balancer", f"load balancing: consistent hash on {key}"))
    pool = tp.connection_pool
    if pool is not None:
        limits: list[str] = []
        if pool.tcp is not None:
            t = pool.tcp
            limits += [f"maxConnections: {t.max_connections}"] if t.max_connections is not None else []
            limits += [f"connectTimeout: {t.connect_timeout}"] if t.connect_timeout else []
        if pool.http is not None:
            h = pool.http
            for name, value in (
                ("http1MaxPendingRequests", h.http1_max_pending_requests),
                ("http2MaxRequests", h.http2_max_requests),
                ("maxRequestsPerConnection", h.max_requests_per_connection),
                ("maxRetries", h.max_retries),
                ("idleTimeout", h.idle_timeout),
            ):
                if value is not None:
                    limits.append(f"{name}: {value}")
        if limits:
            out.append(("connection_pool", "circuit breaker (connection pool): " + ", ".join(limits)))
    if tp.outlier_detection is not None:
        out.append(("outlier_detection", describe_outlier_detection(tp.outlier_detection)))
    if tp.tls is not None:
        tls = tp.tls
        detail = f" (sni {tls.sni})" if tls.sni else ""
        out.append(("tls", f"TLS to the destination: {tls.mode}{detail}"))
    for pl in tp.port_level_settings:
        port = pl.port.number if pl.port is not None else "?"
        sub = TrafficPolicy(load_balancer=pl.load_balancer, connection_pool=pl.connection_pool,
                            outlier_detection=pl.outlier_detection, tls=pl.tls)
        out += [(topic, f"port {port}: {text}") for topic, text in describe_traffic_policy(sub)]
    return [(topic, f"{where}{text}") for topic, text in out]


# -- descriptions ------------------------------------------------------------------------------
@dataclass
class ServiceDescription:
    """What applies to one service; :func:`render` prints it, :meth:`to_dict` is ``-o json``."""

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


def _snapshot(resources: Mapping[ResourceKey, Resource], workloads: Sequence[Workload], suffix: str) -> MeshSnapshot:
    return build_snapshot(resources, workloads, revision=0, registry_version=0, domain_suffix=suffix)


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


def _vs_spec(r: Resource) -> VirtualServiceSpec:
    assert isinstance(r.spec, VirtualServiceSpec)
    return r.spec


def _proxy_synced(p: Mapping[str, Any]) -> bool:
    states = [st.get("status", "?") for st in p.get("types", {}).values()]
    return bool(states) and all(s in ("SYNCED", "NOT SENT") for s in states)


def _proxy_line(p: Mapping[str, Any]) -> str:
    states = {t: st.get("status", "?") for t, st in sorted(p.get("types", {}).items())}
    if _proxy_synced(p):
        summary = "SYNCED"
    else:
        summary = ", ".join(f"{t} {s}" for t, s in states.items()) or "unknown"
    return f"{p.get('id')} ({p.get('service')} {p.get('version') or ''}) {summary}".replace(" )", ")")


def describe_service(
    name: str,
    namespace: str,
    resources: Mapping[ResourceKey, Resource],
    workloads: Sequence[Workload],
    proxies: Sequence[Mapping[str, Any]] = (),
    domain_suffix: str = "cluster.local",
) -> ServiceDescription:
    """Describe service ``name`` (see :func:`find_service`) as seen from the mesh."""
    snap = _snapshot(resources, workloads, domain_suffix)
    svc = find_service(snap, name, namespace)
    host = svc.hostname
    desc = ServiceDescription(
        name=svc.short_name or host, namespace=svc.namespace, hostname=host,
        origin="registered workloads" if svc.origin == "registry" else svc.origin,
        ports=[f"{p.number}/{p.protocol}" + (f" ({p.name})" if p.name else "") for p in svc.ports],
    )
    dr = snap.destination_rule_for(host)
    _endpoints(desc, svc, workloads, dr, proxies)
    _virtual_services(desc, snap, host)
    _destination_rule(desc, dr, snap)
    _mesh_defaults(desc, snap)
    members = [w for w in workloads if w.service == svc.short_name and w.namespace == svc.namespace]
    _sidecars(desc, snap, members)
    _telemetry(desc, resources, members, svc.namespace)
    for kind in _NOT_SUPPORTED_KINDS:
        _unsupported(desc, kind, resources, svc.namespace)
    return desc


def _endpoints(desc: ServiceDescription, svc: Service, workloads: Sequence[Workload], dr: Resource | None, proxies: Sequence[Mapping[str, Any]]) -> None:
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
        sync = _proxy_line(proxy).rsplit(") ", 1)[-1] if proxy is not None else ("no proxy connected" if wid else "")
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


def _virtual_services(desc: ServiceDescription, snap: MeshSnapshot, host: str) -> None:
    suffix = snap.domain_suffix
    lines: list[str] = []
    applied = snap.virtual_services_for(host)
    for i, vs in enumerate(applied):
        ref = f"{vs.namespace}/{vs.name}"
        desc.virtual_services.append(ref)
        if i > 0:
            lines.append(f"VirtualService {ref}: IGNORED — {applied[0].namespace}/{applied[0].name} also claims this host and comes first; merge them")
            continue
        lines.append(f"VirtualService {ref} (hosts: {', '.join(_vs_spec(vs).hosts)}):")
        lines += _vs_lines(desc, vs, host, snap, ref)
    gateway_lines: list[str] = []
    for vs in snap.virtual_services:
        spec = _vs_spec(vs)
        gws = [resolve_gateway(g, vs.namespace) for g in spec.gateways if g != MESH_GATEWAY]
        hosts = {resolve_host(h, vs.namespace, suffix) for h in spec.hosts}
        ref = f"{vs.namespace}/{vs.name}"
        if gws and (host in hosts or any(h.startswith("*") and host.endswith(h[1:]) for h in hosts)):
            known = {f"{g.namespace}/{g.name}" for g in snap.gateways}
            named = ", ".join(g + ("" if g in known else " (no such Gateway)") for g in gws)
            gateway_lines.append(f"VirtualService {ref} routes this host at Gateway {named}")
            if vs not in applied:
                desc.virtual_services.append(ref)
                lines.append(f"VirtualService {ref} (at gateways {', '.join(gws)}):")
                lines += _vs_lines(desc, vs, host, snap, ref)
        elif host not in hosts and vs not in applied:
            targets = {resolve_host(d.destination.host, vs.namespace, suffix) for r in spec.http for d in r.route}
            l4: list[TCPRoute | TLSRoute] = [*spec.tcp, *spec.tls]
            targets |= {resolve_host(d.destination.host, vs.namespace, suffix) for r4 in l4 for d in r4.route}
            if host in targets:
                lines.append(f"VirtualService {ref} (hosts: {', '.join(spec.hosts)}) sends some of its traffic here")
    if not applied:
        mesh = mesh_spec(snap)
        timeout = effective_timeout(None, mesh)
        policy = effective_retries(None, mesh) + (f", timeout {timeout}" if timeout else "")
        lines.insert(0, f"none: requests to this service go to all its endpoints (default route; {policy})")
        desc.fact("routes", f"no VirtualService routes {host}; sidecars use the default route to every endpoint")
        desc.fact("retries", f"default route of {host}: {effective_retries(None, mesh)}")
        if timeout:
            desc.fact("timeouts", f"default route of {host}: timeout {timeout} from {mesh_ref(snap)}")
    desc.sections.append(("VirtualServices", lines))
    desc.sections.append(("Gateways", gateway_lines or ["none: only sidecars route to this service"]))


def _vs_lines(desc: ServiceDescription, vs: Resource, host: str, snap: MeshSnapshot, ref: str) -> list[str]:
    spec = _vs_spec(vs)
    suffix = snap.domain_suffix
    mesh = mesh_spec(snap)
    lines: list[str] = []
    seen_match = False
    for i, route in enumerate(spec.http):
        sentences = describe_http_route(route, i, vs.namespace, host, suffix, after_match=seen_match, mesh=mesh)
        seen_match = seen_match or bool(route.match)
        lines += [f"  {s}" for s in sentences]
        label = route.name or f"http[{i}]"
        desc.fact("routes", f"VirtualService {ref} {sentences[0]}")
        timeout = effective_timeout(route.timeout, mesh)
        if route.timeout and timeout:
            desc.fact("timeouts", f"VirtualService {ref} route {label} sets timeout: {route.timeout}")
        elif timeout:
            desc.fact("timeouts", f"VirtualService {ref} route {label} has timeout {timeout} from {mesh_ref(snap)}")
        desc.fact("retries", f"VirtualService {ref} route {label}: {effective_retries(route.retries, mesh)}")
        if route.fault is not None:
            desc.fact("faults", f"VirtualService {ref} route {label} injects faults: " + "; ".join(s.strip() for s in sentences[1:] if s.strip().startswith("fault injection")))
    l4: list[tuple[str, list[TCPRoute | TLSRoute]]] = [("tcp", list(spec.tcp)), ("tls", list(spec.tls))]
    for kind, routes in l4:
        for i, r in enumerate(routes):
            dests = ", ".join(f"{d.weight or 100}% to {_dest(d.destination, host, vs.namespace, suffix)}" for d in r.route)
            cond = " or ".join(
                " and ".join(x for x in (
                    f"SNI {','.join(getattr(m, 'sni_hosts', []))}" if getattr(m, "sni_hosts", None) else "",
                    f"port {m.port}" if m.port else "",
                    f"from namespace {m.source_namespace}" if m.source_namespace else "",
                ) if x) or "any" for m in r.match
            ) or "all"
            sentence = f"[{kind}[{i}]] {cond} connections go {dests}"
            lines.append(f"  {sentence}")
            desc.fact("routes", f"VirtualService {ref} {sentence}")
    if not spec.http and not spec.tcp and not spec.tls:
        lines.append("  (no routes)")
    return lines


def _mesh_traffic(desc: ServiceDescription, snap: MeshSnapshot, own: TrafficPolicy | None) -> list[str]:
    """Lines (and facts) for the MeshConfig ``defaultTrafficPolicy`` fields the DestinationRule's
    top level does not replace."""
    spec = mesh_spec(snap)
    mtp = spec.default_traffic_policy if spec is not None else None
    if mtp is None:
        return []
    inherited = TrafficPolicy(
        connection_pool=mtp.connection_pool if own is None or own.connection_pool is None else None,
        outlier_detection=mtp.outlier_detection if own is None or own.outlier_detection is None else None,
    )
    lines: list[str] = []
    ref = mesh_ref(snap)
    for topic, text in describe_traffic_policy(inherited):
        lines.append(f"  {text} (mesh default from {ref})")
        if topic == "connection_pool":
            desc.fact(topic, f"circuit breaker: {ref} sets {text.replace('circuit breaker (connection pool): ', '')} (mesh default)")
        else:
            desc.fact(topic, f"{ref} sets {text} (mesh default)")
    return lines


def _destination_rule(desc: ServiceDescription, dr: Resource | None, snap: MeshSnapshot) -> None:
    if dr is None:
        inherited = _mesh_traffic(desc, snap, None)
        desc.sections.append(("DestinationRule", [
            "none: round robin" + ("" if inherited else ", Envoy's default limits (1024 connections/pending/requests), no outlier detection"),
            *inherited,
        ]))
        desc.fact("subsets", f"no DestinationRule for {desc.hostname}, so it has no subsets")
        return
    spec = dr.spec
    assert isinstance(spec, DestinationRuleSpec)
    ref = f"{dr.namespace}/{dr.name}"
    desc.destination_rules.append(ref)
    lines = [f"DestinationRule {ref} (host: {spec.host}):"]
    counts = {s: 0 for s in (x.name for x in spec.subsets)}
    for ep in desc.endpoints:
        for s in ep["subsets"]:
            if ep["ready"]:
                counts[s] = counts.get(s, 0) + 1
    for s in spec.subsets:
        sel = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) or "every endpoint"
        lines.append(f"  subset {s.name}: {sel} ({counts.get(s.name, 0)} ready endpoint(s))")
        desc.fact("subsets", f"DestinationRule {ref} subset {s.name} selects {sel}: {counts.get(s.name, 0)} ready endpoint(s)")
    policies: list[tuple[str, str]] = []
    if spec.traffic_policy is not None:
        policies += describe_traffic_policy(spec.traffic_policy)
    for s in spec.subsets:
        if s.traffic_policy is not None:
            policies += describe_traffic_policy(s.traffic_policy, f"subset {s.name}: ")
    for topic, text in policies:
        lines.append(f"  {text}")
        if topic == "connection_pool":
            desc.fact(topic, f"circuit breaker: DestinationRule {ref} sets {text.replace('circuit breaker (connection pool): ', '')}")
        else:
            desc.fact(topic, f"DestinationRule {ref} sets {text}")
    inherited = _mesh_traffic(desc, snap, spec.traffic_policy)
    lines += inherited
    if not policies and not inherited:
        lines.append("  no traffic policy: Envoy's defaults apply")
    desc.sections.append(("DestinationRule", lines))


def _mesh_defaults(desc: ServiceDescription, snap: MeshSnapshot) -> None:
    """The MeshConfig (``istio-system/default``) values every service gets unless overridden."""
    spec = mesh_spec(snap)
    if spec is None:
        desc.sections.append(("Mesh-wide defaults", ["none: no MeshConfig istio-system/default; built-in defaults apply"]))
        return
    ref = mesh_ref(snap)
    lines = [f"{ref}:"]
    if spec.default_http_timeout is not None:
        lines.append(f"  defaultHttpTimeout: {spec.default_http_timeout} (routes without their own timeout)")
    if spec.default_http_retry_policy is not None:
        lines.append(f"  defaultHttpRetryPolicy: {describe_retries(spec.default_http_retry_policy)} (routes without their own retries)")
    if spec.default_traffic_policy is not None:
        tp = TrafficPolicy(connection_pool=spec.default_traffic_policy.connection_pool,
                           outlier_detection=spec.default_traffic_policy.outlier_detection)
        lines += [f"  defaultTrafficPolicy: {text}" for _, text in describe_traffic_policy(tp)]
    if spec.outbound_traffic_policy is not None:
        lines.append(f"  outboundTrafficPolicy: {spec.outbound_traffic_policy.mode} (proxies no Sidecar gives a policy)")
    if len(lines) == 1:
        lines.append("  (sets nothing: built-in defaults apply)")
    desc.sections.append(("Mesh-wide defaults", lines))


def _sidecars(desc: ServiceDescription, snap: MeshSnapshot, members: Sequence[Workload]) -> None:
    seen: dict[str, list[str]] = {}
    for w in members:
        sc = sidecar_for(snap, w.namespace, w.label_dict)
        ref = f"{sc.namespace}/{sc.name}" if sc is not None else ""
        seen.setdefault(ref, []).append(w.id)
    lines: list[str] = []
    for ref, ids in sorted(seen.items()):
        mode, origin = outbound_policy(snap, ref)
        if ref:
            sc = next(s for s in snap.sidecars if f"{s.namespace}/{s.name}" == ref)
            egress = [h for e in getattr(sc.spec, "egress", []) for h in e.hosts]
            scope = f"may reach {', '.join(egress)}" if egress else "no egress restriction"
            lines.append(f"Sidecar {ref} applies to {len(ids)} workload(s): {scope}; outbound traffic policy {mode} (from {origin})")
        else:
            lines.append(f"no Sidecar applies to {len(ids)} workload(s): they see every service; outbound traffic policy {mode} (from {origin})")
        desc.fact("sidecar", lines[-1])
    desc.sections.append(("Sidecars (of this service's workloads)", lines or ["none"]))


def describe_telemetry(spec: TelemetrySpec) -> list[str]:
    """Sentences for a Telemetry resource's tracing and access logging."""
    out: list[str] = []
    for t in spec.tracing:
        providers = ", ".join(p.name for p in t.providers) or "the default provider"
        text = f"tracing to {providers}"
        if t.random_sampling_percentage is not None:
            text += f", sampling {t.random_sampling_percentage:g}% of requests"
        if t.disable_span_reporting:
            text += ", span reporting disabled"
        if t.custom_tags:
            text += f", custom tags {', '.join(sorted(t.custom_tags))}"
        out.append(text)
    for a in spec.access_logging:
        providers = ", ".join(p.name for p in a.providers) or "the default provider"
        state = "off" if a.disabled else "on"
        text = f"access logging {state} ({providers})"
        if a.filter is not None:
            text += f", only requests where {a.filter.expression}"
        out.append(text)
    return out or ["sets nothing"]


def _telemetry(desc: ServiceDescription, resources: Mapping[ResourceKey, Resource], members: Sequence[Workload], namespace: str) -> None:
    """Telemetry resources that apply to the service's workloads: mesh-wide (root namespace, no
    selector), namespace-wide (no selector), or selecting some of the workloads."""
    lines: list[str] = []
    for key in sorted(resources):
        r = resources[key]
        if key[0] != "Telemetry" or not isinstance(r.spec, TelemetrySpec) or r.namespace not in (namespace, "istio-system"):
            continue
        sel = dict(r.spec.selector.match_labels) if r.spec.selector is not None else {}
        if sel:
            if r.namespace != namespace:
                continue
            picked = [w for w in members if all(w.label_dict.get(k) == v for k, v in sel.items())]
            if not picked:
                continue
            scope = f"{len(picked)} of {len(members)} workload(s)"
        else:
            scope = "mesh-wide" if r.namespace == "istio-system" else f"namespace {r.namespace}"
        lines.append(f"Telemetry {r.namespace}/{r.name} ({scope}): " + "; ".join(describe_telemetry(r.spec)))
    desc.sections.append(("Telemetry", lines or ["none: mesh defaults for tracing and access logs"]))


def _unsupported(desc: ServiceDescription, kind: str, resources: Mapping[ResourceKey, Resource], namespace: str) -> None:
    if kind not in SPEC_TYPES:
        desc.sections.append((kind, ["none (not supported yet)"]))
        if kind == "AuthorizationPolicy":
            desc.fact("authorization", "AuthorizationPolicy is not supported yet, so no novamesh policy denies requests")
        return
    found = [f"{kind} {k[1]}/{k[2]}" for k in sorted(resources) if k[0] == kind and k[1] in (namespace, "istio-system")]
    desc.sections.append((kind, found or ["none"]))
    if kind == "AuthorizationPolicy":
        for f in found:
            desc.fact("authorization", f"{f} may apply")
        if not found:
            desc.fact("authorization", "AuthorizationPolicy: none in this namespace or istio-system applies")


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
    snap = _snapshot(resources, workloads, domain_suffix)
    info = {"id": w.id, "service": w.service, "namespace": w.namespace, "version": w.version, "kind": w.kind,
            "address": w.address, "labels": w.label_dict, "ready": w.ready}
    sections: list[tuple[str, list[str]]] = []
    labels = ", ".join(f"{k}={v}" for k, v in sorted(w.label_dict.items()))
    sections.append(("Workload", [
        f"{w.id}: {w.kind} of service {w.service}.{w.namespace} version {w.version or '-'} at {w.address}",
        f"labels: {labels or 'none'}; {'ready (an endpoint)' if w.ready else 'NOT READY (not an endpoint)'}",
    ]))
    proxy = next((p for p in proxies if p.get("id") == w.id), None)
    sections.append(("Proxy", [_proxy_line(proxy) if proxy is not None else "no proxy connected with this id"]))
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
        sections.append(("Gateways", [f"Gateway {g.namespace}/{g.name} selects this workload" for g in gws] or ["no Gateway selects this workload"]))
    for kind in _NOT_SUPPORTED_KINDS:
        sections.append((kind, ["none (not supported yet)"] if kind not in SPEC_TYPES else
                         [f"{kind} {k[1]}/{k[2]}" for k in sorted(resources) if k[0] == kind and k[1] == w.namespace] or ["none"]))
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
    snap = _snapshot(resources, workloads, domain_suffix)
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
    synced = sum(1 for p in desc.proxies if _proxy_synced(p))
    out.append(f"Proxies of this service: {synced} of {len(desc.proxies)} SYNCED")
    out += [f"  {_proxy_line(p)}" for p in desc.proxies]
    return "\n".join(out) + "\n"
