"""Semantic checks for the Sidecar kind and VirtualService ``tcp``/``tls`` routes (Istio's rules),
plus the cross-resource check "one selector-less Sidecar per namespace".

Judgement calls, documented in docs/istio-fields.md:

- An egress host must be ``namespace/dnsName`` as Istio requires; ``namespace`` is ``*``, ``.``,
  ``~`` or a DNS-1123 label. A short ``dnsName`` (``prod/reviews``) resolves in the namespace
  written before the slash (Istio matches it literally and so never finds the service).
- At most one egress entry without ``port`` (Istio's catch-all listener), ports unique.
- Two Sidecars without ``workloadSelector`` in one namespace, or two with the same selector,
  are rejected: Istio calls that "undefined behaviour" and picks one silently.
- TLS routes need ``match`` with ``sniHosts``, each covered by one of the VirtualService's hosts.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from ..errors import Violation
from ._paths import Problem
from ._syntax import host_problem, is_dns1123_label
from .resource import Resource, ResourceKey
from .types_sidecar import RouteDestination, SidecarSpec, TCPRoute, TLSRoute

__all__ = ["check_l4_routes", "check_sidecar", "sidecar_conflicts", "split_egress_host"]

_FIELDS_DOC = "docs/istio-fields.md"
CONFLICT_CODE = "IST0106"


def split_egress_host(value: str) -> tuple[str, str] | None:
    """``(namespace, dnsName)`` of an egress host ``ns/dnsName``, or None without a slash."""
    ns, sep, name = value.partition("/")
    if not sep:
        return None
    return ns, name


def check_sidecar(spec: SidecarSpec) -> list[Problem]:
    """Every problem in one Sidecar spec."""
    problems: list[Problem] = []
    if not spec.egress and spec.outbound_traffic_policy is None:
        problems.append(
            Problem(
                "spec",
                "empty Sidecar: it sets neither egress nor outboundTrafficPolicy",
                "add `egress: [{hosts: [./*, istio-system/*]}]` or "
                "`outboundTrafficPolicy: {mode: REGISTRY_ONLY}`",
            )
        )
    catch_all: int | None = None
    ports: dict[int, int] = {}
    for i, listener in enumerate(spec.egress):
        path = f"spec.egress[{i}]"
        if listener.port is None:
            if catch_all is not None:
                problems.append(
                    Problem(
                        f"{path}.port",
                        f"only one egress entry may omit 'port' (also spec.egress[{catch_all}])",
                        "merge their hosts into one entry, or give this one a port",
                    )
                )
            catch_all = i if catch_all is None else catch_all
        else:
            number = listener.port.number
            if number in ports:
                problems.append(
                    Problem(
                        f"{path}.port.number",
                        f"port {number} is used by two egress entries (also spec.egress[{ports[number]}])",
                        "merge their hosts into one entry",
                    )
                )
            ports.setdefault(number, i)
        for j, host in enumerate(listener.hosts):
            problems += _egress_host(host, f"{path}.hosts[{j}]")
    return problems


def _egress_host(host: str, path: str) -> list[Problem]:
    parts = split_egress_host(host)
    if parts is None:
        return [
            Problem(
                path,
                f"egress host '{host}' has no namespace part; Istio requires namespace/dnsName",
                f"write e.g. './{host}' (this namespace), '*/{host}' (any namespace) or "
                f"'prod/{host}'",
            )
        ]
    ns, name = parts
    problems: list[Problem] = []
    if ns not in ("*", ".", "~") and not is_dns1123_label(ns):
        problems.append(
            Problem(
                path,
                f"'{ns}' in egress host '{host}' is not a namespace",
                "write a namespace name, '.' (the Sidecar's namespace), '*' (any) or '~' (none)",
            )
        )
    if name != "*":
        reason = host_problem(name)
        if reason:
            problems.append(
                Problem(path, f"egress host '{host}': {reason}", "write e.g. prod/reviews, ./*, */*.example.com")
            )
    return problems


def check_l4_routes(tcp: list[TCPRoute], tls: list[TLSRoute], vs_hosts: list[str]) -> list[Problem]:
    """Problems in a VirtualService's ``tcp`` and ``tls`` routes."""
    problems: list[Problem] = []
    for i, route in enumerate(tcp):
        problems += _destinations(route.route, f"spec.tcp[{i}]", "TCP")
    for i, tls_route in enumerate(tls):
        path = f"spec.tls[{i}]"
        if not tls_route.match:
            problems.append(
                Problem(
                    f"{path}.match",
                    "a TLS route needs at least one match with sniHosts",
                    "add `match: [{sniHosts: [<host>]}]`",
                )
            )
        for j, match in enumerate(tls_route.match):
            if not match.sni_hosts:
                problems.append(
                    Problem(
                        f"{path}.match[{j}].sniHosts",
                        "a TLS match needs sniHosts: TLS routes are chosen by the client's SNI",
                        f"add `sniHosts: [{vs_hosts[0] if vs_hosts else 'api.example.com'}]`",
                    )
                )
            for k, sni in enumerate(match.sni_hosts):
                where = f"{path}.match[{j}].sniHosts[{k}]"
                reason = host_problem(sni)
                if reason:
                    problems.append(Problem(where, reason, "write a host name such as api.example.com"))
                elif not any(_covers(h, sni) for h in vs_hosts):
                    problems.append(
                        Problem(
                            where,
                            f"SNI host '{sni}' is not one of the VirtualService's hosts",
                            f"use one of {', '.join(vs_hosts)}, or add it to spec.hosts",
                        )
                    )
        problems += _destinations(tls_route.route, path, "TLS")
    return problems


