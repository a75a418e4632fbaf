"""Gateways end to end: real control plane, gateway Envoys, sidecars and echo apps.

One mesh for the module: frontend and reviews (echo apps), a client sidecar, an ingress gateway
(labels istio=ingressgateway) and an egress gateway (istio=egressgateway, reachable from the mesh
on port 8090). A plain echo server on 127.0.0.1, outside the mesh, stands in for an external
service. The test creates its own CA, a server certificate for shop.example.com and
partner.example.com, and a client certificate for mutual TLS.
"""

from __future__ import annotations

import datetime
import json
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from novamesh.testing.mesh import LocalMesh, WorkloadProcess, free_port, poll

pytestmark = pytest.mark.e2e

CP_SETTINGS = {"lease_ttl": 4, "heartbeat_interval": 1}


# -- certificates ------------------------------------------------------------------------------
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, *,
           sans: list[str] = (), client: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:  # type: ignore[assignment]
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(_name(subject)).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
    )  # fmt: skip
    if issuer is None:  # the CA
        builder = builder.issuer_name(_name(subject)).add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        return builder.sign(key, hashes.SHA256()), key
    builder = builder.issuer_name(issuer[0].subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer[1], hashes.SHA256()), key


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    crt, pem = path.with_suffix(".crt"), path.with_suffix(".key")
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(crt), str(pem)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("certs")
    ca = _issue("novamesh test CA", None)
    ca_crt, _ = _write(d / "ca", *ca)
    server_crt, server_key = _write(d / "server", *_issue("shop.example.com", ca, sans=["shop.example.com", "partner.example.com"]))
    client_crt, client_key = _write(d / "client", *_issue("partner-client", ca, client=True))
    return {"ca": ca_crt, "crt": server_crt, "key": server_key, "client_crt": client_crt, "client_key": client_key}


