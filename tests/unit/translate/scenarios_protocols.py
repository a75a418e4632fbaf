"""Golden scenarios for TCP/TLS/gRPC outbound, tcp and tls routes, and the Sidecar resource."""

from __future__ import annotations

from scenarios import BOOKINFO, FRONTEND, _snap, res, wl

from novamesh.model.proxy import Proxy
from novamesh.model.snapshot import MeshSnapshot

MYSQL = [
    wl("db1", "mysql", "v1", "127.1.0.20", port=3306, protocol="TCP"),
    wl("db2", "mysql", "v2", "127.1.0.21", port=3306, protocol="TCP"),
    wl("grpc1", "greeter", "v1", "127.1.0.22", port=50051, protocol="GRPC"),
    # A TCP service on the port the frontend itself serves: no local listener (it would clash).
    wl("legacy1", "legacy-tcp", "v1", "127.1.0.23", port=9080, protocol="TCP"),
    # Another namespace's TCP service on 3306: the client's own namespace wins the port.
    wl("db9", "mysql", "v1", "127.1.0.24", port=3306, ns="other", protocol="TCP"),
]

MYSQL_DR = res("DestinationRule", "mysql", {"host": "mysql", "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]})

MYSQL_VS = res("VirtualService", "mysql", {
    "hosts": ["mysql"],
    "tcp": [{"match": [{"port": 3306}], "route": [
        {"destination": {"host": "mysql", "subset": "v1"}, "weight": 80},
        {"destination": {"host": "mysql", "subset": "v2"}, "weight": 20},
    ]}],
})

TLS_ENTRIES = [
    res("ServiceEntry", "payments", {"hosts": ["pay.example.com", "pay-canary.example.com"], "resolution": "DNS",
                                     "ports": [{"number": 8443, "name": "tls", "protocol": "TLS"}]}),
    res("ServiceEntry", "billing", {"hosts": ["billing.example.com"], "resolution": "DNS",
                                    "ports": [{"number": 8443, "name": "https", "protocol": "HTTPS"}]}),
    res("ServiceEntry", "smtp", {"hosts": ["smtp.example.com"], "resolution": "DNS",
                                 "ports": [{"number": 465, "name": "tls-smtp", "protocol": "TLS"}]}),
    res("VirtualService", "pay", {
        "hosts": ["pay.example.com"],
        "tls": [{"match": [{"port": 8443, "sniHosts": ["pay.example.com"]}], "route": [
            {"destination": {"host": "pay.example.com"}, "weight": 90},
            {"destination": {"host": "pay-canary.example.com"}, "weight": 10},
        ]}],
    }),
]


def _sidecar(name: str, spec: dict[str, object], namespace: str = "default") -> object:
    return res("Sidecar", name, spec, namespace)


def scenarios() -> dict[str, tuple[MeshSnapshot, Proxy]]:
    scoped = _sidecar("frontend", {
        "workloadSelector": {"labels": {"app": "frontend"}},
        "egress": [{"hosts": ["./ratings", "istio-system/*"]}, {"port": {"number": 3306}, "hosts": ["*/mysql"]}],
        "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
    })
    namespace_default = _sidecar("default", {"egress": [{"hosts": ["./*"]}]})
    allow_any_root = _sidecar("default", {"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}, namespace="istio-system")
    return {
        "protocols_tcp_tls_grpc": (_snap([MYSQL_DR, MYSQL_VS, *TLS_ENTRIES], BOOKINFO + MYSQL), FRONTEND),
        # The selector-matching Sidecar wins over the namespace default and the root one.
        "sidecar_egress_scoped": (_snap([scoped, namespace_default, allow_any_root], BOOKINFO + MYSQL), FRONTEND),
        # Only the root namespace's Sidecar applies: ALLOW_ANY through the dynamic forward proxy.
        "sidecar_allow_any_root": (_snap([allow_any_root], BOOKINFO[:2]), FRONTEND),
    }
