"""Mesh mTLS through real Envoy: auto mTLS between sidecars, PeerAuthentication STRICT /
PERMISSIVE / DISABLE, the caller's SPIFFE identity at the backend, certificate rotation under
STRICT with zero failures, and separate trust domains that cannot call each other."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from novamesh.security import pki
from novamesh.security.csr import request_certificate
from novamesh.testing.load import Traffic
from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

CERT_TTL = 20
CLIENT_ID = "spiffe://cluster.local/ns/default/sa/frontend"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mtls"), settings={"cert_ttl": CERT_TTL, "cert_renew_jitter": 0.05})
    try:
        m.start_control_plane()
        m.echo("reviews", extra_args=["--service-account", "bookinfo-reviews"])
        m.echo("ratings", extra_args=["--service-account", "bookinfo-ratings"])
        m.client("client", extra_args=["--service-account", "frontend"])
        yield m
    finally:
        m.close()


def _peer_authn(mesh: LocalMesh, mode: str, app: str = "reviews") -> None:
    doc = f"""apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {app}-mtls, namespace: default}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
  mtls: {{mode: {mode}}}
"""
    mesh.apply(doc)  # raises on a refused apply
    mesh.wait_synced()


def _meshed(mesh: LocalMesh, host: str = "reviews") -> httpx.Response:
    """A request from the client app through its sidecar."""
    return httpx.get(f"http://{host}:9080/mtls", proxy=mesh.workload("client").proxy_url, timeout=5, trust_env=False)


def _plain(mesh: LocalMesh, service: str = "reviews") -> httpx.Response:
    """A plain-text request from outside the mesh, straight to the workload's inbound port."""
    return httpx.get(f"http://{mesh.workload(service).address}:9080/outside", timeout=5, trust_env=False)


def _plain_refused(mesh: LocalMesh) -> bool:
    try:
        _plain(mesh)
    except httpx.HTTPError:
        return True
    return False


def _principal(resp: httpx.Response) -> Any:
    assert resp.status_code == 200, resp.text
    return resp.json()["caller"]["principal"]


def _stat(wp: WorkloadProcess, regex: str) -> int:
    """The sum of the Envoy counters of ``wp`` matching ``regex``."""
    return sum(wp.counters(regex).values())


def _ssl_handshakes(wp: WorkloadProcess, port: int = 9080) -> int:
    """Completed TLS handshakes on ``wp``'s inbound listener of ``port``."""
    return _stat(wp, rf"^listener\..*_{port}\.ssl\.handshake$")


def test_strict_refuses_plaintext_and_shows_the_caller(mesh: LocalMesh) -> None:
    _peer_authn(mesh, "STRICT")
    poll(lambda: _plain_refused(mesh), 20, "plain text refused under STRICT")
    resp = poll(lambda: (r := _meshed(mesh)).status_code == 200 and r, 20, "meshed client served under STRICT")
    assert _principal(resp) == CLIENT_ID  # x-forwarded-client-cert set by the server sidecar
    assert resp.json()["service"] == "reviews"
    assert _ssl_handshakes(mesh.workload("reviews")) >= 1  # the mesh request arrived over TLS
    # A client cannot forge the identity header: the sidecar replaces it with the verified one.
    forged = httpx.get("http://reviews:9080/", proxy=mesh.workload("client").proxy_url, timeout=5, trust_env=False,
                       headers={"x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/default/sa/admin"})  # fmt: skip
    assert _principal(forged) == CLIENT_ID
    # Metrics take the identities from the connection: the server reports mutual_tls.
    def server_metrics() -> str:
        return httpx.get(f"http://{mesh.workload('reviews').address}:15020/stats/prometheus", trust_env=False, timeout=5).text

    line = poll(lambda: next((ln for ln in server_metrics().splitlines() if ln.startswith("istio_requests_total{")
                              and 'reporter="destination"' in ln and 'connection_security_policy="mutual_tls"' in ln), None),
                20, "a mutual_tls request in the server's metrics")  # fmt: skip
    assert f'source_principal="{CLIENT_ID}"' in line
    assert 'destination_principal="spiffe://cluster.local/ns/default/sa/bookinfo-reviews"' in line


