"""SQLite store revisions and the lease-based registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from novamesh.errors import ConfigError, NotFoundError
from novamesh.registry import Registry
from novamesh.store import SqliteStore
from novamesh.testing.clock import ManualClock

VS = ("VirtualService", "default", "reviews")


def test_commit_numbers_revisions_and_skips_no_ops(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    seen: list[int] = []
    store.subscribe(seen.append)
    r1 = store.commit([(VS, {"spec": {"a": 1}})], [], author="ann", message="first")
    assert r1.number == 1 and [c.op for c in r1.changes] == ["created"]
    same = store.commit([(VS, {"spec": {"a": 1}})], [])
    assert same.number == 1 and same.changes == ()
    r2 = store.commit([(VS, {"spec": {"a": 2}})], [])
    assert r2.number == 2 and r2.changes[0].op == "configured"
    r3 = store.commit([], [VS, ("DestinationRule", "default", "absent")])
    assert r3.number == 3 and [c.op for c in r3.changes] == ["deleted"]
    assert store.get(VS) is None
    assert seen == [1, 2, 3]
    revs = store.revisions()
    assert [r.number for r in revs] == [3, 2, 1] and revs[-1].author == "ann"


def test_store_survives_reopen(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.commit([(VS, {"spec": {"a": 1}})], [])
    store.save_workload("w1", {"id": "w1", "service": "x"}, 123.0)
    store.close()
    again = SqliteStore(tmp_path / "s.db")
    assert again.current_revision() == 1
    assert again.get(VS) is not None and again.get(VS).manifest == {"spec": {"a": 1}}  # type: ignore[union-attr]
    assert again.load_workloads() == [({"id": "w1", "service": "x"}, 123.0)]


def _registry(tmp_path: Path, clock: ManualClock, changes: list[int] | None = None) -> Registry:
    return Registry(
        SqliteStore(tmp_path / "s.db", clock=clock), lease_ttl=10, address_pool="127.9.0.0/24", clock=clock,
        on_change=(lambda: changes.append(1)) if changes is not None else None,
    )


def test_register_allocates_distinct_addresses_and_labels(tmp_path: Path) -> None:
    clock = ManualClock()
    reg = _registry(tmp_path, clock)
    a = reg.register({"service": "reviews", "version": "v1", "ports": [{"number": 9080}]})
    b = reg.register({"service": "reviews", "version": "v2"})
    assert a.address != b.address and a.address.startswith("127.9.0.")
    assert a.label_dict == {"app": "reviews", "version": "v1"}
    again = reg.register({"id": a.id, "service": "reviews", "version": "v1"})
    assert again.address == a.address
    with pytest.raises(ConfigError):
        reg.register({"service": "other", "address": a.address})


def test_lease_expiry_and_heartbeat(tmp_path: Path) -> None:
    clock = ManualClock()
    changes: list[int] = []
    reg = _registry(tmp_path, clock, changes)
    w = reg.register({"service": "reviews"})
    clock.advance(8)
    reg.heartbeat(w.id, ready=True)
    assert reg.get(w.id).ready
    clock.advance(8)
    assert reg.expire() == []
    clock.advance(3)
    assert [x.id for x in reg.expire()] == [w.id]
    with pytest.raises(NotFoundError):
        reg.heartbeat(w.id)
    assert len(changes) == 3  # register, ready, expiry


def test_leases_survive_a_restart(tmp_path: Path) -> None:
    clock = ManualClock()
    reg = _registry(tmp_path, clock)
    w = reg.register({"service": "reviews", "ready": True})
    # The control plane is down longer than the lease: agents could not heartbeat meanwhile,
    # so the restarted registry gives the lease a fresh TTL rather than expiring it at once.
    clock.advance(25)
    reg2 = _registry(tmp_path, clock)
    assert reg2.get(w.id).address == w.address
    assert reg2.expire() == []
    clock.advance(11)
    assert [x.id for x in reg2.expire()] == [w.id]


def test_departed_service_is_remembered_for_the_retention_period(tmp_path: Path) -> None:
    clock = ManualClock()
    reg = Registry(SqliteStore(tmp_path / "s.db", clock=clock), lease_ttl=10, address_pool="127.9.0.0/24",
                   clock=clock, service_retention=60)
    w = reg.register({"service": "cache", "ports": [{"number": 6379, "protocol": "TCP"}]})
    assert reg.departed_services() == []
    reg.deregister(w.id)
    [(ns, svc, ports)] = reg.departed_services()
    assert (ns, svc, [p.number for p in ports]) == ("default", "cache", [6379])
    clock.advance(61)
    reg.expire()
    assert reg.departed_services() == []
