"""Three control-plane replicas on a three-member etcd cluster, under continuous traffic:
SIGKILL the replica the proxy is connected to, restart every replica one by one, apply through one
replica and see it on a proxy connected to another, then lose etcd altogether and get it back."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from novamesh.errors import StoreError
from novamesh.testing.ha import EtcdCluster, HaMesh, etcd_binary
from novamesh.testing.load import Traffic
from novamesh.testing.mesh import WorkloadProcess, poll

pytestmark = pytest.mark.e2e

CONFIG = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
"""

LEASE_TTL = 4


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if etcd_binary() is None:
        pytest.skip("the etcd binary is not installed (apt-get install etcd-server; .ci/run does it)")
    with EtcdCluster(tmp_path_factory.mktemp("etcd3"), members=3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, etcd: EtcdCluster) -> Iterator[HaMesh]:
    m = HaMesh(
        tmp_path_factory.mktemp("ha"), etcd, replicas=3,
        settings={"lease_ttl": LEASE_TTL, "heartbeat_interval": 1, "leader_ttl": 3},
    )  # fmt: skip
    try:
        m.start_control_plane()
        m.echo("reviews", version="v1")
        m.echo("reviews", version="v2")
        m.client("client")
        # A second client whose Envoy knows only replica 2's port 15012 (xDS over mTLS, and
        # certificates): whatever is applied through replica 0 must reach it through etcd.
        m.client("pinned", env={"NOVAMESH_CSR_ADDRESSES": f"127.0.0.1:{m.replicas[2].csr_port}"})
        yield m
    finally:
        m.close()


def _wl(mesh: HaMesh, name: str) -> WorkloadProcess:
    return next(w for w in mesh.workloads if w.service == name)


def _apply_via(mesh: HaMesh, index: int, subset: str) -> int:
    api = mesh.api_of(index)
    try:
        return int(api.post("/api/v1/apply", {"documents": [{"file": f"{subset}.yaml", "content": CONFIG.format(subset=subset)}]})["revision"])
    finally:
        api.close()


def test_replica_crash_and_rolling_restart_lose_no_request(mesh: HaMesh) -> None:
    client, pinned = _wl(mesh, "client"), _wl(mesh, "pinned")
    assert _apply_via(mesh, 0, "v1") >= 1
    with Traffic("http://reviews:9080/", proxy=client.proxy_url, rate=20) as traffic, \
            Traffic("http://reviews:9080/", proxy=pinned.proxy_url, rate=10) as pinned_traffic:  # fmt: skip
        traffic.wait_for(lambda t: t.versions.get("reviews/v1", 0) >= 20, 30, "v1 through the client")
        pinned_traffic.wait_for(lambda t: t.versions.get("reviews/v1", 0) >= 10, 30, "v1 through the pinned client")
        assert mesh.replica_of(pinned.address) == 2

        poll(lambda: mesh.replica_of(client.address) is not None, 20, "the client's xDS replica")
        victim = mesh.replica_of(client.address)
        assert victim is not None
        mesh.stop_replica(victim, signal.SIGKILL)
        poll(lambda: mesh.replica_of(client.address) not in (None, victim), 60, "the client reconnecting to another replica")
        mesh.start_replica(victim)

        for i in range(3):
            mesh.stop_replica(i)
            mesh.start_replica(i)
            poll(lambda: mesh.replica_of(client.address) is not None, 60, f"the client connected after restarting replica {i}")
        poll(lambda: mesh.replica_of(pinned.address) == 2, 60, "the pinned client back on replica 2")

        # Written through replica 0, served to the proxy on replica 2 (and everyone else).
        mark, pinned_mark = traffic.now(), pinned_traffic.now()
        _apply_via(mesh, 0, "v2")
        pinned_traffic.wait_for(lambda t: t.versions_since(pinned_mark).get("reviews/v2", 0) >= 10, 30, "v2 on replica 2's proxy")
        traffic.wait_for(lambda t: t.versions_since(mark).get("reviews/v2", 0) >= 10, 30, "v2 on the client")
    assert traffic.failures() == [], [s.detail for s in traffic.failures()[:5]]
    assert pinned_traffic.failures() == [], [s.detail for s in pinned_traffic.failures()[:5]]
    assert {w["service"] for w in mesh.workloads_info()} == {"reviews", "client", "pinned"}


def test_etcd_outage_keeps_the_data_plane_and_refuses_writes_clearly(mesh: HaMesh) -> None:
    client = _wl(mesh, "client")
    before = _apply_via(mesh, 1, "v1")
    with Traffic("http://reviews:9080/", proxy=client.proxy_url, rate=20) as traffic:
        traffic.wait_for(lambda t: t.versions.get("reviews/v1", 0) >= 20, 30, "v1 before the outage")
        mesh.etcd.stop()
        try:
            with pytest.raises(StoreError, match="etcd at 127.0.0.1:.* unreachable"):
                _apply_via(mesh, 0, "v2")
            refused = mesh.cli("apply", "-f", "-", input=CONFIG.format(subset="v2"))
            assert refused.returncode == 1 and "unreachable" in refused.stderr
            # Outlive two leases without etcd: nobody's endpoints may expire meanwhile.
            start, count = traffic.now(), traffic.count
            traffic.wait_for(lambda t: t.now() - start > 2 * LEASE_TTL and t.count > count + 40, 60, "traffic through the outage")
            assert {w["id"] for w in mesh.workloads_info()} == {w.id for w in mesh.workloads}
        finally:
            mesh.etcd.start()
        after = poll(lambda: _apply_via(mesh, 2, "v2"), 60, "writes accepted again after etcd came back")
        assert after == before + 1
        mark = traffic.now()
        traffic.wait_for(lambda t: t.versions_since(mark).get("reviews/v2", 0) >= 10, 30, "v2 after the outage")
    assert traffic.failures() == [], [s.detail for s in traffic.failures()[:5]]
    numbers = [r["revision"] for r in mesh.api.get("/api/v1/revisions", limit=100)]
    assert numbers[0] == after and set(range(1, after + 1)) <= set(numbers)
    assert {w["id"] for w in mesh.workloads_info()} == {w.id for w in mesh.workloads}
