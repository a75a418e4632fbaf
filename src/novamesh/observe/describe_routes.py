"""Routing sentences for ``novamesh describe``: HTTP routes (matches, destinations, retries,
timeouts, faults, mirrors, rewrites), TCP/TLS routes, and the VirtualServices and Gateways
sections of a service description.
"""

from __future__ import annotations

from typing import Any

from ..config.base import Destination, StringMatch
from ..config.names import MESH_GATEWAY, resolve_gateway, resolve_host
from ..config.resource import Resource
from ..config.types import HTTPMatchRequest, HTTPRoute, VirtualServiceSpec
from ..config.types_http import HTTPRetry
from ..config.types_mesh import MeshConfigSpec
from ..config.types_sidecar import TCPRoute, TLSRoute
from ..model.snapshot import MeshSnapshot
from ..translate.mesh_defaults import mesh_ref, mesh_spec
from .describe_base import ServiceDescription

__all__ = [
    "DEFAULT_RETRIES",
    "add_virtual_services",
    "describe_http_route",
    "describe_retries",
    "effective_retries",
    "effective_timeout",
]

DEFAULT_RETRIES = "2 attempts on connect-failure,refused-stream,unavailable,cancelled,503 (the mesh default)"
"""The retry policy of routes without ``retries`` (translate/http_policies.DEFAULT_RETRY_POLICY)."""


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


def _vs_spec(r: Resource) -> VirtualServiceSpec:
    assert isinstance(r.spec, VirtualServiceSpec)
    return r.spec


def add_virtual_services(desc: ServiceDescription, snap: MeshSnapshot, host: str) -> None:
    """Add the VirtualServices section (the one that routes ``host``, any ignored duplicates,
    gateway routes and VirtualServices sending traffic here) and the Gateways section."""
    suffix = snap.domain_suffix
    lines: list[str] = []
    applied = snap.virtual_services_for(host)
    for i, vs in enumerate(applied):
        ref = f"{vs.namespace}/{vs.name}"
        desc.virtual_services.append(ref)
        if i > 0:
            first = f"{applied[0].namespace}/{applied[0].name}"
            lines.append(f"VirtualService {ref}: IGNORED — {first} also claims this host and comes first; merge them")
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
            faults = [s.strip() for s in sentences[1:] if s.strip().startswith("fault injection")]
            desc.fact("faults", f"VirtualService {ref} route {label} injects faults: " + "; ".join(faults))
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
