"""EtcdStore against a real etcd on loopback: revisions as one transaction, races between
replicas, watch, workload leases, and clear errors when etcd is unreachable."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from novamesh.api.app import create_app
from novamesh.controlplane.mesh import Mesh
from novamesh.errors import ConflictError, StoreError
from novamesh.settings import Settings
from novamesh.store.base import ConfigStore, WatchableStore
from novamesh.store.etcd import EtcdStore, parse_etcd_url
from novamesh.testing.ha import EtcdCluster, etcd_binary
from novamesh.testing.mesh import free_port, poll
from novamesh.testing.waiting import wait_until_async

VS = ("VirtualService", "default", "reviews")
DR = ("DestinationRule", "default", "reviews")


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if etcd_binary() is None:
        pytest.skip("the etcd binary is not installed (apt-get install etcd-server; .ci/run does it)")
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), members=1) as cluster:
        yield cluster


def _store(etcd: EtcdCluster, prefix: str | None = None) -> EtcdStore:
    return EtcdStore.from_url(etcd.url, prefix=prefix or f"/t-{uuid.uuid4().hex[:8]}/")


def _vs(subset: str) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews", "namespace": "default"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews", "subset": subset}}]}]}}


def test_parse_etcd_url() -> None:
    assert parse_etcd_url("etcd://127.0.0.1:2379,10.0.0.2:2379") == ["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
    for bad in ("http://127.0.0.1:2379", "etcd://127.0.0.1", "etcd://:2379", "etcd://h:port"):
        with pytest.raises(StoreError, match="etcd"):
            parse_etcd_url(bad)


def test_is_a_config_store_and_watchable(etcd: EtcdCluster) -> None:
    store: ConfigStore = _store(etcd)
    assert isinstance(store, WatchableStore)


def test_commit_revisions_history_and_state(etcd: EtcdCluster) -> None:
    s = _store(etcd)
    assert s.current_revision() == 0 and s.list() == [] and s.state_at(0) == {}
    r1 = s.commit([(VS, _vs("v1"))], [], author="ann", message="first")
    assert (r1.number, r1.author, r1.message) == (1, "ann", "first")
    assert [c.op for c in r1.changes] == ["created"]
    same = s.commit([(VS, _vs("v1"))], [])
    assert same.number == 1 and same.changes == () and s.current_revision() == 1
    r2 = s.commit([(VS, _vs("v2")), (DR, {"kind": "DestinationRule"})], [])
    assert r2.number == 2 and sorted(c.op for c in r2.changes) == ["configured", "created"]
    r3 = s.commit([], [DR, ("VirtualService", "default", "absent")])
    assert r3.number == 3 and [(c.key, c.op) for c in r3.changes] == [(DR, "deleted")]
    got = s.get(VS)
    assert got is not None and got.manifest == _vs("v2") and got.revision == 2
    assert s.get(DR) is None
    assert [o.key for o in s.list()] == [VS]
    assert [r.number for r in s.revisions()] == [3, 2, 1]
    assert [r.number for r in s.revisions(limit=2)] == [3, 2]
    assert [r.number for r in s.revisions(key=DR)] == [3, 2]
    assert s.state_at(1) == {VS: _vs("v1")}
    assert s.state_at(2) == {VS: _vs("v2"), DR: {"kind": "DestinationRule"}}
    assert s.state_at(3) == {VS: _vs("v2")}
    # Another instance (another replica) sees the same history.
    other = EtcdStore.from_url(etcd.url, prefix=s.prefix)
    assert other.current_revision() == 3 and other.revisions() == s.revisions()


def test_a_lost_race_is_retried_once_on_the_new_state(etcd: EtcdCluster) -> None:
    a = _store(etcd)
    b = EtcdStore.from_url(etcd.url, prefix=a.prefix)
    real_call = a.call
    raced = []

    def racing_call(path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == "kv/txn" and not raced:
            raced.append(b.commit([(DR, {"kind": "DestinationRule"})], [], message="b"))
        return real_call(path, body)

    a.call = racing_call  # type: ignore[method-assign]
    rev = a.commit([(VS, _vs("v1"))], [], message="a")
    assert raced[0].number == 1 and rev.number == 2
    assert [(r.number, r.message) for r in a.revisions()] == [(2, "a"), (1, "b")]
    assert a.state_at(2) == {VS: _vs("v1"), DR: {"kind": "DestinationRule"}}


def test_losing_twice_is_a_conflict_and_changes_nothing(etcd: EtcdCluster) -> None:
    a = _store(etcd)
    b = EtcdStore.from_url(etcd.url, prefix=a.prefix)
    real_call = a.call
    n = [0]

    def racing_call(path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == "kv/txn":
            n[0] += 1
            b.commit([(("DestinationRule", "default", f"dr{n[0]}"), {"kind": "DestinationRule", "n": n[0]})], [])
        return real_call(path, body)

    a.call = racing_call  # type: ignore[method-assign]
    with pytest.raises(ConflictError, match="another control-plane replica"):
        a.commit([(VS, _vs("v1"))], [])
    assert b.current_revision() == 2 and b.get(VS) is None


def test_concurrent_writers_never_share_a_revision_number(etcd: EtcdCluster) -> None:
    stores = [_store(etcd)]
    stores.append(EtcdStore.from_url(etcd.url, prefix=stores[0].prefix))
    won: list[tuple[int, tuple[str, str, str]]] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        for j in range(15):
            key = ("DestinationRule", "default", f"w{i}-{j}")
            try:
                rev = stores[i].commit([(key, {"kind": "DestinationRule", "j": j})], [])
            except ConflictError:
                continue
            with lock:
                won.append((rev.number, key))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    numbers = [n for n, _ in won]
    assert len(numbers) == len(set(numbers)), "two commits got the same revision number"
    assert sorted(numbers) == list(range(1, len(won) + 1))
    assert stores[0].current_revision() == len(won)
    assert {o.key for o in stores[0].list()} == {k for _, k in won}
    for rev in stores[0].revisions(limit=100):
        assert [c.key for c in rev.changes] == [dict((n, k) for n, k in won)[rev.number]]


async def test_watch_reports_commits_and_workloads_of_other_writers(etcd: EtcdCluster) -> None:
    watcher = _store(etcd)
    writer = EtcdStore.from_url(etcd.url, prefix=watcher.prefix)
    configs: list[int] = []
    workloads: list[int] = []
    task = asyncio.create_task(watcher.watch(configs.append, lambda: workloads.append(1)))

    try:
        await wait_until_async(lambda: configs == [0] and workloads == [1], 10, 0.02, "the initial resync")
        await asyncio.to_thread(writer.commit, [(VS, _vs("v1"))], [])
        await wait_until_async(lambda: configs[-1:] == [1], 10, 0.02, "revision 1 reported")
        await asyncio.to_thread(writer.save_workload, "w1", {"id": "w1"}, time.time() + 30)
        await wait_until_async(lambda: len(workloads) == 2, 10, 0.02, "the workload change reported")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_workload_leases_persist_and_expire_in_etcd(etcd: EtcdCluster) -> None:
    s = _store(etcd)
    s.save_workload("long", {"id": "long", "service": "a"}, time.time() + 60)
    s.save_workload("short", {"id": "short", "service": "b"}, time.time() + 0.5)
    assert sorted(d["id"] for d, _ in s.load_workloads()) == ["long", "short"]
    # etcd's own lease removes a workload no replica refreshes any more.
    poll(lambda: [d["id"] for d, _ in s.load_workloads()] == ["long"], 15, "the short lease to expire in etcd")
    s.delete_workload("long")
    assert s.load_workloads() == []


def test_unreachable_etcd_is_a_clear_store_error() -> None:
    port = free_port()
    s = EtcdStore([f"http://127.0.0.1:{port}"], timeout=0.5)
    with pytest.raises(StoreError, match=rf"etcd at 127\.0\.0\.1:{port} unreachable"):
        s.current_revision()
    with pytest.raises(StoreError, match="unreachable"):
        s.commit([(VS, _vs("v1"))], [])


def test_a_dead_member_is_skipped(etcd: EtcdCluster) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    s = EtcdStore([dead, etcd.members[0].client_url], prefix=f"/t-{uuid.uuid4().hex[:8]}/", timeout=0.5)
    assert s.commit([(VS, _vs("v1"))], []).number == 1


VS_YAML = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"""


