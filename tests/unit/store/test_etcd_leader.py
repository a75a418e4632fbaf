"""Leader election on an etcd lease (real etcd, manual clock) and the lease-expiry guard."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from novamesh.controlplane.ha import ReapGuard, make_election, max_age_options, open_store
from novamesh.controlplane.leader import LeaderElection, SoleLeader
from novamesh.errors import StoreError
from novamesh.settings import Settings
from novamesh.store.etcd import EtcdStore
from novamesh.store.sqlite import SqliteStore
from novamesh.testing.clock import ManualClock
from novamesh.testing.ha import EtcdCluster, etcd_binary


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if etcd_binary() is None:
        pytest.skip("the etcd binary is not installed (apt-get install etcd-server; .ci/run does it)")
    with EtcdCluster(tmp_path_factory.mktemp("etcd-leader"), members=1) as cluster:
        yield cluster


def _pair(etcd: EtcdCluster, clock: ManualClock) -> tuple[LeaderElection, LeaderElection]:
    prefix = f"/le-{uuid.uuid4().hex[:8]}/"
    a = LeaderElection(EtcdStore.from_url(etcd.url, prefix=prefix), identity="a", ttl=5, clock=clock)
    b = LeaderElection(EtcdStore.from_url(etcd.url, prefix=prefix), identity="b", ttl=5, clock=clock)
    return a, b


def test_one_leader_and_handover_on_resign(etcd: EtcdCluster) -> None:
    clock = ManualClock()
    a, b = _pair(etcd, clock)
    assert a.step() and not b.step()
    assert a.is_leader and not b.is_leader and b.leader() == "a"
    clock.advance(1)
    assert a.step() and not b.step()  # renewals keep it
    a.resign()
    assert not a.is_leader
    assert b.step() and b.leader() == "b" and not a.step()


def test_a_leader_that_cannot_renew_steps_down_before_its_lease_ends(etcd: EtcdCluster) -> None:
    clock = ManualClock()
    a, b = _pair(etcd, clock)
    assert a.step()
    store = a.backend
    assert isinstance(store, EtcdStore)
    good = store.endpoints
    store.endpoints = ["http://127.0.0.1:9"]  # etcd unreachable from a
    clock.advance(2)
    assert a.step()  # still within its local validity (2/3 of the ttl)
    clock.advance(2)
    assert not a.step() and not a.is_leader
    store.endpoints = good
    assert not b.step()  # a's etcd lease has not run out yet: no second leader
    a.resign()
    assert b.step()


def test_sole_leader_and_wiring_for_sqlite(tmp_path: object) -> None:
    settings = Settings(data_dir=str(tmp_path))
    store = open_store(settings, ManualClock())
    assert isinstance(store, SqliteStore)
    assert make_election(settings, store, ManualClock()) is None
    assert SoleLeader().is_leader
    assert ReapGuard(store, 5, ManualClock()).allow()
    with pytest.raises(StoreError, match="unknown store 'zk://x'"):
        open_store(settings.replace(store="zk://x"), ManualClock())
    store.close()


def test_max_connection_age_options() -> None:
    assert max_age_options(Settings(xds_max_connection_age=0)) == []
    assert dict(max_age_options(Settings(xds_max_connection_age=60))) == {
        "grpc.max_connection_age_ms": 60000, "grpc.max_connection_age_grace_ms": 10000,
    }


def test_lease_expiry_pauses_while_etcd_is_down_and_for_one_ttl_after() -> None:
    up = [True]

    def handler(request: httpx.Request) -> httpx.Response:
        if not up[0]:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json={"kvs": []})

    clock = ManualClock()
    store = EtcdStore(["http://etcd.test:2379"], transport=httpx.MockTransport(handler))
    guard = ReapGuard(store, lease_ttl=5, clock=clock)
    assert guard.allow()
    up[0] = False
    assert not guard.allow()
    clock.advance(60)
    assert not guard.allow()
    up[0] = True
    assert not guard.allow()  # agents get one ttl to heartbeat again
    clock.advance(4.9)
    assert not guard.allow()
    clock.advance(0.2)
    assert guard.allow()
