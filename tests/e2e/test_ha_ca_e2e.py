"""The CA under HA: three replicas on a real three-member etcd share ONE root (created once,
by a compare-and-create in etcd), every replica serves the CSR service on its own port, and a
workload that talks only to replica 2 gets a certificate signed by the shared root."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import pytest
from cryptography import x509

from novamesh.security import pki
from novamesh.testing.ha import EtcdCluster, HaMesh, etcd_binary
from novamesh.testing.mesh import WorkloadProcess, poll

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HaMesh]:
    if etcd_binary() is None:
        pytest.skip("the etcd binary is not installed (apt-get install etcd-server; .ci/run does it)")
    with EtcdCluster(tmp_path_factory.mktemp("etcd-ca"), members=3) as etcd:
        m = HaMesh(tmp_path_factory.mktemp("ha-ca"), etcd, replicas=3, settings={"lease_ttl": 6, "heartbeat_interval": 1})
        try:
            m.start_control_plane()
            m.echo("reviews", env=m.pinned_env(2))  # REST, xDS and CSR of replica 2 only
            yield m
        finally:
            m.close()


def _roots_of(mesh: HaMesh, index: int) -> list[str]:
    api = mesh.api_of(index)
    try:
        return [pki.fingerprint(c) for c in pki.load_certs("".join(api.get("/api/v1/ca/bundle")["roots"]).encode())]
    finally:
        api.close()


def _chain(wp: WorkloadProcess) -> list[x509.Certificate] | None:
    dump = httpx.get(f"{wp.admin_url}/config_dump", params={"resource": "dynamic_active_secrets"}, timeout=5, trust_env=False).json()
    for item in dump.get("configs", []):
        if item["name"] == "default":
            return pki.load_certs(base64.b64decode(item["secret"]["tls_certificate"]["certificate_chain"]["inline_bytes"]))
    return None


def test_three_replicas_one_root_and_replica_2_signs_with_it(mesh: HaMesh) -> None:
    roots = [_roots_of(mesh, i) for i in range(3)]
    assert len(roots[0]) == 1 and roots[0] == roots[1] == roots[2]  # one shared root
    reviews = mesh.workloads[0]
    chain = poll(lambda: _chain(reviews), 30, "reviews holds a certificate")
    assert mesh.replica_of(reviews.address) == 2  # its Envoy is connected to replica 2
    api = mesh.api_of(2)
    try:
        bundle = pki.load_certs("".join(api.get("/api/v1/ca/bundle")["roots"]).encode())
    finally:
        api.close()
    pki.verify_chain(chain, bundle, time.time())  # signed by the shared root
    assert chain[0].issuer == bundle[0].subject
    # each replica runs its own CSR service (own port), and exactly one replica created the root
    created = [r.index for r in mesh.replicas if "created a self-signed" in r.log()]
    assert len(created) == 1
    for r in mesh.replicas:
        assert f"CSR service on 127.0.0.1:{r.csr_port}" in r.log()
