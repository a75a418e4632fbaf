"""Gateway scenarios: an ingress gateway (HTTP, httpsRedirect, SIMPLE and MUTUAL TLS) and the
egress pattern (a VirtualService bound to ``mesh`` and an egress Gateway), translated for the
gateway and for a sidecar.

Envoy's validate mode reads TLS files, so the scenarios write a throwaway certificate to a fixed
path (fixed so the golden files do not change from one machine to the next).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import replace
from pathlib import Path

from scenarios import BOOKINFO, FRONTEND, _snap, res, wl

from novamesh.model.proxy import Proxy, ProxyPort
from novamesh.model.snapshot import MeshSnapshot

CERT_DIR = Path("/tmp/novamesh-golden-certs")
CERT = str(CERT_DIR / "tls.crt")
KEY = str(CERT_DIR / "tls.key")
CA = str(CERT_DIR / "ca.crt")


def _write_certs() -> None:
    """A self-signed certificate (also used as the CA file), written once, atomically."""
    if all(os.path.exists(p) for p in (CERT, KEY, CA)):
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("shop.example.com")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    CERT_DIR.mkdir(parents=True, exist_ok=True)
    for path, data in ((CERT, pem), (KEY, key_pem), (CA, pem)):
        tmp = f"{path}.{os.getpid()}"
        Path(tmp).write_bytes(data)
        os.replace(tmp, path)


INGRESS = Proxy(
    id="gw1", kind="gateway", service="istio-ingressgateway", namespace="istio-system", address="127.1.0.50",
    labels=(("app", "istio-ingressgateway"), ("istio", "ingressgateway")), ports=(ProxyPort(8080, "HTTP", "http-8080"),),
)
EGRESS = Proxy(
    id="egw1", kind="gateway", service="istio-egressgateway", namespace="istio-system", address="127.1.0.51",
    labels=(("app", "istio-egressgateway"), ("istio", "egressgateway")), ports=(ProxyPort(8090, "HTTP", "http-8090"),),
)


def _ingress() -> MeshSnapshot:
    gateway = res("Gateway", "ingress", {
        "selector": {"istio": "ingressgateway"},
        "servers": [
            {"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*.example.com"]},
            {"port": {"number": 8081, "name": "http-redirect", "protocol": "HTTP"}, "hosts": ["shop.example.com", "old.example.com"],
             "tls": {"httpsRedirect": True}},
            {"port": {"number": 8443, "name": "https", "protocol": "HTTPS"}, "hosts": ["shop.example.com"],
             "tls": {"mode": "SIMPLE", "serverCertificate": CERT, "privateKey": KEY}},
            {"port": {"number": 8443, "name": "https-partner", "protocol": "HTTPS"}, "hosts": ["default/partner.example.com"],
             "tls": {"mode": "MUTUAL", "serverCertificate": CERT, "privateKey": KEY, "caCertificates": CA}},
        ],
    }, namespace="istio-system")
    other = res("Gateway", "other", {  # selects another gateway: must not appear
        "selector": {"istio": "other"},
        "servers": [{"port": {"number": 9999, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
    }, namespace="istio-system")
    shop = res("VirtualService", "shop", {
        "hosts": ["shop.example.com", "partner.example.com"],
        "gateways": ["istio-system/ingress"],
        "http": [
            {"name": "reviews", "match": [{"uri": {"prefix": "/reviews"}}], "route": [{"destination": {"host": "reviews"}}]},
            {"name": "front", "route": [{"destination": {"host": "frontend", "port": {"number": 9080}}}]},
        ],
    })
    both = res("VirtualService", "ratings", {  # bound to the sidecars and the gateway
        "hosts": ["ratings", "ratings.example.com"],
        "gateways": ["mesh", "istio-system/ingress"],
        "http": [
            {"name": "mesh-only", "match": [{"gateways": ["mesh"], "uri": {"prefix": "/internal"}}],
             "route": [{"destination": {"host": "ratings"}}]},
            {"name": "all", "route": [{"destination": {"host": "ratings"}}]},
        ],
    })
    return _snap([gateway, other, shop, both], BOOKINFO)


def _egress() -> MeshSnapshot:
    entry = res("ServiceEntry", "external", {
        "hosts": ["external.example.com"], "location": "MESH_EXTERNAL", "resolution": "STATIC",
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
        "endpoints": [{"address": "127.0.0.1", "ports": {"http": 18081}}],
    })
    gateway = res("Gateway", "egress", {
        "selector": {"istio": "egressgateway"},
        "servers": [{"port": {"number": 8090, "name": "http", "protocol": "HTTP"}, "hosts": ["external.example.com"]}],
    }, namespace="istio-system")
    vs = res("VirtualService", "external-via-egress", {
        "hosts": ["external.example.com"],
        "gateways": ["mesh", "istio-system/egress"],
        "http": [
            {"match": [{"gateways": ["mesh"], "port": 80}],
             "route": [{"destination": {"host": "istio-egressgateway.istio-system.svc.cluster.local", "port": {"number": 8090}}}]},
            {"match": [{"gateways": ["istio-system/egress"], "port": 8090}],
             "route": [{"destination": {"host": "external.example.com", "port": {"number": 80}}}]},
        ],
    })
    gateway_workload = replace(wl("egw1", "istio-egressgateway", "", "127.1.0.51", port=8090, ns="istio-system"), kind="gateway")
    return _snap([entry, gateway, vs], BOOKINFO[:2] + [gateway_workload])


def _conflicts() -> MeshSnapshot:
    """Two Gateways select the ingress gateway and clash on port 9000: the first by key (a-plain)
    wins, b-tls's server on 9000 is left out, its 9443 server stays. A server host ``./`` only
    admits VirtualServices of the Gateway's namespace, so the default-namespace one is not bound
    there."""
    plain = res("Gateway", "a-plain", {
        "selector": {"istio": "ingressgateway"},
        "servers": [{"port": {"number": 9000, "name": "http", "protocol": "HTTP"}, "hosts": ["./shop.example.com", "*/api.example.com"]}],
    }, namespace="istio-system")
    tls = res("Gateway", "b-tls", {
        "selector": {"app": "istio-ingressgateway"},
        "servers": [
            {"port": {"number": 9000, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"],
             "tls": {"mode": "SIMPLE", "serverCertificate": CERT, "privateKey": KEY}},
            {"port": {"number": 9443, "name": "https-2", "protocol": "HTTPS"}, "hosts": ["*"],
             "tls": {"mode": "SIMPLE", "serverCertificate": CERT, "privateKey": KEY}},
        ],
    }, namespace="istio-system")
    vs = res("VirtualService", "api", {
        "hosts": ["shop.example.com", "api.example.com"],
        "gateways": ["istio-system/a-plain", "istio-system/b-tls"],
        "http": [{"route": [{"destination": {"host": "frontend"}}]}],
    })
    return _snap([plain, tls, vs], BOOKINFO)


def scenarios() -> dict[str, tuple[MeshSnapshot, Proxy]]:
    _write_certs()
    egress = _egress()
    return {
        "gateway_ingress": (_ingress(), INGRESS),
        "gateway_ingress_sidecar_view": (_ingress(), FRONTEND),
        "gateway_egress_gateway": (egress, EGRESS),
        "gateway_egress_sidecar": (egress, FRONTEND),
        "gateway_conflicts": (_conflicts(), INGRESS),
    }
