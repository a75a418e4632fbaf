"""The config store interface.

A store keeps the current config set and a numbered revision for every change (history and
rollback build on it), plus the persisted leases of registered workloads. Implementations:
:class:`novamesh.store.sqlite.SqliteStore` (embedded default) and
:class:`novamesh.store.etcd.EtcdStore` (shared by the replicas of an HA control plane; it is also a
:class:`WatchableStore`). Every method may raise
:class:`novamesh.errors.StoreError` when the backing storage fails.
"""

from __future__ import annotations

import builtins

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..config.resource import ResourceKey

__all__ = ["StoredObject", "Revision", "Change", "ConfigStore", "WatchableStore"]


@dataclass(frozen=True)
class StoredObject:
    """A resource as stored: its key, manifest and the revision that last changed it."""

    key: ResourceKey
    manifest: dict[str, Any]
    revision: int


@dataclass(frozen=True)
class Change:
    """One resource changed by a revision; ``manifest`` is None for a deletion."""

    key: ResourceKey
    op: str  # "created" | "configured" | "deleted"
    manifest: dict[str, Any] | None


@dataclass(frozen=True)
class Revision:
    """A committed change set."""

    number: int
    time: float
    author: str
    message: str
    changes: tuple[Change, ...]


class ConfigStore(Protocol):
    """Tiny interface every store implements."""

    def current_revision(self) -> int: ...

    def list(self) -> list[StoredObject]: ...

    def get(self, key: ResourceKey) -> StoredObject | None: ...

    def commit(
        self,
        puts: Sequence[tuple[ResourceKey, dict[str, Any]]],
        deletes: Sequence[ResourceKey],
        *,
        author: str = "",
        message: str = "",
    ) -> Revision:
        """Apply all puts and deletes atomically as one new revision. Puts whose manifest equals
        the stored one and deletes of absent keys are not changes; if nothing changes, no
        revision is created and the returned Revision has no changes and the current number."""
        ...

    def revisions(self, limit: int = 50, key: ResourceKey | None = None) -> builtins.list[Revision]:
        """Newest first; with ``key``, only revisions that changed that resource."""
        ...

    def state_at(self, revision: int) -> dict[ResourceKey, dict[str, Any]]:
        """The complete config set as it was right after ``revision`` (0: empty)."""
        ...

    def subscribe(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(revision)`` after every commit."""
        ...

    # Workload leases (not config: no revisions).
    def save_workload(self, workload_id: str, data: dict[str, Any], expires_at: float) -> None: ...

    def delete_workload(self, workload_id: str) -> None: ...

    def load_workloads(self) -> builtins.list[tuple[dict[str, Any], float]]: ...

    # Secrets (CA material, hashed join tokens; not config: no revisions, never in backups' YAML).
    def get_secret(self, name: str) -> bytes | None:
        """The secret stored under ``name``, or None."""
        ...

    def put_secret(self, name: str, value: bytes | None) -> None:
        """Store ``value`` under ``name``; ``None`` deletes it."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class WatchableStore(Protocol):
    """A store that other writers share (etcd): it reports changes it did not make itself."""

    async def watch(self, on_config: Callable[[int], None], on_workloads: Callable[[], None]) -> None:
        """Until cancelled, call ``on_config(revision)`` after any commit and ``on_workloads()``
        after any workload lease change, by any writer; both once after every (re)connection."""
        ...