# -- mesh --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An echo server outside the mesh on 127.0.0.1: the 'external service'."""
    port = free_port("127.0.0.1")
    with open(tmp_path_factory.mktemp("external") / "external.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "novamesh.testing.echo", "--host", "127.0.0.1", "--port", str(port), "--service", "external"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        poll(lambda: httpx.get(f"http://127.0.0.1:{port}/_echo/stats", timeout=1, trust_env=False).status_code == 200, 20, "external echo")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mesh"), settings=CP_SETTINGS)
    try:
        m.start_control_plane()
        m.echo("frontend")
        m.echo("reviews")
        m.client("client")
        m.gateway("istio-ingressgateway", "--label", "istio=ingressgateway")
        m.gateway("istio-egressgateway", "--label", "istio=egressgateway", "--port", "8090")
        yield m
    finally:
        m.close()


def _workload(mesh: LocalMesh, service: str) -> WorkloadProcess:
    return next(w for w in mesh.workloads if w.service == service)


@pytest.fixture(scope="module")
def ingress(mesh: LocalMesh, certs: dict[str, str]) -> WorkloadProcess:
    mesh.apply(f"""
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: ingress, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: [shop.example.com]
  - port: {{number: 8082, name: http2, protocol: HTTP2}}
    hosts: [shop.example.com]
  - port: {{number: 8081, name: http-redirect, protocol: HTTP}}
    hosts: [secure.example.com]
    tls: {{httpsRedirect: true}}
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [shop.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {certs['crt']}, privateKey: {certs['key']}}}
  - port: {{number: 8443, name: https-partner, protocol: HTTPS}}
    hosts: [partner.example.com]
    tls: {{mode: MUTUAL, serverCertificate: {certs['crt']}, privateKey: {certs['key']}, caCertificates: {certs['ca']}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: [shop.example.com, partner.example.com]
  gateways: [istio-system/ingress]
  http:
  - name: reviews
    match: [{{uri: {{prefix: /reviews}}}}]
    route: [{{destination: {{host: reviews}}}}]
  - name: front
    route: [{{destination: {{host: frontend}}}}]
""")
    gw = _workload(mesh, "istio-ingressgateway")
    poll(lambda: _plain(gw, "/", "shop.example.com").status_code == 200, 30, "ingress gateway routes")
    return gw


def _plain(gw: WorkloadProcess, path: str, host: str, port: int = 8080, **kw: object) -> httpx.Response:
    return httpx.get(f"http://{gw.address}:{port}{path}", headers={"host": host, **kw.pop("headers", {})},  # type: ignore[dict-item]
                     timeout=5, trust_env=False, **kw)  # type: ignore[arg-type]


def _tls(gw: WorkloadProcess, certs: dict[str, str], path: str, host: str, *, client_cert: bool = False) -> httpx.Response:
    """GET https://<gateway>:8443<path> with SNI and Host ``host``, trusting the test CA."""
    context = ssl.create_default_context(cafile=certs["ca"])
    if client_cert:
        context.load_cert_chain(certs["client_crt"], certs["client_key"])
    with httpx.Client(verify=context, trust_env=False, timeout=5) as client:
        return client.get(f"https://{gw.address}:8443{path}", headers={"host": host}, extensions={"sni_hostname": host})


# -- tests -------------------------------------------------------------------------------------
def test_https_with_cert_files_routes_by_host_and_path(ingress: WorkloadProcess, certs: dict[str, str]) -> None:
    reviews = _tls(ingress, certs, "/reviews/7", "shop.example.com")
    assert reviews.status_code == 200 and reviews.json()["service"] == "reviews"
    assert reviews.json()["path"] == "/reviews/7"
    front = _tls(ingress, certs, "/index.html", "shop.example.com")
    assert front.status_code == 200 and front.json()["service"] == "frontend"
    assert reviews.extensions["http_version"] in (b"HTTP/1.1", b"HTTP/2")


def test_plain_http_server_routes_and_unknown_host_is_404(ingress: WorkloadProcess) -> None:
    reviews = _plain(ingress, "/reviews", "shop.example.com", headers={"x-novamesh-source": "forged,prod,admin,v9"})
    assert reviews.json()["service"] == "reviews"
    # The mesh's identity headers stay inside: not forgeable from outside, not readable outside.
    assert "x-novamesh-source" not in reviews.json()["headers"]
    assert "x-novamesh-peer" not in reviews.headers
    assert _plain(ingress, "/", "shop.example.com:8080").json()["service"] == "frontend"  # port in Host is ignored
    missing = _plain(ingress, "/", "nobody.example.com")
    assert missing.status_code == 404 and "no VirtualService bound" in missing.text


def _curl(*args: str) -> tuple[str, dict[str, object]]:
    """(HTTP version, JSON body) of a curl request; curl speaks HTTP/2 (httpx here does not)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    proc = subprocess.run(["curl", "-sS", "--noproxy", "*", "-w", "\n%{http_version}", *args],
                          capture_output=True, text=True, timeout=10, check=True)
    body, _, version = proc.stdout.rpartition("\n")
    return version, json.loads(body)


def test_http2_over_tls_alpn_and_cleartext(ingress: WorkloadProcess, certs: dict[str, str]) -> None:
    version, body = _curl("--http2", "--cacert", certs["ca"], "--resolve", f"shop.example.com:8443:{ingress.address}",
                          "https://shop.example.com:8443/reviews")
    assert (version, body["service"]) == ("2", "reviews")
    version, body = _curl("--http2-prior-knowledge", "-H", "host: shop.example.com", f"http://{ingress.address}:8082/")
    assert (version, body["service"]) == ("2", "frontend")


def test_https_redirect_answers_301(ingress: WorkloadProcess) -> None:
    resp = _plain(ingress, "/cart?id=1", "secure.example.com", port=8081, follow_redirects=False)
    assert resp.status_code == 301
    assert resp.headers["location"] == "https://secure.example.com/cart?id=1"


def test_mutual_tls_requires_a_client_certificate(ingress: WorkloadProcess, certs: dict[str, str]) -> None:
    ok = _tls(ingress, certs, "/reviews", "partner.example.com", client_cert=True)
    assert ok.status_code == 200 and ok.json()["service"] == "reviews"
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        _tls(ingress, certs, "/reviews", "partner.example.com")


def test_header_with_underscore_is_rejected_at_the_edge(ingress: WorkloadProcess) -> None:
    before = ingress.counter("http.gateway_8080.downstream_rq_4xx")
    resp = _plain(ingress, "/", "shop.example.com", headers={"x_user": "admin"})
    assert resp.status_code == 400
    assert ingress.counter("http.gateway_8080.downstream_rq_4xx") == before + 1
    assert _plain(ingress, "/", "shop.example.com", headers={"x-user": "admin"}).status_code == 200


def test_egress_gateway_carries_mesh_traffic_to_external_host(mesh: LocalMesh, external: int) -> None:
    egress = _workload(mesh, "istio-egressgateway")
    client = _workload(mesh, "client")
    mesh.apply(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: external}}
spec:
  hosts: [external.example.com]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {external}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: egress, namespace: istio-system}}
spec:
  selector: {{istio: egressgateway}}
  servers:
  - port: {{number: 8090, name: http, protocol: HTTP}}
    hosts: [external.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: external-through-egress}}
spec:
  hosts: [external.example.com]
  gateways: [mesh, istio-system/egress]
  http:
  - match: [{{gateways: [mesh], port: 80}}]
    route: [{{destination: {{host: istio-egressgateway.istio-system.svc.cluster.local, port: {{number: 8090}}}}}}]
  - match: [{{gateways: [istio-system/egress], port: 8090}}]
    route: [{{destination: {{host: external.example.com, port: {{number: 80}}}}}}]
""")
    cluster = "cluster.outbound|80||external.example.com.upstream_rq_total"

    def through_gateway() -> httpx.Response | None:
        resp = httpx.get("http://external.example.com/orders", proxy=client.proxy_url, timeout=5, trust_env=False)
        return resp if resp.status_code == 200 and resp.json()["caller"]["address"] == egress.address else None

    resp = poll(through_gateway, 30, "external host reached through the egress gateway")
    body = resp.json()
    assert body["service"] == "external" and body["path"] == "/orders"
    # The external server saw the egress gateway's address, and the gateway counted the request.
    assert body["caller"]["address"] == egress.address != client.address
    before = egress.counter(cluster)
    assert before >= 1
    httpx.get("http://external.example.com/again", proxy=client.proxy_url, timeout=5, trust_env=False).raise_for_status()
    assert egress.counter(cluster) == before + 1
