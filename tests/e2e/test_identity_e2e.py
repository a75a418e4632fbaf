"""Workload identity through real Envoy: certificates via SDS, rotation under traffic, join tokens."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography import x509

from novamesh.security import pki
from novamesh.testing.load import Traffic
from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

CERT_TTL = 20


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("identity"), settings={"cert_ttl": CERT_TTL, "cert_renew_jitter": 0.05})
    try:
        m.start_control_plane()
        m.echo("reviews", extra_args=["--service-account", "bookinfo-reviews"])
        m.client("client")
        yield m
    finally:
        m.close()


def _by(mesh: LocalMesh, service: str) -> WorkloadProcess:
    return next(w for w in mesh.workloads if w.service == service)


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


def test_workload_gets_its_spiffe_certificate_over_sds(mesh: LocalMesh) -> None:
    reviews = _by(mesh, "reviews")
    chain, roots = poll(lambda: _leaf_and_roots(reviews) if "default" in _secrets(reviews) else None, 20, "secrets in envoy")
    assert pki.spiffe_of(chain[0]).uri == "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    assert [pki.fingerprint(r) for r in roots] == [pki.fingerprint(r) for r in _ca_roots(mesh)]
    pki.verify_chain(chain, roots, time.time())
    # The private key is redacted in the dump; Envoy's /certs shows the same certificate.
    secret = _secrets(reviews)["default"]["secret"]["tls_certificate"]
    assert base64.b64decode(secret["private_key"]["inline_bytes"]) == b"[redacted]"
    certs = httpx.get(f"{reviews.admin_url}/certs", timeout=5, trust_env=False).json()
    sans = [san.get("uri") for c in certs.get("certificates", []) for cc in c.get("cert_chain", []) for san in cc.get("subject_alt_names", [])]
    assert "spiffe://cluster.local/ns/default/sa/bookinfo-reviews" in sans


def test_certificate_rotates_under_traffic_without_failures(mesh: LocalMesh) -> None:
    reviews, client = _by(mesh, "reviews"), _by(mesh, "client")
    first = _leaf_and_roots(reviews)[0][0].serial_number
    with Traffic("http://reviews:9080/", proxy=client.proxy_url, rate=20) as traffic:
        traffic.wait_for(lambda t: t.count >= 20, timeout=20)
        seen = {first}

        def rotated_twice() -> bool:
            seen.add(_leaf_and_roots(reviews)[0][0].serial_number)
            return len(seen) >= 3

        poll(rotated_twice, CERT_TTL * 3, "two certificate rotations", interval=0.5)
        mark = traffic.count
        traffic.wait_for(lambda t: t.count >= mark + 20, timeout=20)
    assert traffic.failures() == []
    log = reviews.log()
    assert "envoy rejected secrets" not in log and "renewal" not in log  # every renewal succeeded, Envoy took it
    assert log.count("envoy started") == 1  # SDS pushes, no Envoy restart


def test_root_rotation_a_to_ab_to_b_under_traffic(mesh: LocalMesh) -> None:
    workloads = [_by(mesh, "reviews"), _by(mesh, "client")]
    old = pki.fingerprint(_ca_roots(mesh)[0])

    def everyone(check: Any) -> bool:
        return all(check(*_leaf_and_roots(w)) for w in workloads)

    with Traffic("http://reviews:9080/", proxy=workloads[1].proxy_url, rate=20) as traffic:
        traffic.wait_for(lambda t: t.count >= 10, timeout=20)
        assert mesh.cli("ca", "rotate-root", "--start").returncode == 0
        new = next(pki.fingerprint(r) for r in _ca_roots(mesh) if pki.fingerprint(r) != old)
        poll(lambda: everyone(lambda chain, roots: {pki.fingerprint(r) for r in roots} == {old, new}), CERT_TTL * 2,
             "every workload trusts A and B", interval=0.5)  # fmt: skip
        assert mesh.cli("ca", "rotate-root", "--activate").returncode == 0
        new_root = next(r for r in _ca_roots(mesh) if pki.fingerprint(r) == new)
        poll(lambda: everyone(lambda chain, roots: chain[0].issuer == new_root.subject), CERT_TTL * 2,
             "every workload holds a certificate of B", interval=0.5)  # fmt: skip
        finished = mesh.cli("ca", "rotate-root", "--finish")
        assert finished.returncode == 0 and "stable" in finished.stdout
        poll(lambda: everyone(lambda chain, roots: [pki.fingerprint(r) for r in roots] == [new]), CERT_TTL * 2,
             "every workload trusts only B", interval=0.5)  # fmt: skip
        mark = traffic.count
        traffic.wait_for(lambda t: t.count >= mark + 10, timeout=20)
    assert traffic.failures() == []
    assert all("renewal" not in w.log() for w in workloads)  # no renewal failed on the way


def test_token_cli_and_bad_credentials_are_refused(mesh: LocalMesh) -> None:
    created = mesh.cli("token", "create", "--namespace", "payments", "--service-account", "api", "--ttl", "5m")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("nmt_") and "spiffe://cluster.local/ns/payments/sa/api" in created.stderr
    bad = mesh.cli("token", "create", "--namespace", "Not_Valid", "--ttl", "5m")
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


@pytest.fixture(scope="module")
def mtls_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    from novamesh.testing.mesh import free_port

    m = LocalMesh(tmp_path_factory.mktemp("xds-mtls"), settings={"xds_tls_port": free_port(), "xds_plaintext": "false"})
    try:
        m.start_control_plane()
        m.echo("ratings")
        m.client("client")
        yield m
    finally:
        m.close()


def test_xds_over_mtls_with_plaintext_off(mtls_mesh: LocalMesh) -> None:
    import socket

    from novamesh.testing.load import run_load

    client = _by(mtls_mesh, "client")
    res = run_load("http://ratings:9080/", count=10, proxy=client.proxy_url)
    assert res.failed == 0 and res.ok == 10
    stats = httpx.get(f"{client.admin_url}/stats", params={"filter": r"^cluster\.xds-grpc\.ssl\.handshake$"}, timeout=5, trust_env=False).text
    assert int(stats.split(":")[1]) >= 1  # the ADS stream runs over TLS
    with pytest.raises(OSError):  # and plaintext xDS is not served at all
        socket.create_connection(("127.0.0.1", mtls_mesh.xds_port), timeout=2).close()
    # A TLS client without a workload certificate is refused by the mTLS xDS port.
    import grpc

    roots = "".join(mtls_mesh.api.get("/api/v1/ca/bundle")["roots"]).encode()
    port = int(mtls_mesh.env["NOVAMESH_XDS_TLS_PORT"])

    async def anonymous() -> grpc.StatusCode:
        creds = grpc.ssl_channel_credentials(root_certificates=roots)
        opts = [("grpc.ssl_target_name_override", "novamesh-control-plane")]
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=opts) as ch:
            try:
                await ch.unary_unary("/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources")(b"", timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    import asyncio

    assert asyncio.run(anonymous()) == grpc.StatusCode.UNAVAILABLE
