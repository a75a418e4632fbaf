"""Leader election among control-plane replicas, for singleton jobs.

Every replica serves the API and xDS; a few jobs must run on exactly one of them (scheduled
backups, creating the root CA). Those jobs check ``mesh.leader.is_leader``.

* :class:`SoleLeader`: a control plane on its own store (SQLite) is always the leader.
* :class:`LeaderElection`: replicas sharing etcd race to create one key attached to an etcd
  lease; the winner keeps the lease alive, the others retry. A leader that cannot renew (etcd
  unreachable, lease expired) stops calling itself leader once its local validity runs out,
  which is shorter than the lease, so two replicas never both believe they lead.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import StoreError

__all__ = ["Leadership", "SoleLeader", "LeaseBackend", "LeaderElection"]

log = logging.getLogger(__name__)


class Leadership(Protocol):
    """What singleton jobs ask."""

    @property
    def is_leader(self) -> bool:
        """Whether this replica should run singleton jobs right now."""
        ...


class SoleLeader:
    """The only replica: always the leader."""

    @property
    def is_leader(self) -> bool:
        return True


class LeaseBackend(Protocol):
    """The lease operations :class:`LeaderElection` needs (``EtcdStore`` provides them)."""

    def grant_lease(self, ttl: float) -> int: ...

    def keepalive(self, lease: int) -> bool: ...

    def revoke(self, lease: int) -> None: ...

    def create_if_absent(self, key: str, value: str, lease: int) -> bool: ...

    def read(self, key: str) -> str | None: ...


class LeaderElection:
    """Campaign for ``key`` with an etcd lease of ``ttl`` seconds; :meth:`run` until cancelled
    (or call :meth:`step` yourself). ``identity`` names this replica (its API URL)."""

    def __init__(
        self, backend: LeaseBackend, *, identity: str, ttl: float = 10.0, key: str = "leader", clock: Clock = SYSTEM_CLOCK
    ) -> None:
        if ttl < 2:
            raise ValueError("leader lease ttl must be at least 2 seconds")
        self.backend = backend
        self.identity = identity
        self.ttl = ttl
        self.key = key
        self.clock = clock
        self._lease: int | None = None
        self._abandoned: int | None = None
        self._valid_until = 0.0

    @property
    def is_leader(self) -> bool:
        return self._lease is not None and self.clock.monotonic() < self._valid_until

    def leader(self) -> str | None:
        """Identity of the current leader as etcd records it (None if none)."""
        return self.backend.read(self.key)

    def step(self) -> bool:
        """Renew or campaign once; returns :attr:`is_leader`. Never raises for etcd trouble."""
        started = self.clock.monotonic()
        # Local validity ends well before etcd's lease does (measured from before the request).
        validity = self.ttl * 2 / 3
        try:
            if self._lease is not None:
                if self.backend.keepalive(self._lease):
                    self._valid_until = started + validity
                else:
                    log.warning("leader lease of %s expired; campaigning again", self.identity)
                    self._lease = None
            if self._lease is None:
                lease = self.backend.grant_lease(self.ttl)
                if self.backend.create_if_absent(self.key, self.identity, lease):
                    self._lease = lease
                    self._valid_until = started + validity
                    log.info("%s is now the leader", self.identity)
                else:
                    self.backend.revoke(lease)
        except StoreError as exc:
            if self.is_leader:
                log.warning("cannot renew leadership of %s: %s", self.identity, exc)
            elif self._lease is not None:
                log.warning("%s lost leadership: %s", self.identity, exc)
                # etcd may still hold it: revoke it on resign so a successor need not wait.
                self._abandoned, self._lease = self._lease, None
        return self.is_leader

    async def run(self) -> None:
        """Campaign and renew every ``ttl / 3`` seconds until cancelled."""
        while True:
            self.step()
            await self.clock.sleep(self.ttl / 3)

    def resign(self) -> None:
        """Give up leadership now (on shutdown) so another replica takes over at once."""
        for lease in (self._lease, self._abandoned):
            if lease is None:
                continue
            try:
                self.backend.revoke(lease)
            except StoreError as exc:
                log.warning("could not resign leadership (it expires by itself): %s", exc)
        self._lease = self._abandoned = None
