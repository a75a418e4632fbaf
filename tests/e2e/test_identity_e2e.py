"""Workload identity through real Envoy: certificates via SDS, rotation under traffic, join tokens."""

from __future__ import annotations

import asyncio
import base64
import calendar
import http.client
import json
import os
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography import x509

from novamesh.clock import SYSTEM_CLOCK
from novamesh.security import pki
from novamesh.security.ca import StoreCA
from novamesh.security.csr import request_certificate
from novamesh.store.sqlite import SqliteStore
from novamesh.testing.load import Traffic
from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

CERT_TTL = 20
TOKEN_TTL = 900  # not the CLI's old hard-coded 1h: `token create` without --ttl must get this
OLD_ROOT_HOLDER = pki.SpiffeId("cluster.local", "default", "old-root-holder")


# ratings: one request per upstream connection, so every request through the client sidecar
# opens a new mTLS connection (a new handshake with whatever certificate is current).
FRESH_CONNECTIONS = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 1}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("identity"), settings={"cert_ttl": CERT_TTL, "cert_renew_jitter": 0.05, "token_ttl": TOKEN_TTL})
    try:
        m.start_control_plane()
        m.echo("reviews", extra_args=["--service-account", "bookinfo-reviews"])
        m.echo("ratings")
        m.client("client")
        m.apply(FRESH_CONNECTIONS, "fresh.yaml")
        yield m
    finally:
        m.close()


def _secrets(wp: WorkloadProcess) -> dict[str, dict[str, Any]]:
    """The dynamic active secrets of ``wp``'s Envoy, by name (from /config_dump)."""
    dump = httpx.get(f"{wp.admin_url}/config_dump", params={"resource": "dynamic_active_secrets"}, timeout=5, trust_env=False).json()
    out = {}
    for item in dump.get("configs", []):
        out[item["name"]] = item
    return out


def _leaf_and_roots(wp: WorkloadProcess) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    secrets = _secrets(wp)
    chain_b64 = secrets["default"]["secret"]["tls_certificate"]["certificate_chain"]["inline_bytes"]
    roots_b64 = secrets["ROOTCA"]["secret"]["validation_context"]["trusted_ca"]["inline_bytes"]
    return pki.load_certs(base64.b64decode(chain_b64)), pki.load_certs(base64.b64decode(roots_b64))


def _ca_roots(mesh: LocalMesh) -> list[x509.Certificate]:
    return pki.load_certs("".join(mesh.api.get("/api/v1/ca/bundle")["roots"]).encode())


def _ca_roots_pem(mesh: LocalMesh) -> bytes:
    return pki.cert_pem(_ca_roots(mesh))


@dataclass(frozen=True)
class _Credential:
    """A certificate chain (PEM, leaf first) and its private key, held outside the mesh."""

    chain_pem: bytes
    key: pki.PrivateKey

    @property
    def leaf(self) -> x509.Certificate:
        return pki.load_certs(self.chain_pem)[0]


def _mint_from_signing_root(mesh: LocalMesh, identity: pki.SpiffeId, ttl: float) -> _Credential:
    """A certificate for ``identity`` from the root that signs right now, valid ``ttl`` seconds,
    issued by a second :class:`StoreCA` on the mesh's store (what another control-plane replica
    does, and what anyone who holds the root's key can do)."""
    store = SqliteStore(Path(mesh.env["NOVAMESH_DATA_DIR"]) / "store.db")
    try:
        key = pki.generate_key()
        issued = StoreCA(store, SYSTEM_CLOCK).issue(key.public_key(), [identity.uri], ttl)
    finally:
        store.close()
    return _Credential(issued.chain_pem, key)


def _inbound_ssl_stat(wp: WorkloadProcess, port: int, name: str) -> int:
    """Envoy counter ``listener.<address>_<port>.ssl.<name>`` of ``wp``'s inbound listener."""
    regex = rf"^listener\.{re.escape(wp.address)}_{port}\.ssl\.{name}$"
    found = wp.counters(regex)
    assert len(found) == 1, f"no single counter matches {regex}: {found}"
    return next(iter(found.values()))


