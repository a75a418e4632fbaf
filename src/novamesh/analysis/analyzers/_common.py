"""Helpers the analyzer modules share: walking a VirtualService's destinations, host matching."""

from __future__ import annotations

from collections.abc import Iterator

from ...config.base import Destination
from ...config.names import MESH_GATEWAY, resolve_gateway, resolve_host
from ...config.resource import Resource
from ...config.types import DestinationRuleSpec, VirtualServiceSpec
from ...config.types_sidecar import RouteDestination

__all__ = ["destinations", "dr_spec", "fqdn", "gateway_refs", "host_covers", "mesh_bound", "vs_spec"]


def vs_spec(resource: Resource) -> VirtualServiceSpec | None:
    return resource.spec if isinstance(resource.spec, VirtualServiceSpec) else None


def dr_spec(resource: Resource) -> DestinationRuleSpec | None:
    return resource.spec if isinstance(resource.spec, DestinationRuleSpec) else None


def destinations(spec: VirtualServiceSpec) -> Iterator[tuple[str, Destination]]:
    """(field path, destination) of every route, mirror and L4 route destination."""
    for i, http in enumerate(spec.http):
        for j, rd in enumerate(http.route):
            yield f"spec.http[{i}].route[{j}].destination", rd.destination
        if http.mirror is not None:
            yield f"spec.http[{i}].mirror", http.mirror
        for k, mp in enumerate(http.mirrors):
            yield f"spec.http[{i}].mirrors[{k}].destination", mp.destination
    l4: list[tuple[str, list[list[RouteDestination]]]] = [
        ("tcp", [r.route for r in spec.tcp]),
        ("tls", [r.route for r in spec.tls]),
    ]
    for section, routes in l4:
        for i, route in enumerate(routes):
            for j, rd4 in enumerate(route):
                yield f"spec.{section}[{i}].route[{j}].destination", rd4.destination


def mesh_bound(spec: VirtualServiceSpec) -> bool:
    """Whether the VirtualService applies to sidecars (no ``gateways``, or ``mesh`` among them)."""
    return not spec.gateways or MESH_GATEWAY in spec.gateways


def gateway_refs(resource: Resource) -> Iterator[tuple[str, str]]:
    """(field path, ``namespace/name``) of every Gateway a VirtualService names (not ``mesh``)."""
    spec = vs_spec(resource)
    if spec is None:
        return
    for i, ref in enumerate(spec.gateways):
        if ref != MESH_GATEWAY:
            yield f"spec.gateways[{i}]", resolve_gateway(ref, resource.namespace)
    for i, http in enumerate(spec.http):
        for j, match in enumerate(http.match):
            for k, ref in enumerate(getattr(match, "gateways", None) or ()):
                if ref != MESH_GATEWAY:
                    yield f"spec.http[{i}].match[{j}].gateways[{k}]", resolve_gateway(ref, resource.namespace)


def host_covers(pattern: str, host: str) -> bool:
    """True if host ``pattern`` (maybe ``*`` or ``*.suffix``) covers ``host``."""
    if pattern == host or pattern == "*":
        return True
    return pattern.startswith("*.") and host.endswith(pattern[1:])


def fqdn(host: str, namespace: str, domain_suffix: str) -> str:
    """``host`` as Istio resolves it in ``namespace``."""
    return resolve_host(host, namespace, domain_suffix)