def test_permissive_accepts_both(mesh: LocalMesh) -> None:
    _peer_authn(mesh, "PERMISSIVE")
    resp = poll(lambda: not _plain_refused(mesh) and _plain(mesh), 20, "plain text accepted under PERMISSIVE")
    assert _principal(resp) is None  # no certificate, no identity (and no header to trust)
    assert _principal(_meshed(mesh)) == CLIENT_ID  # auto mTLS: the sidecar still uses mTLS


def test_disable_turns_mtls_off_and_the_client_follows(mesh: LocalMesh) -> None:
    _peer_authn(mesh, "DISABLE")
    poll(lambda: _principal(_meshed(mesh)) is None, 20, "the client sidecar sends plain text to a DISABLE port")
    assert _principal(_plain(mesh)) is None
    # Restore STRICT: mesh clients are back on mTLS, outsiders refused again.
    _peer_authn(mesh, "STRICT")
    poll(lambda: _plain_refused(mesh), 20, "plain text refused again")
    poll(lambda: _principal(_meshed(mesh)) == CLIENT_ID, 20, "mTLS again")


def _serial(wp: WorkloadProcess) -> str:
    certs = httpx.get(f"{wp.admin_url}/certs", timeout=5, trust_env=False).json()
    return str([c.get("serial_number") for cert in certs.get("certificates", []) for c in cert.get("cert_chain", [])])


def test_rotation_under_strict_mtls_has_no_failures(mesh: LocalMesh) -> None:
    _peer_authn(mesh, "STRICT", "reviews")
    _peer_authn(mesh, "STRICT", "ratings")
    # ratings: one request per upstream connection, so every request is a new mTLS handshake.
    mesh.apply("""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 1}}}
""")
    mesh.wait_synced()
    poll(lambda: _plain_refused(mesh), 20, "STRICT in force")
    reviews, client = mesh.workload("reviews"), mesh.workload("client")
    proxy = client.proxy_url
    with Traffic("http://reviews:9080/", proxy=proxy, rate=15) as kept, Traffic("http://ratings:9080/", proxy=proxy, rate=10) as fresh:
        kept.wait_for(lambda t: t.count >= 15, timeout=20)
        fresh.wait_for(lambda t: t.count >= 10, timeout=20)
        seen = {_serial(reviews)}

        def rotated_twice() -> bool:
            seen.add(_serial(reviews))
            return len(seen) >= 3

        poll(rotated_twice, CERT_TTL * 3, "two certificate rotations", interval=0.5)
        mark_k, mark_f = kept.count, fresh.count
        kept.wait_for(lambda t: t.count >= mark_k + 15, timeout=20)
        fresh.wait_for(lambda t: t.count >= mark_f + 10, timeout=20)
    assert kept.failures() == []
    assert fresh.failures() == []
    assert _ssl_handshakes(mesh.workload("ratings")) > 20  # new connections really handshook each time


@pytest.fixture(scope="module")
def other_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mtls-prod"), settings={"trust_domain": "prod.example"})
    try:
        m.start_control_plane()
        m.echo("payments", extra_args=["--service-account", "payments"])
        m.client("client", extra_args=["--service-account", "frontend"])
        yield m
    finally:
        m.close()


def test_separate_trust_domains_cannot_call_strict_workloads(mesh: LocalMesh, other_mesh: LocalMesh) -> None:
    _peer_authn(other_mesh, "STRICT", "payments")
    payments = other_mesh.workload("payments")
    # Mesh B's own client is served, with its identity in B's trust domain.
    resp = poll(lambda: (r := _meshed(other_mesh, "payments")).status_code == 200 and r, 20, "B's client served")
    assert _principal(resp) == "spiffe://prod.example/ns/default/sa/frontend"
    # Mesh A points its client at B's workload as a meshed endpoint (tlsMode istio).
    mesh.apply(f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: payments-prod, namespace: default}}