def _mesh_mtls_get(wp: WorkloadProcess, port: int, server_id: pki.SpiffeId, cred: _Credential, roots_pem: bytes,
                   workdir: Path) -> dict[str, Any]:  # fmt: skip
    """GET /old-root on ``wp``'s inbound ``port`` as a mesh client would: mTLS presenting ``cred``,
    ALPN ``istio``, the server verified against ``roots_pem`` and ``server_id``. Returns the echo
    app's JSON answer; raises OSError / HTTPException when the sidecar refuses the connection."""
    (workdir / "held.pem").write_bytes(cred.chain_pem)
    (workdir / "held.key").write_bytes(pki.key_pem(cred.key))
    ctx = ssl.create_default_context(cadata=roots_pem.decode())
    ctx.check_hostname = False  # the server's identity is a SPIFFE URI SAN, checked below
    ctx.load_cert_chain(str(workdir / "held.pem"), str(workdir / "held.key"))
    ctx.set_alpn_protocols(["istio"])
    conn = http.client.HTTPSConnection(wp.address, port, timeout=5, context=ctx)
    try:
        conn.connect()
        assert conn.sock is not None
        server = x509.load_der_x509_certificate(conn.sock.getpeercert(binary_form=True) or b"")
        assert pki.spiffe_of(server) == server_id
        conn.request("GET", "/old-root", headers={"Host": f"{wp.service}:{port}"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, body[:300]
    answer: dict[str, Any] = json.loads(body)
    return answer


def _renew(mesh: LocalMesh, cred: _Credential) -> _Credential:
    """Renew ``cred`` at the CSR service as an agent does (current chain + proof of its key)."""
    key = pki.generate_key()
    csr = pki.make_csr(key, pki.spiffe_of(cred.leaf))
    target = f"127.0.0.1:{mesh.env['NOVAMESH_CSR_PORT']}"
    chain, _ = asyncio.run(request_certificate(target, _ca_roots_pem(mesh), csr, current=(cred.chain_pem, cred.key)))
    return _Credential(chain, key)


def _renewal_refusal(mesh: LocalMesh, cred: _Credential) -> grpc.StatusCode | None:
    """How the CSR service refuses a renewal with ``cred`` (a gRPC status); None when it renews,
    or when it is not reachable yet (its own certificate follows a new bundle within a second)."""
    try:
        _renew(mesh, cred)
    except grpc.aio.AioRpcError as exc:
        return None if exc.code() == grpc.StatusCode.UNAVAILABLE else exc.code()
    return None


def test_workload_gets_its_spiffe_certificate_over_sds(mesh: LocalMesh) -> None:
    reviews = mesh.workload("reviews")
    chain, roots = poll(lambda: _leaf_and_roots(reviews) if "default" in _secrets(reviews) else None, 20, "secrets in envoy")
    assert pki.spiffe_of(chain[0]).uri == "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    assert [pki.fingerprint(r) for r in roots] == [pki.fingerprint(r) for r in _ca_roots(mesh)]
    pki.verify_chain(chain, roots, time.time())
    # The private key is redacted in the dump; Envoy's /certs shows the same certificate.
    secret = _secrets(reviews)["default"]["secret"]["tls_certificate"]
    assert base64.b64decode(secret["private_key"]["inline_bytes"]) == b"[redacted]"
    certs = httpx.get(f"{reviews.admin_url}/certs", timeout=5, trust_env=False).json()
    chains = [cc for c in certs.get("certificates", []) for cc in c.get("cert_chain", [])]
    sans = [san.get("uri") for cc in chains for san in cc.get("subject_alt_names", [])]
    assert "spiffe://cluster.local/ns/default/sa/bookinfo-reviews" in sans


def test_certificate_rotates_under_traffic_without_failures(mesh: LocalMesh) -> None:
    """Certificates rotate twice under continuous load on kept-alive sidecar-to-sidecar
    connections (reviews) and on a new connection per request (ratings): no request fails."""
    reviews, ratings, client = mesh.workload("reviews"), mesh.workload("ratings"), mesh.workload("client")
    first = _leaf_and_roots(reviews)[0][0].serial_number
    handshakes = _inbound_ssl_stat(ratings, 9080, "handshake")
    with Traffic("http://reviews:9080/", proxy=client.proxy_url, rate=20) as traffic, \
            Traffic("http://ratings:9080/", proxy=client.proxy_url, rate=10) as fresh:  # fmt: skip
        traffic.wait_for(lambda t: t.count >= 20, timeout=20)
        fresh.wait_for(lambda t: t.count >= 10, timeout=20)
        seen = {first}

        def rotated_twice() -> bool:
            seen.add(_leaf_and_roots(reviews)[0][0].serial_number)
            return len(seen) >= 3

        poll(rotated_twice, CERT_TTL * 3, "two certificate rotations", interval=0.5)
        mark, fresh_mark = traffic.count, fresh.count
        traffic.wait_for(lambda t: t.count >= mark + 20, timeout=20)
        fresh.wait_for(lambda t: t.count >= fresh_mark + 10, timeout=20)
    assert traffic.failures() == [] and fresh.failures() == []
    # ratings saw a TLS handshake per request: the new connections used the rotated certificates.
    assert _inbound_ssl_stat(ratings, 9080, "handshake") - handshakes >= fresh.count
    log = reviews.log()
    assert "envoy rejected secrets" not in log and "renewal" not in log  # every renewal succeeded, Envoy took it
    assert log.count("envoy started") == 1  # SDS pushes, no Envoy restart


def test_root_rotation_a_to_ab_to_b_under_traffic(mesh: LocalMesh, tmp_path: Path) -> None:
    """A -> A+B -> B under continuous load: no request fails, and once the rotation is over a
    credential of A, accepted until --finish, is refused by the sidecars and the CSR service."""
    workloads = [mesh.workload("reviews"), mesh.workload("client")]
    reviews, reviews_id = workloads[0], pki.SpiffeId("cluster.local", "default", "bookinfo-reviews")
    old = pki.fingerprint(_ca_roots(mesh)[0])

    def everyone(check: Any) -> bool:
        return all(check(*_leaf_and_roots(w)) for w in workloads)

    with Traffic("http://reviews:9080/", proxy=workloads[1].proxy_url, rate=20) as traffic:
        traffic.wait_for(lambda t: t.count >= 10, timeout=20)
        assert mesh.cli("ca", "rotate-root", "--start").returncode == 0
        new = next(pki.fingerprint(r) for r in _ca_roots(mesh) if pki.fingerprint(r) != old)
        poll(lambda: everyone(lambda chain, roots: {pki.fingerprint(r) for r in roots} == {old, new}), CERT_TTL * 2,
             "every workload trusts A and B", interval=0.5)  # fmt: skip
        # A credential of A, minted while A still signs. It lives an hour: the CSR service issues
        # at most CERT_TTL, and a certificate that had expired by the end would be refused for
        # that alone. An hour-long one is what a leaked key of A yields, the case --finish is for.
        held = _mint_from_signing_root(mesh, OLD_ROOT_HOLDER, ttl=3600)
        assert pki.fingerprint(next(r for r in _ca_roots(mesh) if r.subject == held.leaf.issuer)) == old
        assert mesh.cli("ca", "rotate-root", "--activate").returncode == 0
        new_root = next(r for r in _ca_roots(mesh) if pki.fingerprint(r) == new)
        poll(lambda: everyone(lambda chain, roots: chain[0].issuer == new_root.subject), CERT_TTL * 2,
             "every workload holds a certificate of B", interval=0.5)  # fmt: skip
        # The last moment A is trusted: the sidecar serves the holder of A (and the app sees who
        # called), the CSR service renews it (now under B).
        verify_errors = _inbound_ssl_stat(reviews, 9080, "fail_verify_error")
        answer = _mesh_mtls_get(reviews, 9080, reviews_id, held, _ca_roots_pem(mesh), tmp_path)
        assert answer["caller"]["principal"] == OLD_ROOT_HOLDER.uri
        assert pki.spiffe_of(_renew(mesh, held).leaf) == OLD_ROOT_HOLDER
        finished = mesh.cli("ca", "rotate-root", "--finish")
        assert finished.returncode == 0 and "stable" in finished.stdout
        # The CSR service drops A at once: the holder of A can no longer renew.
        assert poll(lambda: _renewal_refusal(mesh, held), 10, "renewal with A refused") == grpc.StatusCode.UNAUTHENTICATED
        assert "current certificate rejected: the chain does not lead to a trusted root" in mesh.cp_log()
        poll(lambda: everyone(lambda chain, roots: [pki.fingerprint(r) for r in roots] == [new]), CERT_TTL * 2,
             "every workload trusts only B", interval=0.5)  # fmt: skip
        # Each sidecar drops A with the bundle its next renewal brings: the same credential, still
        # valid for most of an hour, now fails the handshake, counted as a CA verification failure.
        assert held.leaf.not_valid_after_utc.timestamp() > time.time() + 600
        with pytest.raises((OSError, http.client.HTTPException)):
            _mesh_mtls_get(reviews, 9080, reviews_id, held, _ca_roots_pem(mesh), tmp_path)
        poll(lambda: _inbound_ssl_stat(reviews, 9080, "fail_verify_error") == verify_errors + 1, 10,
             "one CA verification failure on reviews' inbound listener")  # fmt: skip
        mark = traffic.count
        traffic.wait_for(lambda t: t.count >= mark + 10, timeout=20)
    assert traffic.failures() == []
    assert all("renewal" not in w.log() for w in workloads)  # no renewal failed on the way


def test_token_cli_and_bad_credentials_are_refused(mesh: LocalMesh) -> None:
    created = mesh.cli("token", "create", "--namespace", "payments", "--service-account", "api", "--ttl", "5m")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("nmt_") and "spiffe://cluster.local/ns/payments/sa/api" in created.stderr
    bad = mesh.cli("token", "create", "--namespace", "Not_Valid", "--service-account", "api", "--ttl", "5m")
    assert bad.returncode == 1 and "namespace" in bad.stderr
    # A workload joining with a garbage token fails clearly; the control plane keeps serving.
    wp = mesh.run("intruder", env={"NOVAMESH_JOIN_TOKEN": "nmt_" + "A" * 43}, wait_ready=False)
    code = wp.proc.wait(timeout=60)
    assert code != 0 and "authentication failed" in wp.log()
    mesh.workloads.remove(wp)
    assert "CSR from" in mesh.cp_log() and "unknown or used-up token" in mesh.cp_log()
    assert httpx.get(f"{mesh.url}/healthz", timeout=5).status_code == 200
    status = mesh.cli("ca", "status")
    assert status.returncode == 0 and "self-signed" in status.stdout
    assert os.environ.get("NOVAMESH_JOIN_TOKEN") is None


def test_token_cli_uses_and_default_ttl(mesh: LocalMesh) -> None:
    """`token create --uses 2` (no --ttl) through the real CLI: two CSRs join with the token, the
    third is refused; the expiry is the control plane's token_ttl setting."""
    assert mesh.cli("token", "create", "--namespace", "payments").returncode == 2  # --service-account is required
    minted_at = time.time()
    created = mesh.cli("token", "create", "--namespace", "payments", "--service-account", "batch", "--uses", "2")
    assert created.returncode == 0, created.stderr
    assert "spiffe://cluster.local/ns/payments/sa/batch, 2 use(s)" in created.stderr
    expires = re.search(r"expires (\S+ \S+) UTC", created.stderr)
    assert expires is not None, created.stderr
    expires_at = calendar.timegm(time.strptime(expires.group(1), "%Y-%m-%d %H:%M:%S"))
    assert abs(expires_at - (minted_at + TOKEN_TTL)) < 30, (expires_at - minted_at, created.stderr)
    token = created.stdout.strip()
    target = f"127.0.0.1:{mesh.env['NOVAMESH_CSR_PORT']}"

    def join() -> bytes:
        csr = pki.make_csr(pki.generate_key(), pki.SpiffeId("cluster.local", "payments", "batch"))
        chain, _ = asyncio.run(request_certificate(target, _ca_roots_pem(mesh), csr, token=token))
        return chain

    for _ in range(2):
        leaf = pki.load_certs(join())[0]
        assert str(pki.spiffe_of(leaf)) == "spiffe://cluster.local/ns/payments/sa/batch"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        join()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert httpx.get(f"{mesh.url}/healthz", timeout=5).status_code == 200
