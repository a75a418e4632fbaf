"""A plugged-in intermediate CA from files, through real Envoy (issue 4, "Tests" list).

The control plane signs with an intermediate whose root never reaches it (only its certificate,
in root-cert.pem): the sidecars' certificates chain to that root, they talk mTLS to each other,
and the xDS connection itself is authenticated with those certificates.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import pytest
from cryptography import x509

from novamesh.security import pki
from novamesh.testing.ca_files import write_intermediate_ca
from novamesh.testing.load import run_load
from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def plugged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalMesh, x509.Certificate, x509.Certificate]]:
    root_dir = tmp_path_factory.mktemp("plugged-ca")
    root, inter = write_intermediate_ca(root_dir / "ca", time.time(), root_in_chain=False, root_name="acme offline root")
    m = LocalMesh(root_dir / "mesh", settings={"ca_dir": str(root_dir / "ca")})
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
