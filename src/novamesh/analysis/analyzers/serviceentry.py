"""ServiceEntry analyzers: addresses for TCP ports (IST0134), port naming (IST0118) and
conflicting protocols for one host and port (IST0177)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator

from ...config.resource import Resource
from ...config.types import ServiceEntrySpec
from ...model.snapshot import protocol_for
from ..context import Context
from ..messages import Message
from ..registry import analyzer
from ._common import fqdn

_CONVENTION = re.compile(r"^(http|http2|https|grpc|grpc-web|mongo|mysql|redis|tcp|tls|udp)(-.*)?$")
"""Istio's port naming convention: ``<protocol>[-<suffix>]``."""


def _entries(ctx: Context) -> Iterator[tuple[Resource, ServiceEntrySpec]]:
    for se in ctx.of_kind("ServiceEntry"):
        if isinstance(se.spec, ServiceEntrySpec):
            yield se, se.spec


@analyzer("IST0134", "serviceentry.AddressesRequiredAnalyzer",
          "A ServiceEntry with a port whose protocol is TCP or unset has addresses: without them every "
          "connection to that port matches, whatever the host.")
def addresses_required(ctx: Context) -> Iterator[Message]:
    for se, spec in _entries(ctx):
        if spec.addresses:
            continue
        for i, port in enumerate(spec.ports):
            if port.protocol in ("", "TCP"):
                yield ctx.message("IST0134", se, "ServiceEntry addresses are required for this protocol.",
                                  path=f"spec.ports[{i}].protocol" if port.protocol else f"spec.ports[{i}]",
                                  hint="add `addresses:` (the service's IPs or CIDRs), or set the port's "
                                  "protocol if it is not TCP")
                break


@analyzer("IST0118", "serviceentry.PortNameAnalyzer",
          "A ServiceEntry port without a protocol is named <protocol>[-suffix]; otherwise it is treated as TCP.")
def port_names(ctx: Context) -> Iterator[Message]:
    for se, spec in _entries(ctx):
        for i, port in enumerate(spec.ports):
            if port.protocol or _CONVENTION.match(port.name.lower()):
                continue
            target = str(port.target_port) if port.target_port else ""
            yield ctx.message(
                "IST0118", se,
                f"Port name {port.name or '(empty)'} (port: {port.number}, targetPort: {target}) doesn't follow "
                "the naming convention of Istio port.",
                path=f"spec.ports[{i}].name",
                hint="set `protocol:` on the port, or name it <protocol>[-suffix] such as http-api or tcp-db")


@analyzer("IST0177", "serviceentry.ConflictingProtocolAnalyzer",
          "ServiceEntries that define the same host and port agree on its protocol.")
def conflicting_protocols(ctx: Context) -> Iterator[Message]:
    seen: dict[tuple[str, int], dict[str, tuple[Resource, str]]] = defaultdict(dict)
    for se, spec in _entries(ctx):
        for port in spec.ports:
            proto = protocol_for(port.protocol, port.name)
            for host in spec.hosts:
                seen[(fqdn(host, se.namespace, ctx.domain_suffix), port.number)].setdefault(f"{se.namespace}/{se.name}", (se, proto))
    for (host, number), owners in sorted(seen.items()):
        protocols = sorted({proto for _, proto in owners.values()})
        if len(protocols) < 2:
            continue
        names = ", ".join(sorted(owners))
        for se, _ in owners.values():
            yield ctx.message(
                "IST0177", se,
                f"Multiple ServiceEntries ({names}) define the same host \"{host}\" and port {number} with "
                f"conflicting protocols ({', '.join(protocols)}).",
                path="spec.ports", hint="use one protocol for the port in every ServiceEntry, or keep the host in one ServiceEntry")
