"""Gateway analyzers (IST0101 selector, IST0104, IST0132, IST0145). They look at resources of kind
``Gateway`` and read their spec by attribute, so they run whenever the config set has Gateways."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

from ...config.names import MESH_GATEWAY, resolve_gateway
from ...config.resource import Resource
from ...registry.registry import Workload
from ..context import Context
from ..messages import Message
from ..registry import analyzer
from ._common import host_covers, vs_spec


def _selector(gw: Resource) -> dict[str, str]:
    return dict(getattr(gw.spec, "selector", None) or {})


def _servers(gw: Resource) -> list[object]:
    return list(getattr(gw.spec, "servers", None) or [])


def _port(server: object) -> int | None:
    number = getattr(getattr(server, "port", None), "number", None)
    return number if isinstance(number, int) else None


def _host_parts(host: str) -> tuple[str, str]:
    """(namespace filter, host) of a server host ``[namespace/]host``; a bare host admits every namespace."""
    namespace, sep, name = host.rpartition("/")
    return (namespace if sep else "*"), name.lower()


def _intersect(a: str, b: str) -> bool:
    return host_covers(a, b) or host_covers(b, a)


def _selected(workloads: Sequence[Workload], selector: dict[str, str]) -> list[Workload]:
    return [w for w in workloads if selector and all(w.label_dict.get(k) == v for k, v in selector.items())]


def _label_text(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


@analyzer("IST0101", "gateway.SelectorAnalyzer",
          "A Gateway's selector matches at least one registered workload.", live_only=True)
def gateway_selector(ctx: Context) -> Iterator[Message]:
    for gw in ctx.of_kind("Gateway"):
        selector = _selector(gw)
        if selector and not _selected(ctx.workloads or (), selector):
            yield ctx.message("IST0101", gw, f"Referenced selector not found: \"{_label_text(selector)}\"",
                              path="spec.selector", hint="start a gateway workload with these labels, or fix the selector")


@analyzer("IST0104", "gateway.PortOnWorkloadAnalyzer",
          "Every Gateway server port is among the ports its gateway workloads declare (`novamesh gateway "
          "--port`), when they declare any: sidecars reach a gateway only on those. A gateway that declares "
          "no port (a plain ingress) is not checked. Istio retired this code in 1.20; novamesh keeps its meaning.",
          live_only=True)
def gateway_ports(ctx: Context) -> Iterator[Message]:
    for gw in ctx.of_kind("Gateway"):
        selector = _selector(gw)
        selected = _selected(ctx.workloads or (), selector)
        ports = {p.number for w in selected for p in w.ports}
        if not ports:
            continue  # no gateway selected (gateway.SelectorAnalyzer), or none declares ports
        for i, server in enumerate(_servers(gw)):
            port = _port(server)
            if port is not None and port not in ports:
                yield ctx.message(
                    "IST0104", gw,
                    f"The gateway refers to a port that is not exposed on the workload "
                    f"(pod selector {_label_text(selector)}; port {port})",
                    path=f"spec.servers[{i}].port.number",
                    hint=f"the gateway workloads declare port(s) {', '.join(map(str, sorted(ports)))}: use one of "
                    f"them, or restart the gateway with `--port {port}` so the mesh can reach this server",
                )


@analyzer("IST0132", "gateway.VirtualServiceHostAnalyzer",
          "Each host of a VirtualService bound to a Gateway is served by a server of that Gateway.")
def vs_host_in_gateway(ctx: Context) -> Iterator[Message]:
    for vs in ctx.of_kind("VirtualService"):
        spec = vs_spec(vs)
        if spec is None:
            continue
        for i, ref in enumerate(spec.gateways):
            if ref == MESH_GATEWAY:
                continue
            namespace, _, name = resolve_gateway(ref, vs.namespace).partition("/")
            gw = ctx.resources.get(("Gateway", namespace, name))
            if gw is None:
                continue  # IST0101
            served = []
            for server in _servers(gw):
                for host in getattr(server, "hosts", None) or ():
                    ns_filter, h = _host_parts(host)
                    if ns_filter == "*" or (ns_filter == "." and gw.namespace == vs.namespace) or ns_filter == vs.namespace:
                        served.append(h)
            missing = [h for h in spec.hosts if not any(_intersect(h.lower(), s) for s in served)]
            if missing:
                yield ctx.message(
                    "IST0132", vs,
                    f"one or more host {missing} defined in VirtualService {vs.namespace}/{vs.name} not found "
                    f"in Gateway {namespace}/{name}.",
                    path=f"spec.gateways[{i}]",
                    hint=f"add the hosts to a server of Gateway {namespace}/{name}, or remove them from the VirtualService",
                )


@analyzer("IST0145", "gateway.ConflictingGatewaysAnalyzer",
          "No two Gateways with the same selector serve the same port with overlapping hosts or different "
          "protocols (novamesh would keep only the first one's server).")
def conflicting_gateways(ctx: Context) -> Iterator[Message]:
    groups: dict[tuple[str, int], list[tuple[Resource, list[str]]]] = defaultdict(list)
    protocols: dict[tuple[str, int, str], str] = {}
    for gw in ctx.of_kind("Gateway"):
        label = _label_text(_selector(gw))
        by_port: dict[int, list[str]] = defaultdict(list)
        for server in _servers(gw):
            port = _port(server)
            if port is not None:
                by_port[port] += [_host_parts(h)[1] for h in getattr(server, "hosts", None) or ()]
                protocol = str(getattr(getattr(server, "port", None), "protocol", "") or "")
                protocols.setdefault((label, port, f"{gw.namespace}/{gw.name}"), protocol)
        for port, hosts in by_port.items():
            groups[(label, port)].append((gw, hosts))
    for (label, port), members in sorted(groups.items(), key=lambda kv: kv[0]):
        for gw, hosts in members:
            clashes = [(other, [h for h in hosts if any(_intersect(h, o) for o in other_hosts)])
                       for other, other_hosts in members if other.key != gw.key]
            mine = protocols.get((label, port, f"{gw.namespace}/{gw.name}"), "")
            for other, shared in clashes:
                theirs = protocols.get((label, port, f"{other.namespace}/{other.name}"), "")
                if not shared and mine and theirs and mine != theirs:
                    yield ctx.message(
                        "IST0145", gw,
                        f"Conflict with gateways {other.namespace}/{other.name} (workload selector {label}, "
                        f"port {port}, protocols {mine} and {theirs}).",
                        path="spec.servers",
                        hint="servers sharing a port must speak one protocol: change the port of one of them",
                    )
                elif shared:
                    yield ctx.message(
                        "IST0145", gw,
                        f"Conflict with gateways {other.namespace}/{other.name} (workload selector {label}, "
                        f"port {port}, hosts {', '.join(shared)}).",
                        path="spec.servers",
                        hint="serve these hosts from one Gateway, or give the Gateways different ports or hosts",
                    )
