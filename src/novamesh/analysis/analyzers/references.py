"""IST0101 ReferencedResourceNotFound: subsets, hosts and gateways a VirtualService names."""

from __future__ import annotations

from collections.abc import Iterator

from ...config.resource import Resource
from ..context import Context
from ..messages import Message
from ..registry import analyzer
from ._common import destinations, dr_spec, fqdn, gateway_refs, host_covers, vs_spec


def _subsets_for(ctx: Context, host: str) -> tuple[list[Resource], list[str]]:
    rules = []
    for dr in ctx.of_kind("DestinationRule"):
        spec = dr_spec(dr)
        if spec is not None and host_covers(fqdn(spec.host, dr.namespace, ctx.domain_suffix), host):
            rules.append(dr)
    names = sorted({s.name for dr in rules for s in getattr(dr.spec, "subsets", ())})
    return rules, names


@analyzer("IST0101", "virtualservice.DestinationSubsetAnalyzer",
          "Every subset a route, mirror or L4 route names is defined by a DestinationRule for its host.")
def missing_subsets(ctx: Context) -> Iterator[Message]:
    for vs in ctx.of_kind("VirtualService"):
        spec = vs_spec(vs)
        if spec is None:
            continue
        for path, dest in destinations(spec):
            if not dest.subset:
                continue
            host = fqdn(dest.host, vs.namespace, ctx.domain_suffix)
            rules, names = _subsets_for(ctx, host)
            if dest.subset in names:
                continue
            if rules:
                hint = f"add subset {dest.subset!r} to {', '.join(r.ref() for r in rules)}" + (
                    f", or use one of: {', '.join(names)}" if names else "")
            else:
                hint = f"create a DestinationRule for host {host!r} with a subset named {dest.subset!r}"
            yield ctx.message("IST0101", vs, f"Referenced host+subset in destinationrule not found: "
                              f"\"{host}+{dest.subset}\"", path=f"{path}.subset", hint=hint)


@analyzer("IST0101", "virtualservice.DestinationHostAnalyzer",
          "Every destination host is a service of the mesh (a registered workload's service or a "
          "ServiceEntry host).", live_only=True)
def missing_hosts(ctx: Context) -> Iterator[Message]:
    services = list(ctx.snapshot.services)
    for vs in ctx.of_kind("VirtualService"):
        spec = vs_spec(vs)
        if spec is None:
            continue
        for path, dest in destinations(spec):
            host = fqdn(dest.host, vs.namespace, ctx.domain_suffix)
            if "*" in host or any(host_covers(s, host) for s in services):
                continue
            yield ctx.message("IST0101", vs, f"Referenced host not found: \"{host}\"", path=f"{path}.host",
                              hint="check the spelling; start a workload of that service, or add a "
                              "ServiceEntry for an external host")


@analyzer("IST0101", "virtualservice.GatewayAnalyzer",
          "Every Gateway a VirtualService binds to (spec.gateways, match gateways) exists.")
def missing_gateways(ctx: Context) -> Iterator[Message]:
    for vs in ctx.of_kind("VirtualService"):
        for path, ref in gateway_refs(vs):
            namespace, _, name = ref.partition("/")
            if ("Gateway", namespace, name) not in ctx.resources:
                yield ctx.message("IST0101", vs, f"Referenced gateway not found: \"{ref}\"", path=path,
                                  hint="create the Gateway, fix the name, or write namespace/name for a "
                                  "Gateway in another namespace")
