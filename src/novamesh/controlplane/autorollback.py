"""Automatic rollback when proxies NACK a new revision (setting ``auto_rollback_on_nack``).

The xDS server calls :meth:`AutoRollback.on_nack` (its ``on_nack`` hook) whenever a proxy
rejects a resource type; the NACKed version is tagged with the config revision of the snapshot it
came from. When the setting is on and that revision is still the newest one, the control plane
makes a new revision equal to the one before it (``Mesh.rollback``, author ``novamesh``, message
``automatic rollback: <proxy> rejected <type>: <error>``) and logs it loudly.

It never loops:

- each revision is rolled back at most once, however many proxies NACK it;
- a revision written by an automatic rollback is never rolled back automatically;
- a NACK for an older revision (someone already applied or rolled back) is ignored;
- only revisions younger than ``auto_rollback_window`` seconds qualify, so a proxy that
  connects days later and NACKs long-standing config does not rewrite history behind anyone's
  back (it shows up as NACK in ``proxy-status`` instead).

The hook only queues; :meth:`run` (a task of the control plane's TaskGroup) does the rollback,
through :func:`~novamesh.controlplane.guard.guarded` so Envoy validation stays off the loop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..clock import Clock
from ..errors import NovameshError
from ..model.proxy import Proxy
from ..translate import SHORT_NAMES
from ..xds.server import TypeState
from .guard import guarded

if TYPE_CHECKING:
    from .mesh import ApplyResult, Mesh

__all__ = ["AUTHOR", "AutoRollback", "Nack"]

log = logging.getLogger(__name__)

AUTHOR = "novamesh"
"""Author of automatic rollback revisions."""
_PREFIX = "automatic rollback"


@dataclass(frozen=True)
class Nack:
    """One rejected configuration: which proxy, which type, Envoy's error, which revision."""

    proxy: str
    type_name: str
    error: str
    revision: int


class AutoRollback:
    """Rolls a revision back once when proxies reject it. Wire with :meth:`attach`."""

    def __init__(self, mesh: Mesh, clock: Clock) -> None:
        self.mesh = mesh
        self.clock = clock
        self._queue: asyncio.Queue[Nack] = asyncio.Queue()
        self._claimed: set[int] = set()
        self.performed: list[tuple[Nack, int]] = []
        """(the NACK, the rollback revision) of every automatic rollback, oldest first."""

    def attach(self) -> None:
        """Install :meth:`on_nack` as the xDS server's NACK hook."""
        self.mesh.xds.on_nack = self.on_nack

    def on_nack(self, proxy: Proxy, type_url: str, state: TypeState) -> None:
        """The xDS hook: queue the NACK if it may trigger a rollback. Never raises, never blocks."""
        try:
            if not self.mesh.settings.auto_rollback_on_nack:
                return
            rev = state.sent_revision
            if rev <= 0 or rev in self._claimed or rev != self.mesh.revision:
                return
            self._claimed.add(rev)
            self._queue.put_nowait(Nack(proxy.id, SHORT_NAMES.get(type_url, type_url), state.nack_error, rev))
        except Exception:  # noqa: BLE001 - the xDS stream must survive a bug here
            log.exception("automatic rollback: NACK hook failed")

    async def run(self) -> None:
        """Process queued NACKs until cancelled."""
        while True:
            nack = await self._queue.get()
            await self.handle(nack)

    async def handle(self, nack: Nack) -> ApplyResult | None:
        """Roll ``nack.revision`` back if it still qualifies; the rollback result, else None."""
        mesh = self.mesh
        try:
            mesh.reload()
            if mesh.revision != nack.revision:
                log.info("automatic rollback: %s rejected %s of revision %d, but revision %d is newer; nothing to do",
                         nack.proxy, nack.type_name, nack.revision, mesh.revision)
                return None
            latest = mesh.history(limit=1)
            if latest and latest[0].number == nack.revision:
                top = latest[0]
                if top.author == AUTHOR and top.message.startswith(_PREFIX):
                    log.error("automatic rollback: revision %d (itself an automatic rollback) is rejected by %s (%s: %s); "
                              "not rolling back again, fix the config by hand", nack.revision, nack.proxy, nack.type_name, nack.error)
                    return None
                age = self.clock.time() - top.time
                if age > mesh.settings.auto_rollback_window:
                    log.error("automatic rollback: revision %d is rejected by %s (%s: %s) but is %.0fs old "
                              "(auto_rollback_window %.0fs); not rolling back", nack.revision, nack.proxy, nack.type_name,
                              nack.error, age, mesh.settings.auto_rollback_window)
                    return None
            message = f"{_PREFIX}: {nack.proxy} rejected {nack.type_name}: {nack.error}"
            if len(message) > 500:
                message = message[:497] + "..."
            result = await guarded(mesh, lambda: mesh.rollback(nack.revision - 1, author=AUTHOR, message=message))
        except NovameshError as exc:
            log.error("automatic rollback of revision %d FAILED (proxy %s rejected %s: %s): %s",
                      nack.revision, nack.proxy, nack.type_name, nack.error, exc)
            return None
        self.performed.append((nack, result.revision))
        log.error(
            "AUTOMATIC ROLLBACK: proxy %s rejected %s of revision %d (%s); revision %d restores revision %d. "
            "See `novamesh history` and `novamesh diff %d %d`.",
            nack.proxy, nack.type_name, nack.revision, nack.error, result.revision, nack.revision - 1,
            nack.revision - 1, nack.revision,
        )
        return result
