"""Typed model of Istio's Gateway (``networking.istio.io``): servers a gateway Envoy exposes.

Field names follow Istio's YAML. Fields the data plane does not honour yet are listed in
``NOT_YET_SUPPORTED`` of :mod:`._schema` (rejected, never silently ignored); values the model
accepts but novamesh cannot serve yet (other TLS modes, TCP/TLS servers, ``credentialName``)
are rejected by :mod:`._semantic_gateway` with a field path and a hint.
"""

from __future__ import annotations

import typing
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from .base import Spec

__all__ = [
    "GATEWAY_NOT_YET_SUPPORTED",
    "GATEWAY_PROTOCOLS",
    "TLS_MODES",
    "GatewayPort",
    "GatewaySpec",
    "Server",
    "ServerTLSSettings",
    "host_intersection",
    "selects",
    "served_hosts",
    "server_host_parts",
]

GatewayProtocol = Literal["HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS"]

GATEWAY_PROTOCOLS: tuple[str, ...] = typing.get_args(GatewayProtocol)
"""Server port protocols Istio accepts on a Gateway (matched case-insensitively)."""

TlsMode = Literal["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"]

TLS_MODES: tuple[str, ...] = typing.get_args(TlsMode)
"""Istio's ServerTLSSettings.TLSmode values."""


class GatewayPort(Spec):
    """Istio's Port: the port a gateway server listens on."""

    number: int = Field(ge=1, le=65535)
    protocol: str
    name: str = ""

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        # Istio compares protocol names case-insensitively; keep one spelling from here on.
        upper = value.upper()
        if upper not in GATEWAY_PROTOCOLS:
            raise ValueError(f"unknown protocol {value!r}; expected one of {', '.join(GATEWAY_PROTOCOLS)}")
        return upper


class ServerTLSSettings(Spec):
    """Istio's ServerTLSSettings, the subset novamesh serves (see docs/gateways.md)."""

    https_redirect: bool = False
    mode: TlsMode | None = None
    """Unset means PASSTHROUGH, as in Istio."""
    server_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    credential_name: str = ""


class Server(Spec):
    """One server of a Gateway: a port, the hosts it serves and how it terminates TLS."""

    port: GatewayPort
    hosts: list[str] = Field(min_length=1)
    tls: ServerTLSSettings | None = None
    name: str = ""


class GatewaySpec(Spec):
    """Istio's Gateway: ``selector`` picks gateway workloads (in every namespace), ``servers``
    are the listeners they open."""

    selector: dict[str, str] = Field(default_factory=dict)
    servers: list[Server] = Field(min_length=1)


GATEWAY_NOT_YET_SUPPORTED: dict[type[BaseModel], tuple[str, ...]] = {
    Server: ("bind", "defaultEndpoint"),
    GatewayPort: ("targetPort",),
    ServerTLSSettings: (
        "credentialNames",
        "tlsCertificates",
        "caCrl",
        "subjectAltNames",
        "verifyCertificateSpki",
        "verifyCertificateHash",
        "minProtocolVersion",
        "maxProtocolVersion",
        "cipherSuites",
    ),
}
"""Real Istio Gateway fields novamesh rejects (named as such) until the data plane honours them."""


def server_host_parts(host: str) -> tuple[str, str]:
    """``(namespace filter, host)`` of a server host written ``[namespace/]host``.

    Istio's rule: ``*/host`` or a bare ``host`` admits VirtualServices of every namespace,
    ``./host`` those in the Gateway's namespace, ``ns/host`` those in ``ns``. The filter is
    returned as written (``*``, ``.`` or a namespace); the host lower-cased.
    """
    namespace, sep, name = host.rpartition("/")
    return (namespace if sep else "*"), name.lower()


def _covers(pattern: str, host: str) -> bool:
    if pattern == "*" or pattern == host:
        return True
    return pattern.startswith("*.") and host.endswith(pattern[1:])


def host_intersection(a: str, b: str) -> str | None:
    """The more specific of hosts ``a`` and ``b`` when one covers the other (``*`` and
    ``*.suffix`` wildcards), else None. Istio binds a VirtualService host to a server host this
    way: ``*.example.com`` and ``shop.example.com`` intersect in ``shop.example.com``."""
    if _covers(a, b):
        return b
    if _covers(b, a):
        return a
    return None


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a Gateway ``selector`` picks a workload with ``labels`` (every pair present)."""
    return all(labels.get(k) == v for k, v in selector.items())


def served_hosts(server: Server, vs_hosts: list[str], vs_namespace: str, gateway_namespace: str) -> set[str]:
    """The hosts ``server`` (of a Gateway in ``gateway_namespace``) serves for a VirtualService
    in ``vs_namespace`` with (resolved) ``vs_hosts``: the more specific host of each
    intersecting pair, for server hosts whose namespace filter admits the VirtualService."""
    found: set[str] = set()
    for written in server.hosts:
        namespace, host = server_host_parts(written)
        admitted = namespace == "*" or namespace == vs_namespace or (namespace == "." and vs_namespace == gateway_namespace)
        if not admitted:
            continue
        for vs_host in vs_hosts:
            common = host_intersection(vs_host, host)
            if common is not None:
                found.add(common)
    return found
