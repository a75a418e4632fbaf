"""Checks on one schema-valid spec that a type cannot express (Istio's own validation rules).

Every check runs and every problem is returned, so a user fixes a document in one pass.
Paths start at ``spec``. Cross-resource checks (a subset some DestinationRule must define)
live in :mod:`novamesh.config.validate`.

Judgement calls, documented in docs/istio-fields.md:

- A VirtualService host of ``*`` is allowed, as Istio allows it.
- A route destination host may not contain a wildcard: traffic needs one concrete service.
- ``gateways`` names ``mesh`` or Gateways (``name`` or ``namespace/name``); Gateway checks
  live in :mod:`._semantic_gateway`.
- A ServiceEntry with resolution NONE may not list endpoints (Istio rejects it too), and with
  STATIC it must list endpoints or select WorkloadEntries with a ``workloadSelector``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from ._paths import Problem
from ._semantic_sidecar import check_l4_routes, check_sidecar
from .types_sidecar import SidecarSpec
from ._semantic_gateway import check_gateway, gateway_ref_problems
from ._semantic_http import check_http_policies
from ._semantic_telemetry import check_telemetry
from .types_telemetry import TelemetrySpec
from ._semantic_mesh import check_mesh_config
from ._semantic_authz import AUTHZ_CHECKERS
from ._semantic_security import PEER_AUTHN_CHECKERS
from .types_mesh import MeshConfigSpec
from ._semantic_traffic import traffic_policy_problems
from ._syntax import host_problem, is_cidr, is_dns1123_label, is_ip, regex_error
from .types import (
    DestinationRuleSpec,
    HTTPMatchRequest,
    HTTPRoute,
    ServiceEntrySpec,
    Spec,
    StringMatch,
    VirtualServiceSpec,
    WorkloadEntrySpec,
)

__all__ = ["check_spec"]

# RFC 7230 token characters, lower case only: Istio requires lower-case header names.
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+\-.^_`|~]+")
_FIELDS_DOC = "docs/istio-fields.md"


def check_spec(kind: str, spec: Spec) -> list[Problem]:
    """Every semantic problem in ``spec`` of ``kind`` (empty if it is fine)."""
    checker = _CHECKERS.get(kind)
    return checker(spec) if checker is not None else []


def _hosts(hosts: list[str], path: str, *, wildcard: bool = True) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, host in enumerate(hosts):
        reason = host_problem(host, wildcard=wildcard)
        if reason:
            problems.append(
                Problem(
                    f"{path}[{i}]",
                    reason,
                    "write a host such as reviews, reviews.prod.svc.cluster.local or *.example.com",
                )
            )
        elif host.lower() in seen:
            problems.append(
                Problem(
                    f"{path}[{i}]",
                    f"duplicate host '{host}' (same as {path}[{seen[host.lower()]}])",
                    "list each host once",
                )
            )
        else:
            seen[host.lower()] = i
    return problems


def _virtual_service(spec: Spec) -> list[Problem]:
    assert isinstance(spec, VirtualServiceSpec)
    problems = _hosts(spec.hosts, "spec.hosts")
    problems += gateway_ref_problems(spec.gateways, "spec.gateways")
    for i, route in enumerate(spec.http):
        problems += _http_route(route, f"spec.http[{i}]")
    problems += check_l4_routes(spec.tcp, spec.tls, spec.hosts)
    return problems


def _http_route(route: HTTPRoute, path: str) -> list[Problem]:
    problems: list[Problem] = []
    for j, match in enumerate(route.match):
        problems += _match(match, f"{path}.match[{j}]")
    problems += check_http_policies(route, path)  # timeout, retries, fault, redirect, ...
    if not route.route:
        if route.redirect is not None or route.direct_response is not None:
            return problems  # answered by Envoy itself: no destinations needed
        problems.append(
            Problem(
                f"{path}.route",
                "HTTP route has no destinations",
                "add `route:` with at least one `- destination: {host: <service>}`",
            )
        )
        return problems
    for k, dest in enumerate(route.route):
        reason = host_problem(dest.destination.host, wildcard=False)
        if reason:
            problems.append(
                Problem(
                    f"{path}.route[{k}].destination.host",
                    reason,
                    "name one service, e.g. reviews or reviews.prod.svc.cluster.local",
                )
            )
    weights = [d.weight for d in route.route]
    if len(weights) == 1:
        if weights[0] not in (None, 100):
            problems.append(
                Problem(
                    f"{path}.route[0].weight",
                    "the only destination gets all traffic, so its weight must be 100, "
                    f"got {weights[0]}",
                    "remove 'weight' or set it to 100",
                )
            )
        return problems
    missing = [k for k, w in enumerate(weights) if w is None]
    if missing:
        which = ", ".join(f"route[{k}]" for k in missing)
        problems.append(
            Problem(
                f"{path}.route",
                f"{which} has no weight; with {len(weights)} destinations every one needs a weight "
                "and the weights must add up to 100",
                "set 'weight' on every destination, e.g. "
                + " and ".join(str(w) for w in _even_split(len(weights))),
            )
        )
        return problems
    total = sum(w for w in weights if w is not None)
    if total != 100:
        terms = " + ".join(str(w) for w in weights)
        change = "add" if total < 100 else "remove"
        problems.append(
            Problem(
                f"{path}.route",
                f"destination weights add up to {total} ({terms}), not 100",
                f"adjust the weights so they add up to exactly 100 ({change} {abs(100 - total)})",
            )
        )
    return problems


def _even_split(count: int) -> list[int]:
    base = 100 // count
    return [base + (1 if i < 100 - base * count else 0) for i in range(count)]


def _match(match: HTTPMatchRequest, path: str) -> list[Problem]:
    problems: list[Problem] = gateway_ref_problems(match.gateways, f"{path}.gateways")
    for name in ("uri", "scheme", "method", "authority"):
        problems += _string_match(getattr(match, name), f"{path}.{name}")
    header_maps = {"headers": match.headers, "withoutHeaders": match.without_headers}
    for alias, headers in header_maps.items():
        for header, string_match in headers.items():
            where = f"{path}.{alias}.{header}"
            if _HEADER_NAME.fullmatch(header) is None:
                fixed = header.lower()
                hint = (
                    f"write it in lower case: '{fixed}'"
                    if _HEADER_NAME.fullmatch(fixed)
                    else "use only lower-case letters, digits and !#$%&'*+-.^_`|~"
                )
                problems.append(
                    Problem(
                        where,
                        f"header name '{header}' must be lower case and made of HTTP token "
                        "characters",
                        hint,
                    )
                )
            problems += _string_match(string_match, where)
    for param, string_match in match.query_params.items():
        problems += _string_match(string_match, f"{path}.queryParams.{param}")
    return problems


def _string_match(string_match: StringMatch | None, path: str) -> list[Problem]:
    if string_match is None or string_match.regex is None:
        return []
    error = regex_error(string_match.regex)
    if error is None:
        return []
    return [
        Problem(
            f"{path}.regex",
            f"invalid RE2 regular expression {string_match.regex!r}: {error}",
            "fix the pattern; Envoy uses RE2, which has no lookaround (?=...) "
            "or backreferences (\\1)",
        )
    ]


def _destination_rule(spec: Spec) -> list[Problem]:
    assert isinstance(spec, DestinationRuleSpec)
    problems: list[Problem] = []
    reason = host_problem(spec.host)
    if reason:
        problems.append(Problem("spec.host", reason, "write a host such as reviews"))
    seen: dict[str, int] = {}
    for i, subset in enumerate(spec.subsets):
        path = f"spec.subsets[{i}]"
        if not is_dns1123_label(subset.name):
            problems.append(
                Problem(
                    f"{path}.name",
                    f"subset name '{subset.name}' is not a DNS-1123 label",
                    "use lower-case letters, digits and '-', at most 63 characters (e.g. v1)",
                )
            )
        if subset.name in seen:
            problems.append(
                Problem(
                    f"{path}.name",
                    f"duplicate subset name '{subset.name}' "
                    f"(also spec.subsets[{seen[subset.name]}])",
                    "give each subset a unique name",
                )
            )
        seen.setdefault(subset.name, i)
        if not subset.labels:
            problems.append(
                Problem(
                    f"{path}.labels",
                    f"subset '{subset.name}' has no labels, so it would select "
                    "every endpoint of the host",
                    "add labels that pick its workloads, e.g. version: v1",
                )
            )
        problems += traffic_policy_problems(subset.traffic_policy, f"{path}.trafficPolicy")
    return problems + traffic_policy_problems(spec.traffic_policy, "spec.trafficPolicy")


def _service_entry(spec: Spec) -> list[Problem]:
    assert isinstance(spec, ServiceEntrySpec)
    resolution = spec.resolution
    dns = resolution in ("DNS", "DNS_ROUND_ROBIN")
    problems = _hosts(spec.hosts, "spec.hosts")
    if dns:
        for i, host in enumerate(spec.hosts):
            if "*" in host:
                problems.append(
                    Problem(
                        f"spec.hosts[{i}]",
                        f"wildcard host '{host}' cannot be resolved with resolution {resolution}",
                        "use a concrete host name, or resolution NONE",
                    )
                )
    for i, address in enumerate(spec.addresses):
        if not is_cidr(address):
            problems.append(
                Problem(
                    f"spec.addresses[{i}]",
                    f"'{address}' is not an IP address or CIDR block",
                    "write e.g. 10.0.0.5 or 10.0.0.0/24",
                )
            )
    if not spec.ports and resolution != "NONE":
        problems.append(
            Problem(
                "spec.ports",
                f"a ServiceEntry with resolution {resolution} needs at least one port",
                "add e.g. `ports: [{number: 443, name: https, protocol: HTTPS}]`",
            )
        )
    problems += _unique_ports(spec)
    port_names = {p.name for p in spec.ports if p.name}
    if resolution == "STATIC" and not spec.endpoints and not (spec.workload_selector and spec.workload_selector.labels):
        problems.append(
            Problem(
                "spec.endpoints",
                "resolution STATIC needs endpoints with IP addresses, or a workloadSelector",
                "add `endpoints: [{address: 10.0.0.5}]` or `workloadSelector: {labels: {app: NAME}}` "
                "selecting WorkloadEntries",
            )
        )
    if resolution == "NONE" and spec.endpoints:
        problems.append(
            Problem(
                "spec.endpoints",
                "endpoints are not used with resolution NONE",
                "remove 'endpoints', or set resolution to STATIC (IPs) or DNS (host names)",
            )
        )
    for k, endpoint in enumerate(spec.endpoints):
        path = f"spec.endpoints[{k}]"
        if resolution == "STATIC" and not is_ip(endpoint.address):
            problems.append(
                Problem(
                    f"{path}.address",
                    f"resolution STATIC needs an IP address, got '{endpoint.address}'",
                    "write an IP address, or use resolution DNS for host names",
                )
            )
        elif dns and (not endpoint.address or host_problem(endpoint.address, wildcard=False)):
            problems.append(
                Problem(
                    f"{path}.address",
                    f"'{endpoint.address}' is not a host name or IP address",
                    "write e.g. api.example.com or 10.0.0.5",
                )
            )
        problems += _endpoint_ports(endpoint.ports, f"{path}.ports", port_names)
    return problems


def _unique_ports(spec: ServiceEntrySpec) -> list[Problem]:
    problems: list[Problem] = []
    numbers: dict[int, int] = {}
    names: dict[str, int] = {}
    for i, port in enumerate(spec.ports):
        if port.number in numbers:
            problems.append(
                Problem(
                    f"spec.ports[{i}].number",
                    f"port {port.number} is listed twice (also spec.ports[{numbers[port.number]}])",
                    "list each port number once",
                )
            )
        numbers.setdefault(port.number, i)
        if port.name and port.name in names:
            problems.append(
                Problem(
                    f"spec.ports[{i}].name",
                    f"port name '{port.name}' is used twice (also spec.ports[{names[port.name]}])",
                    "give each port a unique name",
                )
            )
        if port.name:
            names.setdefault(port.name, i)
    return problems


def _endpoint_ports(ports: Mapping[str, int], path: str, known: set[str]) -> list[Problem]:
    problems: list[Problem] = []
    for name, number in ports.items():
        if name not in known:
            choices = ", ".join(sorted(known)) or "none are named"
            problems.append(
                Problem(
                    f"{path}.{name}",
                    f"endpoint port '{name}' is not a port name of this ServiceEntry",
                    f"use one of the names in spec.ports ({choices})",
                )
            )
        problems += _port_number(number, f"{path}.{name}")
    return problems


def _port_number(number: int, path: str) -> list[Problem]:
    if 1 <= number <= 65535:
        return []
    return [Problem(path, f"port {number} is out of range", "use a port between 1 and 65535")]


def _workload_entry(spec: Spec) -> list[Problem]:
    assert isinstance(spec, WorkloadEntrySpec)
    problems: list[Problem] = []
    if not spec.address:
        problems.append(
            Problem(
                "spec.address",
                "missing required field 'address'",
                "add the workload's IP address or host name, e.g. address: 10.0.0.5",
            )
        )
    elif host_problem(spec.address, wildcard=False):
        problems.append(
            Problem(
                "spec.address",
                f"'{spec.address}' is not an IP address or host name",
                "write e.g. 10.0.0.5 or vm1.example.com",
            )
        )
    for name, number in spec.ports.items():
        problems += _port_number(number, f"spec.ports.{name}")
    return problems


_CHECKERS: dict[str, Callable[[Spec], list[Problem]]] = {
    "Sidecar": lambda spec: check_sidecar(spec) if isinstance(spec, SidecarSpec) else [],
    "VirtualService": _virtual_service,
    "DestinationRule": _destination_rule,
    "ServiceEntry": _service_entry,
    "WorkloadEntry": _workload_entry,
    "Gateway": check_gateway,
    "Telemetry": lambda spec: check_telemetry(spec) if isinstance(spec, TelemetrySpec) else [],
    "MeshConfig": lambda spec: check_mesh_config(spec) if isinstance(spec, MeshConfigSpec) else [],
    **AUTHZ_CHECKERS,
    **PEER_AUTHN_CHECKERS,
}