def test_two_meshes_share_one_config_and_reload(etcd: EtcdCluster, tmp_path: Any) -> None:
    a_store = _store(etcd)
    b_store = EtcdStore.from_url(etcd.url, prefix=a_store.prefix)
    settings = Settings(data_dir=str(tmp_path))
    a, b = Mesh(settings, a_store), Mesh(settings, b_store)
    a.apply([{"file": "vs.yaml", "content": VS_YAML}])
    assert b.revision == 0 and b.reload() and b.revision == 1
    assert [r.name for r in b.list("vs")] == ["reviews"]
    assert not b.reload()
    # b validates against a's config even before its watch told it: delete goes through b.
    a.apply([{"file": "vs2.yaml", "content": VS_YAML.replace("name: reviews}", "name: ratings}")}])
    result = b.delete([("VirtualService", "default", "ratings")])
    assert result.revision == 3 and a.reload() and [r.name for r in a.list("vs")] == ["reviews"]


def test_api_write_while_etcd_is_unreachable_is_503_and_changes_nothing(etcd: EtcdCluster, tmp_path: Any) -> None:
    store = _store(etcd)
    mesh = Mesh(Settings(data_dir=str(tmp_path)), store)
    client = TestClient(create_app(mesh))
    good = store.endpoints
    store.endpoints = [f"http://127.0.0.1:{free_port()}"]
    resp = client.post("/api/v1/apply", json={"documents": [{"file": "vs.yaml", "content": VS_YAML}]})
    assert resp.status_code == 503
    assert "unreachable" in resp.json()["message"] and "etcd at 127.0.0.1:" in resp.json()["message"]
    store.endpoints = good
    assert store.current_revision() == 0 and mesh.list() == []
    assert client.post("/api/v1/apply", json={"documents": [{"file": "vs.yaml", "content": VS_YAML}]}).status_code == 200
    assert store.current_revision() == 1


def test_secrets_round_trip(etcd: EtcdCluster) -> None:
    store = _store(etcd)
    assert store.get_secret("ca/key") is None
    store.put_secret("ca/key", b"\x00secret\xff")
    assert store.get_secret("ca/key") == b"\x00secret\xff"
    store.put_secret("ca/key", None)
    assert store.get_secret("ca/key") is None
