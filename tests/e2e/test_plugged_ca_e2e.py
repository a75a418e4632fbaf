"""A plugged-in intermediate CA from files, through real Envoy (issue 4, "Tests" list).

The control plane signs with an intermediate whose root never reaches it (only its certificate,
in root-cert.pem): the sidecars' certificates chain to that root, they talk mTLS to each other,
and the xDS connection itself is authenticated with those certificates. Replacing the files with
another intermediate (of another root) under the running control plane takes effect without a
restart: the trust bundle and the certificates issued afterwards belong to the new root.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from cryptography import x509

from novamesh.security import pki
from novamesh.security.csr import request_certificate
from novamesh.testing.ca_files import write_intermediate_ca
from novamesh.testing.load import run_load
from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def plugged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalMesh, x509.Certificate, x509.Certificate]]:
    root_dir = tmp_path_factory.mktemp("plugged-ca")
    root, inter = write_intermediate_ca(root_dir / "ca", time.time(), root_in_chain=False, root_name="acme offline root")
    m = LocalMesh(root_dir / "mesh", settings={"ca_dir": str(root_dir / "ca"), "ca_reload_interval": 1})
    try:
        m.start_control_plane()
        m.echo("reviews", extra_args=["--service-account", "bookinfo-reviews"])
        m.client("client")
        yield m, root, inter
    finally:
        m.close()


def _chain_in_envoy(wp: WorkloadProcess) -> list[x509.Certificate] | None:
    dump = httpx.get(f"{wp.admin_url}/config_dump", params={"resource": "dynamic_active_secrets"}, timeout=5, trust_env=False).json()
    for item in dump.get("configs", []):
        if item["name"] == "default":
            pem = base64.b64decode(item["secret"]["tls_certificate"]["certificate_chain"]["inline_bytes"])
            return pki.load_certs(pem)
    return None


def test_certificates_chain_to_the_given_root_and_mtls_works(plugged: tuple[LocalMesh, x509.Certificate, x509.Certificate]) -> None:
    mesh, root, inter = plugged
    reviews, client = mesh.workload("reviews"), mesh.workload("client")
    chain = poll(lambda: _chain_in_envoy(reviews), 20, "reviews' certificate in Envoy")
    assert chain[1] == inter  # leaf + the plugged-in intermediate
    assert chain[0].issuer == inter.subject
    pki.verify_chain(chain, [root], time.time())  # chains to the offline root ...
    assert pki.spiffe_of(chain[0]).uri == "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
    bundle = pki.load_certs("".join(mesh.api.get("/api/v1/ca/bundle")["roots"]).encode())
    assert bundle == [root]  # ... which is the whole trust bundle
    status = mesh.cli("ca", "status")
    assert status.returncode == 0 and "plugged-in" in status.stdout
    # Sidecar to sidecar over mTLS with these certificates; the app sees the caller's identity.
    res = run_load("http://reviews:9080/", count=10, proxy=client.proxy_url)
    assert res.failed == 0 and res.ok == 10
    stats = httpx.get(f"{reviews.admin_url}/stats", params={"filter": r"ssl\.handshake$"}, timeout=5, trust_env=False).text
    assert any(int(line.rsplit(":", 1)[1]) > 0 for line in stats.splitlines() if "listener." in line and ":" in line)
    # The ADS connection runs over mTLS too, authenticated by the same chain.
    xds = httpx.get(f"{client.admin_url}/stats", params={"filter": r"^cluster\.xds-grpc\.ssl\.handshake$"}, timeout=5, trust_env=False).text
    assert int(xds.split(":")[1]) >= 1


def _bundle(mesh: LocalMesh) -> list[x509.Certificate]:
    return pki.load_certs("".join(mesh.api.get("/api/v1/ca/bundle")["roots"]).encode())


def test_replaced_files_are_reloaded_by_the_running_control_plane(
    plugged: tuple[LocalMesh, x509.Certificate, x509.Certificate], tmp_path_factory: pytest.TempPathFactory
) -> None:
    mesh, old_root, old_inter = plugged
    ca_dir = mesh.env["NOVAMESH_CA_DIR"]
    # The operator drops in an intermediate of another root, each file replaced atomically.
    staging = tmp_path_factory.mktemp("new-ca")
    new_root, new_inter = write_intermediate_ca(staging, time.time(), root_in_chain=True, root_name="acme new root")
    assert new_root != old_root
    for name in ("ca-key.pem", "ca-cert.pem", "cert-chain.pem", "root-cert.pem"):
        os.replace(staging / name, os.path.join(ca_dir, name))
    poll(lambda: _bundle(mesh) == [new_root], 20, "the REST trust bundle holds only the new root")

    # A certificate the CSR service issues from now on chains to the new root (its own serving
    # certificate may still be the old intermediate's for a moment: the client trusts both roots).
    token = mesh.cli("token", "create", "--namespace", "default", "--service-account", "after-swap", "--ttl", "5m", "--uses", "100")
    assert token.returncode == 0, token.stderr
    target = f"127.0.0.1:{mesh.env['NOVAMESH_CSR_PORT']}"
    trust = pki.cert_pem([old_root, new_root])

    def issued_by_new_root() -> list[x509.Certificate] | None:
        csr = pki.make_csr(pki.generate_key(), pki.SpiffeId("cluster.local", "default", "after-swap"))
        chain_pem, bundle_pem = asyncio.run(request_certificate(target, trust, csr, token=token.stdout.strip()))
        chain = pki.load_certs(chain_pem)
        return chain if chain[0].issuer == new_inter.subject else None  # the 1 s file check has not run yet

    chain = poll(issued_by_new_root, 20, "a certificate signed by the new intermediate", interval=0.5)
    pki.verify_chain(chain, [new_root], time.time())
    with pytest.raises(pki.BadInput):
        pki.verify_chain(chain, [old_root], time.time())
    status = mesh.api.get("/api/v1/ca")
    assert status["signer"]["subject"] == new_inter.subject.rfc4514_string()
    assert [r["fingerprint"] for r in status["roots"]] == [pki.fingerprint(new_root)]
