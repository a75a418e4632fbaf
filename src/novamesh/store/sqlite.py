"""Embedded config store on SQLite (stdlib ``sqlite3``), one file in the data dir."""

from __future__ import annotations

import builtins

import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..config.resource import ResourceKey
from ..errors import StoreError
from .base import Change, Revision, StoredObject

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS revisions (
    rev INTEGER PRIMARY KEY, time REAL NOT NULL, author TEXT NOT NULL, message TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    manifest TEXT NOT NULL, rev INTEGER NOT NULL, PRIMARY KEY (kind, namespace, name));
CREATE TABLE IF NOT EXISTS changes (
    rev INTEGER NOT NULL, kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    op TEXT NOT NULL, manifest TEXT);
CREATE INDEX IF NOT EXISTS changes_rev ON changes (rev);
CREATE TABLE IF NOT EXISTS workloads (
    id TEXT PRIMARY KEY, data TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


def _canon(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"))


class SqliteStore:
    """:class:`novamesh.store.base.ConfigStore` backed by ``<data_dir>/store.db``."""

    def __init__(self, path: str | Path, clock: Clock = SYSTEM_CLOCK) -> None:
        self._path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[int], None]] = []
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self._path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the config store at {self._path}: {exc}") from exc

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return list(self._db.execute(sql, args))
        except sqlite3.Error as exc:
            raise StoreError(f"config store {self._path}: {exc}") from exc

    def current_revision(self) -> int:
        rows = self._q("SELECT COALESCE(MAX(rev), 0) FROM revisions")
        return int(rows[0][0])

    def list(self) -> list[StoredObject]:
        rows = self._q("SELECT kind, namespace, name, manifest, rev FROM resources ORDER BY kind, namespace, name")
        return [StoredObject((r[0], r[1], r[2]), json.loads(r[3]), int(r[4])) for r in rows]

    def get(self, key: ResourceKey) -> StoredObject | None:
        rows = self._q(
            "SELECT manifest, rev FROM resources WHERE kind=? AND namespace=? AND name=?", key
        )
        if not rows:
            return None
        return StoredObject(key, json.loads(rows[0][0]), int(rows[0][1]))

    def commit(
        self,
        puts: Sequence[tuple[ResourceKey, dict[str, Any]]],
        deletes: Sequence[ResourceKey],
        *,
        author: str = "",
        message: str = "",
    ) -> Revision:
        now = self._clock.time()
        try:
            with self._lock:
                cur = self._db.cursor()
                cur.execute("BEGIN IMMEDIATE")
                try:
                    rev = int(cur.execute("SELECT COALESCE(MAX(rev), 0) FROM revisions").fetchone()[0])
                    changes: list[Change] = []
                    for key, manifest in puts:
                        row = cur.execute(
                            "SELECT manifest FROM resources WHERE kind=? AND namespace=? AND name=?", key
                        ).fetchone()
                        if row is not None and row[0] == _canon(manifest):
                            continue
                        changes.append(Change(key, "configured" if row else "created", manifest))
                    for key in deletes:
                        row = cur.execute(
                            "SELECT 1 FROM resources WHERE kind=? AND namespace=? AND name=?", key
                        ).fetchone()
                        if row is not None:
                            changes.append(Change(key, "deleted", None))
                    if not changes:
                        cur.execute("ROLLBACK")
                        return Revision(rev, now, author, message, ())
                    rev += 1
                    cur.execute("INSERT INTO revisions VALUES (?, ?, ?, ?)", (rev, now, author, message))
                    for ch in changes:
                        if ch.manifest is None:
                            cur.execute("DELETE FROM resources WHERE kind=? AND namespace=? AND name=?", ch.key)
                        else:
                            cur.execute(
                                "INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?, ?)",
                                (*ch.key, _canon(ch.manifest), rev),
                            )
                        cur.execute(
                            "INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?)",
                            (rev, *ch.key, ch.op, None if ch.manifest is None else _canon(ch.manifest)),
                        )
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StoreError(f"config store {self._path}: commit failed: {exc}") from exc
        for cb in list(self._subscribers):
            cb(rev)
        return Revision(rev, now, author, message, tuple(changes))

    def revisions(self, limit: int = 50, key: ResourceKey | None = None) -> builtins.list[Revision]:
        if key is None:
            revs = self._q("SELECT rev, time, author, message FROM revisions ORDER BY rev DESC LIMIT ?", (limit,))
        else:
            revs = self._q(
                "SELECT r.rev, r.time, r.author, r.message FROM revisions r WHERE r.rev IN "
                "(SELECT rev FROM changes WHERE kind=? AND namespace=? AND name=?) ORDER BY r.rev DESC LIMIT ?",
                (*key, limit),
            )
        out = []
        for rev, t, author, message in revs:
            rows = self._q("SELECT kind, namespace, name, op, manifest FROM changes WHERE rev=? ORDER BY kind, namespace, name", (rev,))
            changes = tuple(
                Change((r[0], r[1], r[2]), r[3], None if r[4] is None else json.loads(r[4])) for r in rows
            )
            out.append(Revision(int(rev), float(t), author, message, changes))
        return out

    def state_at(self, revision: int) -> dict[ResourceKey, dict[str, Any]]:
        # Replay: the last change of each key at or before the revision decides its state.
        rows = self._q(
            "SELECT c.kind, c.namespace, c.name, c.manifest FROM changes c JOIN ("
            " SELECT kind, namespace, name, MAX(rev) AS rev FROM changes WHERE rev <= ?"
            " GROUP BY kind, namespace, name) last"
            " ON c.kind = last.kind AND c.namespace = last.namespace AND c.name = last.name AND c.rev = last.rev",
            (revision,),
        )
        return {(r[0], r[1], r[2]): json.loads(r[3]) for r in rows if r[3] is not None}

    def subscribe(self, callback: Callable[[int], None]) -> None:
        self._subscribers.append(callback)

    def save_workload(self, workload_id: str, data: dict[str, Any], expires_at: float) -> None:
        self._q("INSERT OR REPLACE INTO workloads VALUES (?, ?, ?)", (workload_id, json.dumps(data), expires_at))

    def delete_workload(self, workload_id: str) -> None:
        self._q("DELETE FROM workloads WHERE id=?", (workload_id,))

    def load_workloads(self) -> builtins.list[tuple[dict[str, Any], float]]:
        return [(json.loads(d), float(e)) for d, e in self._q("SELECT data, expires_at FROM workloads")]

    def get_secret(self, name: str) -> bytes | None:
        rows = self._q("SELECT value FROM secrets WHERE name=?", (name,))
        return bytes(rows[0][0]) if rows else None

    def put_secret(self, name: str, value: bytes | None) -> None:
        if value is None:
            self._q("DELETE FROM secrets WHERE name=?", (name,))
        else:
            self._q("INSERT OR REPLACE INTO secrets VALUES (?, ?)", (name, value))

    def close(self) -> None:
        with self._lock:
            self._db.close()
