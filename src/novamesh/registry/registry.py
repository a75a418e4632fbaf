"""Workload registry: agents register workloads and keep them alive with heartbeats.

A workload is an endpoint of its service only while it is ``ready`` and its lease has not
expired. Leases are persisted in the store, so a control-plane restart keeps every endpoint
(agents keep heartbeating the same id) instead of emptying the mesh.
"""

from __future__ import annotations

import ipaddress
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ConfigError, NotFoundError, StoreError, Violation
from ..store.base import ConfigStore

__all__ = ["WorkloadPort", "Workload", "Registry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkloadPort:
    number: int
    protocol: str = "HTTP"
    name: str = ""
    app_port: int = 0


@dataclass(frozen=True)
class Workload:
    """One registered workload (a sidecar'd app instance or a gateway)."""

    id: str
    service: str
    namespace: str = "default"
    version: str = ""
    kind: str = "sidecar"
    service_account: str = "default"
    address: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    ports: tuple[WorkloadPort, ...] = ()
    ready: bool = False

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = dict(self.labels)
        d["ports"] = [asdict(p) for p in self.ports]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Workload:
        labels = dict(d.get("labels") or {})
        return cls(
            id=str(d["id"]),
            service=str(d.get("service") or ""),
            namespace=str(d.get("namespace") or "default"),
            version=str(d.get("version") or ""),
            kind=str(d.get("kind") or "sidecar"),
            service_account=str(d.get("service_account") or "default"),
            address=str(d.get("address") or ""),
            labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            ports=tuple(
                WorkloadPort(
                    number=int(p["number"]),
                    protocol=str(p.get("protocol") or "HTTP").upper(),
                    name=str(p.get("name") or ""),
                    app_port=int(p.get("app_port") or 0),
                )
                for p in d.get("ports") or []
            ),
            ready=bool(d.get("ready", False)),
        )


@dataclass
class _Entry:
    workload: Workload
    expires_at: float
    extra: dict[str, Any] = field(default_factory=dict)


class Registry:
    """In-memory registry with leases persisted through the store.

    ``on_change`` is called (synchronously) whenever the set of endpoints may have changed.
    """

    def __init__(
        self,
        store: ConfigStore,
        *,
        lease_ttl: float,
        address_pool: str,
        service_retention: float = 300.0,
        clock: Clock = SYSTEM_CLOCK,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        self._ttl = lease_ttl
        self._clock = clock
        self._pool = ipaddress.ip_network(address_pool)
        self._on_change = on_change or (lambda: None)
        self._entries: dict[str, _Entry] = {}
        self._retention = service_retention
        self._departed: dict[tuple[str, str], tuple[tuple[WorkloadPort, ...], float]] = {}
        self._version = 0
        # Agents cannot heartbeat while the control plane is down, so a restart gives every
        # persisted lease a fresh TTL instead of expiring the whole mesh at once.
        fresh = clock.time() + lease_ttl
        for data, expires in store.load_workloads():
            w = Workload.from_dict(data)
            self._entries[w.id] = _Entry(w, max(expires, fresh))

    @property
    def version(self) -> int:
        """Increases on every change of the endpoint set."""
        return self._version

    def _changed(self) -> None:
        self._version += 1
        self._on_change()

    def _allocate_address(self) -> str:
        used = {e.workload.address for e in self._entries.values()}
        for host in self._pool.hosts():
            addr = str(host)
            if addr not in used:
                return addr
        raise ConfigError([Violation(f"address pool {self._pool} is exhausted", hint="raise address_pool")])

    def register(self, data: dict[str, Any]) -> Workload:
        """Create or refresh a workload. Keeps ``id`` and ``address`` when given."""
        if not data.get("service"):
            raise ConfigError([Violation("a workload needs a service name", path="service", hint="pass --service NAME")])
        wid = str(data.get("id") or uuid.uuid4().hex[:12])
        address = str(data.get("address") or "")
        if not address:
            old = self._entries.get(wid)
            address = old.workload.address if old else self._allocate_address()
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError([Violation(f"address {address!r} is not an IP address", path="address", hint="use a 127.x.y.z address")]) from None
        for other in self._entries.values():
            if other.workload.address == address and other.workload.id != wid:
                raise ConfigError(
                    [Violation(f"address {address} is already used by workload {other.workload.id} "
                               f"({other.workload.service})", path="address", hint="omit --address to get a free one")]
                )
        labels = dict(data.get("labels") or {})
        labels.setdefault("app", str(data["service"]))
        if data.get("version"):
            labels.setdefault("version", str(data["version"]))
        merged = dict(data, id=wid, address=str(ip), labels=labels)
        w = Workload.from_dict(merged)
        old_entry = self._entries.get(wid)
        self._entries[wid] = _Entry(w, self._clock.time() + self._ttl)
        self._store.save_workload(wid, w.to_dict(), self._entries[wid].expires_at)
        if old_entry is None or old_entry.workload != w:
            self._changed()
        return w

    def heartbeat(self, wid: str, ready: bool | None = None) -> Workload:
        """Extend the lease; raise NotFoundError if it is gone (the agent re-registers)."""
        entry = self._entries.get(wid)
        if entry is None:
            raise NotFoundError(f"workload {wid} is not registered (lease expired or control plane restarted)")
        entry.expires_at = self._clock.time() + self._ttl
        changed = False
        if ready is not None and ready != entry.workload.ready:
            entry.workload = replace(entry.workload, ready=ready)
            changed = True
        self._store.save_workload(wid, entry.workload.to_dict(), entry.expires_at)
        if changed:
            self._changed()
        return entry.workload

    def deregister(self, wid: str) -> bool:
        entry = self._entries.pop(wid, None)
        self._store.delete_workload(wid)
        if entry is not None:
            self._remember(entry.workload)
            self._changed()
        return entry is not None

    def _remember(self, w: Workload) -> None:
        if w.ports:
            self._departed[(w.namespace, w.service)] = (w.ports, self._clock.time() + self._retention)

    def departed_services(self) -> list[tuple[str, str, tuple[WorkloadPort, ...]]]:
        """Services whose workloads all left less than ``service_retention`` ago (namespace,
        service, ports): still known to the mesh, so callers get 503 (no healthy upstream)
        rather than 404 (no such host) while a service restarts or scales from zero."""
        now = self._clock.time()
        live = {(e.workload.namespace, e.workload.service) for e in self._entries.values()}
        for key in [k for k, (_, until) in self._departed.items() if until <= now]:
            del self._departed[key]
        return [(ns, svc, ports) for (ns, svc), (ports, _) in sorted(self._departed.items()) if (ns, svc) not in live]

    def expire(self) -> list[Workload]:
        """Drop workloads whose lease has expired; returns them."""
        now = self._clock.time()
        forgotten = [k for k, (_, until) in self._departed.items() if until <= now]
        for key in forgotten:
            del self._departed[key]
        gone = [e.workload for e in self._entries.values() if e.expires_at <= now]
        for w in gone:
            del self._entries[w.id]
            try:
                self._store.delete_workload(w.id)
            except StoreError as exc:  # the store's own lease (etcd) removes it anyway
                log.warning("cannot delete the expired lease of workload %s from the store: %s", w.id, exc)
            self._remember(w)
        if gone or forgotten:
            self._changed()
        return gone

    def reload(self) -> None:
        """Replace the in-memory leases with the store's (another replica wrote them)."""
        fresh = {}
        for data, expires in self._store.load_workloads():
            w = Workload.from_dict(data)
            fresh[w.id] = _Entry(w, expires)
        before = {wid: e.workload for wid, e in self._entries.items()}
        for wid, w in before.items():
            if wid not in fresh:
                self._remember(w)
        self._entries = fresh
        if before != {wid: e.workload for wid, e in fresh.items()}:
            self._changed()

    def get(self, wid: str) -> Workload:
        entry = self._entries.get(wid)
        if entry is None:
            raise NotFoundError(f"workload {wid} is not registered")
        return entry.workload

    def workloads(self) -> list[Workload]:
        return sorted((e.workload for e in self._entries.values()), key=lambda w: (w.namespace, w.service, w.version, w.id))

    def expires_in(self, wid: str) -> float:
        entry = self._entries.get(wid)
        return 0.0 if entry is None else max(0.0, entry.expires_at - self._clock.time())