spec:
  hosts: [payments.prod.example]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
  - address: {payments.address}
    ports: {{http: 9080}}
    labels: {{security.istio.io/tlsMode: istio}}
    serviceAccount: payments
""")
    mesh.wait_synced()
    before = _ssl_handshakes(payments)

    def call_b() -> httpx.Response:
        return httpx.get("http://payments.prod.example:9080/", proxy=mesh.workload("client").proxy_url, timeout=5, trust_env=False)

    # 404 until A's sidecar knows the host; then 503: the TLS handshake fails (different roots).
    poll(lambda: call_b().status_code == 503, 20, "A's client refused by B's STRICT workload")
    for _ in range(3):
        r = call_b()
        assert r.status_code == 503, r.text
    # It is the TLS handshake that fails: A's sidecar cannot verify B's certificate (B's root is
    # not in A's bundle), and no handshake with A's client ever completes at B's STRICT port.
    assert _stat(mesh.workload("client"), r"^cluster\.outbound\|9080\|\|payments\.prod\.example\.ssl\.fail_verify_error$") >= 3
    assert _ssl_handshakes(payments) == before
    assert _principal(_meshed(other_mesh, "payments")) == "spiffe://prod.example/ns/default/sa/frontend"


def _mint(m: LocalMesh, trust_domain: str, tmp: Path, sa: str) -> tuple[Path, Path]:
    """A certificate of mesh ``m`` for ``sa`` (join token + CSR, as an agent does): (chain, key) files."""
    token = m.cli("token", "create", "--namespace", "default", "--service-account", sa, "--ttl", "5m")
    assert token.returncode == 0, token.stderr
    key = pki.generate_key()
    csr = pki.make_csr(key, pki.SpiffeId(trust_domain, "default", sa))
    roots = "".join(m.api.get("/api/v1/ca/bundle")["roots"]).encode()
    chain, _ = asyncio.run(request_certificate(f"127.0.0.1:{m.env['NOVAMESH_CSR_PORT']}", roots, csr, token=token.stdout.strip()))
    (tmp / f"{sa}.pem").write_bytes(chain)
    (tmp / f"{sa}.key").write_bytes(pki.key_pem(key))
    return tmp / f"{sa}.pem", tmp / f"{sa}.key"


def _mtls_get(address: str, cert: tuple[Path, Path], trust: bytes) -> bytes:
    """GET / over mesh mTLS presenting ``cert``, trusting ``trust``; the raw response."""
    ctx = ssl.create_default_context(cadata=trust.decode())
    ctx.check_hostname = False  # SPIFFE ids are URI SANs; the server's identity is not the point here
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    ctx.set_alpn_protocols(["istio"])
    with socket.create_connection((address, 9080), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: payments\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := tls.recv(65536):
            out += chunk
        return out


def test_strict_server_refuses_a_certificate_of_another_trust_domain(
    mesh: LocalMesh, other_mesh: LocalMesh, tmp_path: Path
) -> None:
    _peer_authn(other_mesh, "STRICT", "payments")
    payments = other_mesh.workload("payments")
    b_roots = "".join(other_mesh.api.get("/api/v1/ca/bundle")["roots"]).encode()
    # B's own certificate: served, and the backend sees B's identity.
    own = _mtls_get(payments.address, _mint(other_mesh, "prod.example", tmp_path, "auditor"), b_roots)
    assert own.startswith(b"HTTP/1.1 200"), own[:200]
    assert b"spiffe://prod.example/ns/default/sa/auditor" in own
    # A certificate of mesh A, even from a client that trusts B's root: the server refuses it.
    foreign = _mint(mesh, "cluster.local", tmp_path, "frontend")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        got = _mtls_get(payments.address, foreign, b_roots)
        if not got:  # the server's alert can also surface as a closed connection
            raise ConnectionResetError("closed without a response")
