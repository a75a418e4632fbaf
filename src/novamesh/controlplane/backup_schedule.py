"""Scheduled automatic backups with retention.

:class:`BackupScheduler` writes a backup (see :mod:`.backup`) into ``backup_dir`` every
``backup_interval`` seconds of its clock, skipping a tick when the config is unchanged since the
last backup it knows of (also one written before a restart), and then keeps only the
``backup_retention`` newest files. Only the leader (``mesh.leader``) writes. A failing write is
logged and retried at the next tick; it never stops the control plane.

File names carry the revision and the UTC time: ``novamesh-backup-r000042-20261125T031500Z.json``;
only files named like that are ever pruned.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..clock import Clock
from ..errors import NovameshError
from .backup import build_backup, read_passphrase, write_backup_file
from .backup_ca import StoreCaMaterial
from .mesh import Mesh

__all__ = ["BackupScheduler", "backup_file_name", "list_backups", "prune_backups", "start_scheduled_backups"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^novamesh-backup-r(\d+)-(\d{8}T\d{6}Z)\.json$")


def backup_file_name(revision: int, created: float) -> str:
    """``novamesh-backup-r<revision, 6 digits>-<UTC yyyymmddThhmmssZ>.json``."""
    stamp = dt.datetime.fromtimestamp(created, dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"novamesh-backup-r{revision:06d}-{stamp}.json"


def list_backups(directory: Path) -> list[Path]:
    """Scheduled backup files in ``directory``, newest first (by time, then revision)."""
    found: list[tuple[str, int, Path]] = []
    if directory.is_dir():
        for path in directory.iterdir():
            m = _NAME.match(path.name)
            if m and path.is_file():
                found.append((m.group(2), int(m.group(1)), path))
    return [p for _, _, p in sorted(found, reverse=True)]


def prune_backups(directory: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest scheduled backups (``keep`` <= 0 keeps all); returns
    the deleted paths. Other files in the directory are never touched."""
    if keep <= 0:
        return []
    removed = []
    for path in list_backups(directory)[keep:]:
        try:
            path.unlink()
            removed.append(path)
        except OSError as exc:
            log.warning("could not delete old backup %s: %s", path, exc)
    return removed


def _fingerprint(manifests: Sequence[Mapping[str, Any]]) -> str:
    keyed = sorted(json.dumps(m, sort_keys=True, separators=(",", ":")) for m in manifests)
    return hashlib.sha256("\n".join(keyed).encode()).hexdigest()


class BackupScheduler:
    """Writes ``mesh``'s config to ``directory`` every ``interval`` seconds; see the module doc."""

    def __init__(
        self,
        mesh: Mesh,
        directory: Path,
        *,
        interval: float,
        retention: int,
        clock: Clock,
        source: str,
        passphrase: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.mesh = mesh
        self.directory = Path(directory)
        self.interval = interval
        self.retention = retention
        self.clock = clock
        self.source = source
        self.passphrase = passphrase
        """Called at every write: a passphrase file can change (or break) while we run."""
        self.written: list[Path] = []
        """Backups written by this scheduler, oldest first."""
        self.ticks = 0
        """Completed ticks (written, skipped or failed), for tests and metrics."""
        self._last: tuple[int, str] | None = None  # (revision, fingerprint) of the newest backup

    def _newest_on_disk(self) -> tuple[int, str] | None:
        for path in list_backups(self.directory):
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                # revision -1: after a wipe the numbers start again, so only the content counts
                return -1, _fingerprint(doc["resources"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable backup %s: %s", path, exc)
        return None

    async def tick(self) -> Path | None:
        """One scheduled round: write a backup unless this replica is not the leader or nothing
        changed since the last backup; then prune. Returns the new file, if any."""
        try:
            if not self.mesh.leader.is_leader:
                return None
            if self._last is None:
                self._last = self._newest_on_disk()
            revision = self.mesh.revision
            if self._last is not None and self._last[0] == revision:
                return None
            manifests = list(self.mesh.store.state_at(revision).values())
            fingerprint = _fingerprint(manifests)
            if self._last is not None and self._last[1] == fingerprint:
                self._last = (revision, fingerprint)
                log.debug("scheduled backup skipped: revision %d has the config of the last backup", revision)
                return None
            created = self.clock.time()
            path = self.directory / backup_file_name(revision, created)
            passphrase = self.passphrase()
            # scrypt and the disk write run off the event loop; the manifests are already copied.
            await asyncio.to_thread(self._write, path, manifests, revision, created, passphrase)
            self._last = (revision, fingerprint)
            self.written.append(path)
            for old in prune_backups(self.directory, self.retention):
                log.info("pruned old backup %s (keeping the %d newest)", old.name, self.retention)
            log.info("scheduled backup of revision %d written to %s", revision, path)
            return path
        except (OSError, NovameshError) as exc:
            log.error("scheduled backup failed (retrying in %.0fs): %s", self.interval, exc)
            return None
        finally:
            self.ticks += 1

    def _write(self, path: Path, manifests: list[dict[str, Any]], revision: int, created: float, passphrase: str | None) -> None:
        doc = build_backup(
            manifests, revision=revision, created=created, source=self.source,
            trust_domain=self.mesh.settings.trust_domain, domain_suffix=self.mesh.settings.domain_suffix,
            passphrase=passphrase,
            # The CA goes in only encrypted: with a passphrase (unsealed scheduled backups skip it).
            ca_material=StoreCaMaterial(self.mesh.store).export_material() if passphrase else None,
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        write_backup_file(path, doc)

    async def run(self) -> None:
        """Tick every ``interval`` seconds until cancelled."""
        while True:
            await self.clock.sleep(self.interval)
            await self.tick()


def start_scheduled_backups(tg: asyncio.TaskGroup, mesh: Mesh, clock: Clock) -> asyncio.Task[None] | None:
    """The control plane's hook: start the scheduler in ``tg`` when ``backup_interval`` > 0
    (returns its task, for cancelling at shutdown), else None. The passphrase (file or
    environment) is read at every write; an unreadable one is logged now and fails each
    backup loudly (never an unsealed backup instead) while the control plane keeps serving."""
    s = mesh.settings
    if s.backup_interval <= 0:
        return None
    directory = Path(s.backup_dir) if s.backup_dir else Path(s.data_dir) / "backups"


    def passphrase() -> str | None:
        return read_passphrase(s.backup_passphrase_file or None)

    try:
        passphrase()
    except NovameshError as exc:
        log.error("scheduled backups will fail until this is fixed: %s", exc)
    scheduler = BackupScheduler(
        mesh, directory, interval=s.backup_interval, retention=s.backup_retention, clock=clock,
        source=f"http://{s.bind_host}:{s.http_port}", passphrase=passphrase,
    )
    log.info("scheduled backups every %gs into %s, keeping %d", s.backup_interval, directory, s.backup_retention)
    return tg.create_task(scheduler.run(), name="scheduled-backups")