def _covers(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower(), host.lower()
    if pattern in ("*", host):
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) or (host.startswith("*.") and host.endswith(pattern[1:]))
    # A short VirtualService host (`mysql`) covers its FQDN forms.
    return "." not in pattern and host.split(".", 1)[0] == pattern


def _destinations(route: list[RouteDestination], path: str, what: str) -> list[Problem]:
    if not route:
        return [
            Problem(
                f"{path}.route",
                f"{what} route has no destinations",
                "add `route:` with at least one `- destination: {host: <service>}`",
            )
        ]
    problems: list[Problem] = []
    for k, dest in enumerate(route):
        reason = host_problem(dest.destination.host, wildcard=False)
        if reason:
            problems.append(
                Problem(f"{path}.route[{k}].destination.host", reason, "name one service, e.g. mysql")
            )
    weights = [d.weight for d in route]
    if len(weights) == 1:
        if weights[0] not in (None, 100):
            problems.append(
                Problem(
                    f"{path}.route[0].weight",
                    f"the only destination gets every connection, so its weight must be 100, got {weights[0]}",
                    "remove 'weight' or set it to 100",
                )
            )
        return problems
    if any(w is None for w in weights):
        missing = ", ".join(f"route[{k}]" for k, w in enumerate(weights) if w is None)
        problems.append(
            Problem(
                f"{path}.route",
                f"{missing} has no weight; with {len(weights)} destinations every one needs a weight "
                "and the weights must add up to 100",
                "set 'weight' on every destination",
            )
        )
        return problems
    total = sum(w for w in weights if w is not None)
    if total != 100:
        change = "add" if total < 100 else "remove"
        problems.append(
            Problem(
                f"{path}.route",
                f"destination weights add up to {total} ({' + '.join(str(w) for w in weights)}), not 100",
                f"adjust the weights so they add up to exactly 100 ({change} {abs(100 - total)})",
            )
        )
    return problems


def _selector_key(resource: Resource) -> tuple[tuple[str, str], ...]:
    spec = resource.spec
    assert isinstance(spec, SidecarSpec)
    labels = spec.workload_selector.labels if spec.workload_selector else {}
    return tuple(sorted(labels.items()))


def sidecar_conflicts(state: Mapping[ResourceKey, Resource], changed: Collection[ResourceKey]) -> list[Violation]:
    """Two Sidecars in one namespace with the same selector (or both without one), where at
    least one of them changed. The later one (by name) of a new pair is blamed."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[ResourceKey]] = {}
    for key in sorted(state):
        if key[0] == "Sidecar" and isinstance(state[key].spec, SidecarSpec):
            groups.setdefault((state[key].namespace, _selector_key(state[key])), []).append(key)
    violations: list[Violation] = []
    for (namespace, selector), keys in sorted(groups.items()):
        if len(keys) < 2:
            continue
        blamed = [k for k in keys if k in changed]
        if len(blamed) == len(keys):
            blamed = blamed[1:]
        for key in blamed:
            sc = state[key]
            others = ", ".join(state[k].ref() for k in keys if k != key)
            which = "without workloadSelector" if not selector else "with the same workloadSelector"
            violations.append(
                Violation(
                    message=f"namespace '{namespace}' already has a Sidecar {which} ({others}); "
                    "Istio leaves the choice between them undefined",
                    path="spec.workloadSelector",
                    kind=sc.kind,
                    name=sc.name,
                    namespace=sc.namespace,
                    file=sc.source.file,
                    document=sc.source.document,
                    line=sc.source.line,
                    hint=f"merge it into {others}, or give it a workloadSelector that picks other workloads",
                    code=CONFLICT_CODE,
                )
            )
    return violations
