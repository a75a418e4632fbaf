"""The control plane's high-availability wiring: which store, the etcd watch, leader election
and the xDS connection age that spreads proxies over replicas. See docs/operations.md."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..clock import Clock
from ..errors import StoreError
from ..settings import Settings
from ..store.base import ConfigStore, WatchableStore
from ..store.etcd import EtcdStore
from ..store.sqlite import SqliteStore
from .leader import LeaderElection
from .mesh import Mesh

__all__ = ["open_store", "make_election", "max_age_options", "start_ha_tasks", "ReapGuard"]

log = logging.getLogger(__name__)


def open_store(settings: Settings, clock: Clock) -> ConfigStore:
    """The store ``settings.store`` names: ``sqlite`` (``<data_dir>/store.db``) or ``etcd://...``."""
    if settings.store in ("", "sqlite"):
        return SqliteStore(Path(settings.data_dir) / "store.db", clock=clock)
    if settings.store.startswith("etcd://"):
        return EtcdStore.from_url(settings.store, prefix=settings.etcd_prefix, clock=clock, timeout=settings.etcd_timeout)
    raise StoreError(f"unknown store {settings.store!r}; use 'sqlite' or etcd://HOST:PORT[,HOST:PORT...] (--store)")


def make_election(settings: Settings, store: ConfigStore, clock: Clock) -> LeaderElection | None:
    """A leader election when replicas share an etcd store; None for a single replica."""
    if not isinstance(store, EtcdStore):
        return None
    identity = f"http://{settings.bind_host}:{settings.http_port}"
    return LeaderElection(store, identity=identity, ttl=settings.leader_ttl, clock=clock)


def max_age_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC server options that close each xDS connection after ``xds_max_connection_age``
    (with a grace for in-flight pushes), so proxies spread again after a replica comes back."""
    if settings.xds_max_connection_age <= 0:
        return []
    age_ms = int(settings.xds_max_connection_age * 1000)
    return [("grpc.max_connection_age_ms", age_ms), ("grpc.max_connection_age_grace_ms", min(age_ms, 10_000))]


def start_ha_tasks(
    tg: asyncio.TaskGroup, store: ConfigStore, mesh: Mesh, election: LeaderElection | None
) -> list[asyncio.Task[None]]:
    """Start the store watch (reload on other replicas' writes) and the election in ``tg``."""
    tasks: list[asyncio.Task[None]] = []
    if isinstance(store, WatchableStore):
        tasks.append(tg.create_task(store.watch(lambda rev: _reload(mesh, rev), mesh.registry.reload), name="store-watch"))
    if election is not None:
        tasks.append(tg.create_task(election.run(), name="leader-election"))
    return tasks


def _reload(mesh: Mesh, revision: int) -> None:
    mesh.reload(revision)


class ReapGuard:
    """Decides whether lease expiry may run now.

    While a shared store is unreachable, heartbeats cannot be recorded, so every replica would
    see every lease run out and empty the mesh: expiry pauses instead (proxies keep their
    endpoints). When the store is back, agents get one more ``lease_ttl`` to heartbeat before
    expiry resumes. A store of our own (SQLite) never pauses it.
    """

    def __init__(self, store: ConfigStore | None, lease_ttl: float, clock: Clock) -> None:
        self._store = store if isinstance(store, EtcdStore) else None
        self._ttl = lease_ttl
        self._clock = clock
        self._paused_until: float | None = None
        self._down = False

    def allow(self) -> bool:
        """True if expiry may run now (checks the store once)."""
        if self._store is None:
            return True
        try:
            self._store.current_revision()
        except StoreError as exc:
            if not self._down:
                log.warning("store unreachable, lease expiry paused (proxies keep their endpoints): %s", exc)
            self._down = True
            return False
        if self._down:
            self._down = False
            self._paused_until = self._clock.monotonic() + self._ttl
            log.warning("store reachable again; lease expiry resumes in %.1fs", self._ttl)
        if self._paused_until is not None and self._clock.monotonic() < self._paused_until:
            return False
        self._paused_until = None
        return True
