"""Registry.reload and Mesh.reload: a replica picks up what another one stored."""

from __future__ import annotations

from pathlib import Path

from novamesh.controlplane.mesh import Mesh
from novamesh.registry.registry import Registry
from novamesh.settings import Settings
from novamesh.store.sqlite import SqliteStore
from novamesh.testing.clock import ManualClock


def test_registry_reload_follows_the_store(tmp_path: Path) -> None:
    clock = ManualClock()
    store = SqliteStore(tmp_path / "s.db", clock=clock)
    changes: list[int] = []
    a = Registry(store, lease_ttl=10, address_pool="127.9.0.0/24", clock=clock)
    b = Registry(store, lease_ttl=10, address_pool="127.9.0.0/24", clock=clock, on_change=lambda: changes.append(1))
    w = a.register({"service": "reviews", "version": "v1", "ports": [{"number": 9080}], "ready": True})
    b.reload()
    assert [x.id for x in b.workloads()] == [w.id] and len(changes) == 1
    assert b.expires_in(w.id) == 10
    clock.advance(4)
    a.heartbeat(w.id)  # a heartbeat through a: b's lease view moves on, no endpoint change
    b.reload()
    assert b.expires_in(w.id) == 10 and len(changes) == 1
    a.deregister(w.id)
    b.reload()
    assert b.workloads() == [] and len(changes) == 2
    assert [(ns, svc) for ns, svc, _ in b.departed_services()] == [("default", "reviews")]
    store.close()


def test_mesh_reload_is_a_no_op_without_foreign_commits(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    mesh = Mesh(Settings(data_dir=str(tmp_path)), store)
    assert not mesh.reload() and mesh.leader.is_leader
    store.commit([(("VirtualService", "default", "x"), {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "x", "namespace": "default"},
        "spec": {"hosts": ["x"], "http": [{"route": [{"destination": {"host": "x"}}]}]},
    })], [])  # fmt: skip
    assert mesh.reload() and mesh.revision == 1 and [r.name for r in mesh.list()] == ["x"]
    store.close()
