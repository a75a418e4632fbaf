"""Golden scenarios for DestinationRule ``trafficPolicy`` (load balancing, connection pool,
outlier detection, port-level settings, subset overrides, consistent-hash route policies)."""

from __future__ import annotations

from pathlib import Path

from scenarios import BOOKINFO, FRONTEND, _snap, res

from novamesh.model.proxy import Proxy
from novamesh.model.snapshot import MeshSnapshot

POOL = {
    "tcp": {"maxConnections": 10, "connectTimeout": "250ms", "tcpKeepalive": {"probes": 3, "time": "60s", "interval": "10s"}},
    "http": {"http1MaxPendingRequests": 5, "http2MaxRequests": 20, "maxRequestsPerConnection": 100, "maxRetries": 2,
             "idleTimeout": "30s"},
}
CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
TLS_DIR = Path("/tmp/novamesh-golden-tls")  # fixed: the path is part of the golden output
CERT_FILE = str(TLS_DIR / "client.pem")
KEY_FILE = str(TLS_DIR / "client.key")


def _client_cert_files() -> None:
    """Envoy's validate mode reads certificate files, so the MUTUAL scenario needs real ones."""
    if Path(CERT_FILE).exists() and Path(KEY_FILE).exists():
        return
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "golden-client")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .sign(key, hashes.SHA256()))
    TLS_DIR.mkdir(parents=True, exist_ok=True)
    Path(KEY_FILE).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
    Path(CERT_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

OUTLIER = {"consecutive5xxErrors": 3, "consecutiveGatewayErrors": 0, "interval": "1s", "baseEjectionTime": "2s",
           "maxEjectionPercent": 100, "minHealthPercent": 20}


def scenarios() -> dict[str, tuple[MeshSnapshot, Proxy]]:
    """Subset and port-level merges on reviews (with a weighted VirtualService) and every hash key
    and consistent-hash algorithm on external hosts without a VirtualService."""
    reviews_dr = res("DestinationRule", "reviews", {
        "host": "reviews",
        "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}, "connectionPool": POOL, "outlierDetection": OUTLIER},
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            # overrides only the load balancer: pool and outlier detection come from the rule
            {"name": "v2", "labels": {"version": "v2"},
             "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpCookie": {"name": "sticky", "path": "/", "ttl": "0s"}}}}},
            # a port-level entry replaces everything: only its connection pool, defaults otherwise
            {"name": "v3", "labels": {"version": "v3"},
             "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"},
                               "portLevelSettings": [{"port": {"number": 9080}, "connectionPool": {"http": {"http2MaxRequests": 7}}}]}},
        ],
    })
    split = res("VirtualService", "reviews", {
        "hosts": ["reviews"],
        "http": [{"route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 50},
        ]}],
    })
    ports = [{"number": 8080, "name": "http", "protocol": "HTTP"}, {"number": 8081, "name": "grpc", "protocol": "GRPC"}]
    external = [
        res("ServiceEntry", name, {"hosts": [host], "location": "MESH_EXTERNAL", "resolution": "STATIC", "ports": ports,
                                   "endpoints": [{"address": "127.2.0.30"}, {"address": "127.2.0.31"}]})
        for name, host in (("hdr", "header.example"), ("ipq", "source-ip.example"), ("qp", "query.example"))
    ]
    drs = [
        res("DestinationRule", "hdr", {"host": "header.example", "trafficPolicy": {
            "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user", "maglev": {"tableSize": 65537}}},
            # port 8081 (gRPC, HTTP/2): per-request settings merge into the existing h2 options
            "portLevelSettings": [{"port": {"number": 8081}, "connectionPool": {"http": {"idleTimeout": "5s", "maxRequestsPerConnection": 1}}}],
        }}),
        res("DestinationRule", "ipq", {"host": "source-ip.example", "trafficPolicy": {
            "loadBalancer": {"consistentHash": {"useSourceIp": True, "minimumRingSize": 2048}}}}),
        res("DestinationRule", "qp", {"host": "query.example", "trafficPolicy": {
            "loadBalancer": {"consistentHash": {"httpQueryParameterName": "user", "ringHash": {"minimumRingSize": 512}}},
            "portLevelSettings": [{"port": {"number": 8080}, "loadBalancer": {"simple": "ROUND_ROBIN"}}]}}),
    ]
    return {
        "traffic_policy_subsets": (_snap([reviews_dr, split], BOOKINFO), FRONTEND),
        "traffic_policy_consistent_hash": (_snap(external + drs, BOOKINFO[:2]), FRONTEND),
        "traffic_policy_tls": _tls_scenario(),
    }


def _tls_scenario() -> tuple[MeshSnapshot, Proxy]:
    """TLS origination: SIMPLE with a CA and SAN check on port 80 (HTTP to the app, TLS to
    port 443), MUTUAL on the gRPC port, and SIMPLE without verification on another host."""
    _client_cert_files()
    secure = res("ServiceEntry", "secure", {
        "hosts": ["api.secure.example"], "location": "MESH_EXTERNAL", "resolution": "DNS",
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 443},
                  {"number": 8443, "name": "grpc", "protocol": "GRPC"}]})
    lab = res("ServiceEntry", "lab", {
        "hosts": ["lab.example"], "location": "MESH_EXTERNAL", "resolution": "DNS",
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 443}]})
    secure_dr = res("DestinationRule", "secure", {"host": "api.secure.example", "trafficPolicy": {
        "tls": {"mode": "SIMPLE", "caCertificates": CA_FILE, "subjectAltNames": ["api.secure.example", "spiffe://example/ns/a/sa/b"]},
        "portLevelSettings": [{"port": {"number": 8443}, "tls": {
            "mode": "MUTUAL", "clientCertificate": CERT_FILE, "privateKey": KEY_FILE, "sni": "grpc.secure.example"}}],
    }})
    lab_dr = res("DestinationRule", "lab", {"host": "lab.example", "trafficPolicy": {
        "tls": {"mode": "SIMPLE", "insecureSkipVerify": True}}})
    return _snap([secure, lab, secure_dr, lab_dr], BOOKINFO[:1]), FRONTEND
