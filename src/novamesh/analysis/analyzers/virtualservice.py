"""VirtualService analyzers: conflicting hosts (IST0109), unreachable rules and ineffective
matches (IST0130, IST0131), and destinations that need a port (IST0112)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from ...config.resource import Resource
from ..context import Context
from ..messages import Message
from ..registry import analyzer
from ._common import destinations, fqdn, mesh_bound, vs_spec


@analyzer("IST0109", "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
          "No two VirtualServices bound to the mesh gateway (the sidecars) define the same host.")
def conflicting_hosts(ctx: Context) -> Iterator[Message]:
    owners: dict[str, list[Resource]] = defaultdict(list)
    for vs in ctx.of_kind("VirtualService"):
        spec = vs_spec(vs)
        if spec is None or not mesh_bound(spec):
            continue
        for host in dict.fromkeys(fqdn(h, vs.namespace, ctx.domain_suffix) for h in spec.hosts):
            owners[host].append(vs)
    for host, vss in sorted(owners.items()):
        if len(vss) < 2 or _isolated(vss):
            continue
        names = ",".join(f"{v.namespace}/{v.name}" for v in vss)
        for vs in vss:
            spec = vs_spec(vs)
            index = next(i for i, h in enumerate(spec.hosts if spec else ()) if fqdn(h, vs.namespace, ctx.domain_suffix) == host)
            yield ctx.message(
                "IST0109", vs,
                f"The VirtualServices {names} associated with mesh gateway define the same host {host} "
                "which can lead to undefined behavior.",
                path=f"spec.hosts[{index}]", hint="merge the conflicting VirtualServices into a single resource",
            )


def _isolated(vss: Sequence[Resource]) -> bool:
    """VirtualServices in different namespaces that each export only to their own see no conflict."""
    namespaces = {v.namespace for v in vss}
    return len(namespaces) == len(vss) and all(getattr(v.spec, "export_to", None) == ["."] for v in vss)


@dataclass(frozen=True)
class _Finding:
    code: str
    rule: int
    text: str
    match: int | None = None


def _key(match: BaseModel) -> str:
    """A match block's conditions, its name left out (two blocks with equal keys match the same requests)."""
    data = match.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude={"name"})
    return json.dumps(data, sort_keys=True)


_MATCH_ALL = ("{}", json.dumps({"uri": {"prefix": "/"}}))


def _rule_name(route: object, index: int) -> str:
    name = getattr(route, "name", None)
    return f"{name!r}" if name else f"#{index}"


def _unreachable(routes: Sequence[BaseModel]) -> list[_Finding]:
    """Istio's rule: after a rule that matches every request (no match, or a match block with no
    condition or only ``uri: {prefix: /}``) no rule is reached; a match block equal to one of an
    earlier rule is ineffective, and a rule whose every block is ineffective is unreachable."""
    findings: list[_Finding] = []
    seen: dict[str, int] = {}
    catch_all = -1
    for r, route in enumerate(routes):
        matches: list[BaseModel] = list(getattr(route, "match", None) or [])
        if catch_all >= 0:
            reason = ("only the last rule can have no matches" if not matches
                      else f"rule {_rule_name(routes[catch_all], catch_all)} before it matches every request")
            findings.append(_Finding("IST0130", r, f"VirtualService rule {_rule_name(route, r)} not used ({reason})."))
            continue
        if not matches:
            catch_all = r
            continue
        duplicates = 0
        for m, match in enumerate(matches):
            key = _key(match)
            if key in seen:
                duplicates += 1
                findings.append(_Finding(
                    "IST0131", r,
                    f"VirtualService rule {_rule_name(route, r)} match #{m} is not used "
                    f"(duplicate/overlapping match in rule {_rule_name(routes[seen[key]], seen[key])}).", m))
            else:
                seen[key] = r
            if key in _MATCH_ALL:
                catch_all = r
        if duplicates == len(matches):
            findings.append(_Finding("IST0130", r, f"VirtualService rule {_rule_name(route, r)} not used "
                                     "(all matches used by prior rules)."))
    return findings


def _rule_findings(ctx: Context, code: str) -> Iterator[Message]:
    for vs in ctx.of_kind("VirtualService"):
        spec = vs_spec(vs)
        if spec is None:
            continue
        sections: tuple[tuple[str, Sequence[BaseModel]], ...] = (("http", spec.http), ("tcp", spec.tcp), ("tls", spec.tls))
        for section, routes in sections:
            for f in _unreachable(routes):
                if f.code != code:
                    continue
                path = f"spec.{section}[{f.rule}]" + (f".match[{f.match}]" if f.match is not None else "")
                hint = ("put the most specific rules first and the catch-all rule last, or delete the rule"
                        if code == "IST0130" else "delete the duplicate match block, or change its conditions")
                yield ctx.message(code, vs, f.text, path=path, hint=hint)


@analyzer("IST0130", "virtualservice.UnreachableRulesAnalyzer",
          "No HTTP/TCP/TLS rule follows a rule that matches every request, and no rule only repeats "
          "earlier match blocks.")
def unreachable_rules(ctx: Context) -> Iterator[Message]:
    return _rule_findings(ctx, "IST0130")


@analyzer("IST0131", "virtualservice.IneffectiveMatchAnalyzer",
          "No match block repeats the conditions of a match block in an earlier rule.")
def ineffective_matches(ctx: Context) -> Iterator[Message]:
    return _rule_findings(ctx, "IST0131")


@analyzer("IST0112", "virtualservice.DestinationPortAnalyzer",
          "A destination on another service that has several ports names the port. (A destination on "
          "the VirtualService's own host may omit it: the request's port is used.)")
def destination_ports(ctx: Context) -> Iterator[Message]:
    for vs in ctx.of_kind("VirtualService"):
        spec = vs_spec(vs)
        if spec is None:
            continue
        own = {fqdn(h, vs.namespace, ctx.domain_suffix) for h in spec.hosts}
        for path, dest in destinations(spec):
            host = fqdn(dest.host, vs.namespace, ctx.domain_suffix)
            svc = ctx.service(host)
            if dest.port is not None or host in own or svc is None or len(svc.ports) < 2:
                continue
            ports = [p.number for p in svc.ports]
            yield ctx.message(
                "IST0112", vs,
                f"This VirtualService routes to a service \"{host}\" that exposes multiple ports {ports}. "
                "Specifying a port in the destination is required to disambiguate.",
                path=path, hint=f"add `port: {{number: {ports[0]}}}` (or another of {ports}) to the destination",
            )
