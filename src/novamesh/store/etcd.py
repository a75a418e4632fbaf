"""Config store on etcd v3, for a highly available control plane (several replicas, one etcd).

The store talks to etcd's gRPC-gateway JSON API (``/v3/kv/range``, ``/v3/kv/txn``, ``/v3/watch``,
``/v3/lease/*``; present in every etcd >= 3.4) with :mod:`httpx`, which novamesh already depends
on. The :class:`~novamesh.store.base.ConfigStore` protocol is synchronous (it is called from the
REST handlers and the Mesh), and every call is one short HTTP request to loopback or LAN.

Layout under ``prefix`` (default ``/novamesh/``)::

    rev                       the current revision number (decimal)
    res/<kind>/<ns>/<name>    {"manifest": {...}, "rev": N}
    revs/<N, 12 digits>       {"time", "author", "message", "changes": [...]}
    wl/<workload id>          {"data": {...}, "expires_at": t}   attached to an etcd lease

Every commit is ONE etcd transaction guarded by the ``rev`` key's ``mod_revision``: two replicas
writing at once cannot both get the same number; the loser re-reads and retries once, then
raises :class:`~novamesh.errors.ConflictError`. Every failure to reach etcd raises
:class:`~novamesh.errors.StoreError` ("etcd at HOST:PORT unreachable: ...").

:meth:`EtcdStore.watch` streams changes under the prefix so every replica rebuilds its snapshot
when another one commits (or a workload lease changes).
"""

from __future__ import annotations

import base64
import builtins
import json
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..clock import SYSTEM_CLOCK, Clock
from ..config.resource import ResourceKey
from ..errors import ConflictError, StoreError
from .base import Change, Revision, StoredObject

__all__ = ["EtcdStore", "parse_etcd_url"]

log = logging.getLogger(__name__)


def parse_etcd_url(url: str) -> list[str]:
    """``etcd://h1:p1,h2:p2`` -> ``["http://h1:p1", "http://h2:p2"]``; StoreError if malformed."""
    if not url.startswith("etcd://"):
        raise StoreError(f"store URL {url!r} is not an etcd URL; use etcd://HOST:PORT[,HOST:PORT...]")
    endpoints = []
    for part in url[len("etcd://"):].strip("/").split(","):
        part = part.strip()
        parsed = urlsplit(f"http://{part}")
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None:
            raise StoreError(f"store URL {url!r}: {part!r} is not HOST:PORT (e.g. etcd://127.0.0.1:2379)")
        endpoints.append(f"http://{part}")
    return endpoints


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def _range_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def _canon(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"))


class EtcdStore:
    """:class:`novamesh.store.base.ConfigStore` on etcd. ``endpoints`` are ``http://host:port``
    client URLs of the etcd members (tried in order on connection failure); ``transport`` lets
    tests plug in :class:`httpx.MockTransport`."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str = "/novamesh/",
        clock: Clock = SYSTEM_CLOCK,
        timeout: float = 2.0,
        watch_retry: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not endpoints:
            raise StoreError("an etcd store needs at least one endpoint (etcd://HOST:PORT)")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self._clock = clock
        self._timeout = timeout
        self._watch_retry = watch_retry
        self._preferred = 0
        self._http = httpx.Client(timeout=timeout, transport=transport, trust_env=False)
        self._subscribers: list[Callable[[int], None]] = []

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> EtcdStore:
        """A store for ``etcd://host:port[,host:port...]``."""
        return cls(parse_etcd_url(url), **kwargs)

    @property
    def where(self) -> str:
        """The endpoints, for messages: ``127.0.0.1:2379,127.0.0.1:22379``."""
        return ",".join(e.split("://", 1)[-1] for e in self.endpoints)

    # -- transport --------------------------------------------------------------------------
    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` on the first member that answers."""
        errors: list[str] = []
        n = len(self.endpoints)
        for i in range(n):
            idx = (self._preferred + i) % n
            url = f"{self.endpoints[idx]}/v3/{path}"
            try:
                resp = self._http.post(url, json=body)
            except httpx.TransportError as exc:
                errors.append(f"{self.endpoints[idx]}: {exc.__class__.__name__}: {exc}")
                continue
            if resp.status_code >= 500 and i + 1 < n:
                errors.append(f"{self.endpoints[idx]}: {resp.status_code} {resp.text[:200]}")
                continue
            if not resp.is_success:
                raise StoreError(f"etcd at {self.where} refused {path}: {resp.status_code} {resp.text[:300]}")
            self._preferred = idx
            data = resp.json()
            return data if isinstance(data, dict) else {}
        raise StoreError(
            f"etcd at {self.where} unreachable: {'; '.join(errors)} "
            "(is etcd running? writes are refused until it is back; proxies keep their config)"
        )

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _range(self, key: str, *, prefix: bool = False, **extra: Any) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"key": _b64(key), **extra}
        if prefix:
            body["range_end"] = _range_end(key)
        kvs = self.call("kv/range", body).get("kvs") or []
        return [kv for kv in kvs if isinstance(kv, dict)]

    def _rev_kv(self) -> tuple[int, int]:
        """(our revision number, the etcd mod_revision of the ``rev`` key; 0 if absent)."""
        kvs = self._range(self._key("rev"))
        if not kvs:
            return 0, 0
        return int(_unb64(kvs[0].get("value", ""))), int(kvs[0].get("mod_revision", 0))

    @staticmethod
    def _res_key_parts(key: ResourceKey) -> tuple[str, str, str]:
        return key[0], key[1], key[2]

    # -- ConfigStore --------------------------------------------------------------------------
    def current_revision(self) -> int:
        return self._rev_kv()[0]

    def list(self) -> builtins.list[StoredObject]:
        out = []
        for kv in self._range(self._key("res", ""), prefix=True):
            kind, ns, name = _unb64(kv["key"])[len(self._key("res", "")):].split("/", 2)
            obj = json.loads(_unb64(kv.get("value", "")))
            out.append(StoredObject((kind, ns, name), obj["manifest"], int(obj["rev"])))
        return sorted(out, key=lambda o: o.key)

    def get(self, key: ResourceKey) -> StoredObject | None:
        kvs = self._range(self._key("res", *self._res_key_parts(key)))
        if not kvs:
            return None
        obj = json.loads(_unb64(kvs[0].get("value", "")))
        return StoredObject(key, obj["manifest"], int(obj["rev"]))

    def commit(
        self,
        puts: Sequence[tuple[ResourceKey, dict[str, Any]]],
        deletes: Sequence[ResourceKey],
        *,
        author: str = "",
        message: str = "",
    ) -> Revision:
        try:
            rev = self._commit_once(puts, deletes, author, message)
        except ConflictError:
            log.info("etcd commit raced with another replica; retrying once on the new state")
            rev = self._commit_once(puts, deletes, author, message)
        if rev.changes:
            for cb in builtins.list(self._subscribers):
                cb(rev.number)
        return rev

    def _commit_once(
        self, puts: Sequence[tuple[ResourceKey, dict[str, Any]]], deletes: Sequence[ResourceKey], author: str, message: str
    ) -> Revision:
        now = self._clock.time()
        number, mod = self._rev_kv()
        changes: builtins.list[Change] = []
        for key, manifest in puts:
            old = self.get(key)
            if old is not None and _canon(old.manifest) == _canon(manifest):
                continue
            changes.append(Change(key, "configured" if old else "created", manifest))
        for key in deletes:
            if self.get(key) is not None:
                changes.append(Change(key, "deleted", None))
        if not changes:
            return Revision(number, now, author, message, ())
        new = number + 1
        ops: builtins.list[dict[str, Any]] = [
            {"request_put": {"key": _b64(self._key("rev")), "value": _b64(str(new))}}
        ]
        for ch in changes:
            rkey = _b64(self._key("res", *self._res_key_parts(ch.key)))
            if ch.manifest is None:
                ops.append({"request_delete_range": {"key": rkey}})
            else:
                ops.append({"request_put": {"key": rkey, "value": _b64(json.dumps({"manifest": ch.manifest, "rev": new}))}})
        record = {
            "time": now, "author": author, "message": message,
            "changes": [{"key": builtins.list(c.key), "op": c.op, "manifest": c.manifest} for c in changes],
        }  # fmt: skip
        ops.append({"request_put": {"key": _b64(self._key("revs", f"{new:012d}")), "value": _b64(json.dumps(record))}})
        compare = {"key": _b64(self._key("rev")), "result": "EQUAL", "target": "MOD", "mod_revision": str(mod)}
        answer = self.call("kv/txn", {"compare": [compare], "success": ops, "failure": []})
        if not answer.get("succeeded"):
            raise ConflictError(
                f"revision {new} was taken by another control-plane replica while this one committed; "
                "apply again (the store is unchanged by this attempt)"
            )
        return Revision(new, now, author, message, tuple(changes))

    @staticmethod
    def _revision_from(kv: dict[str, Any]) -> Revision:
        number = int(_unb64(kv["key"]).rsplit("/", 1)[1])
        rec = json.loads(_unb64(kv.get("value", "")))
        changes = tuple(
            sorted(
                (Change((c["key"][0], c["key"][1], c["key"][2]), str(c["op"]), c.get("manifest")) for c in rec["changes"]),
                key=lambda c: c.key,
            )
        )
        return Revision(number, float(rec["time"]), str(rec["author"]), str(rec["message"]), changes)

    def revisions(self, limit: int = 50, key: ResourceKey | None = None) -> builtins.list[Revision]:
        base = self._key("revs", "")
        if key is None:
            kvs = self._range(base, prefix=True, sort_order="DESCEND", sort_target="KEY", limit=str(limit))
            return [self._revision_from(kv) for kv in kvs]
        out = []
        for kv in self._range(base, prefix=True, sort_order="DESCEND", sort_target="KEY"):
            rev = self._revision_from(kv)
            if any(c.key == key for c in rev.changes):
                out.append(rev)
                if len(out) >= limit:
                    break
        return out

    def state_at(self, revision: int) -> dict[ResourceKey, dict[str, Any]]:
        if revision <= 0:
            return {}
        body: dict[str, Any] = {
            "key": _b64(self._key("revs", "")),
            "range_end": _b64(self._key("revs", f"{revision + 1:012d}")),
            "sort_order": "ASCEND", "sort_target": "KEY",
        }  # fmt: skip
        state: dict[ResourceKey, dict[str, Any]] = {}
        for kv in self.call("kv/range", body).get("kvs") or []:
            for ch in self._revision_from(kv).changes:
                if ch.manifest is None:
                    state.pop(ch.key, None)
                else:
                    state[ch.key] = ch.manifest
        return state

    def subscribe(self, callback: Callable[[int], None]) -> None:
        self._subscribers.append(callback)

    # -- workload leases -------------------------------------------------------------------------
    def grant_lease(self, ttl: float) -> int:
        """A new etcd lease of ``ttl`` seconds (rounded up, at least 1); returns its id."""
        answer = self.call("lease/grant", {"TTL": str(max(1, math.ceil(ttl)))})
        return int(answer["ID"])

    def keepalive(self, lease: int) -> bool:
        """Refresh ``lease``; False when etcd no longer knows it (it expired)."""
        answer = self.call("lease/keepalive", {"ID": str(lease)})
        result = answer.get("result", answer)
        return int(result.get("TTL", 0) or 0) > 0

    def revoke(self, lease: int) -> None:
        """Drop ``lease`` and every key attached to it (an unknown lease is fine)."""
        try:
            self.call("lease/revoke", {"ID": str(lease)})
        except StoreError as exc:
            if "not found" not in str(exc):
                raise

    def create_if_absent(self, key: str, value: str, lease: int) -> bool:
        """Put ``prefix+key`` attached to ``lease`` only if it does not exist; True if created."""
        full = _b64(self._key(key))
        compare = {"key": full, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}
        put = {"request_put": {"key": full, "value": _b64(value), "lease": str(lease)}}
        return bool(self.call("kv/txn", {"compare": [compare], "success": [put], "failure": []}).get("succeeded"))

    def read(self, key: str) -> str | None:
        """The value of ``prefix+key`` or None."""
        kvs = self._range(self._key(key))
        return _unb64(kvs[0].get("value", "")) if kvs else None

    def save_workload(self, workload_id: str, data: dict[str, Any], expires_at: float) -> None:
        # The etcd lease removes the key by itself if every replica is gone; one lease per save
        # (a heartbeat may land on any replica), the previous one simply runs out.
        lease = self.grant_lease(expires_at - self._clock.time() + 1)
        value = json.dumps({"data": data, "expires_at": expires_at})
        self.call("kv/put", {"key": _b64(self._key("wl", workload_id)), "value": _b64(value), "lease": str(lease)})

    def delete_workload(self, workload_id: str) -> None:
        self.call("kv/deleterange", {"key": _b64(self._key("wl", workload_id))})

    def load_workloads(self) -> builtins.list[tuple[dict[str, Any], float]]:
        out = []
        for kv in self._range(self._key("wl", ""), prefix=True):
            obj = json.loads(_unb64(kv.get("value", "")))
            out.append((dict(obj["data"]), float(obj["expires_at"])))
        return out

    def get_secret(self, name: str) -> bytes | None:
        kvs = self._range(self._key("secret", name))
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    def put_secret(self, name: str, value: bytes | None) -> None:
        key = _b64(self._key("secret", name))
        if value is None:
            self.call("kv/deleterange", {"key": key})
        else:
            self.call("kv/put", {"key": key, "value": base64.b64encode(value).decode()})

    def close(self) -> None:
        self._http.close()

    # -- watch -------------------------------------------------------------------------------------
    async def watch(self, on_config: Callable[[int], None], on_workloads: Callable[[], None]) -> None:
        """Until cancelled: stream every change under the prefix; call ``on_config(revision)``
        after a commit (by any replica) and ``on_workloads()`` after a workload lease changed.
        After every (re)connection both are called once, so nothing missed during an outage is
        lost."""
        rev_key, wl_prefix = self._key("rev"), self._key("wl", "")
        outage = False
        n = 0
        async with httpx.AsyncClient(timeout=httpx.Timeout(self._timeout, read=None), trust_env=False) as client:
            while True:
                endpoint = self.endpoints[n % len(self.endpoints)]
                n += 1
                create = {"create_request": {"key": _b64(self.prefix), "range_end": _range_end(self.prefix)}}
                try:
                    async with client.stream("POST", f"{endpoint}/v3/watch", json=create) as resp:
                        if resp.status_code != 200:  # e.g. 408/503 while the member has no quorum
                            raise httpx.HTTPStatusError(f"watch answered {resp.status_code}", request=resp.request, response=resp)
                        if outage:
                            log.warning("etcd watch on %s resumed", endpoint)
                        outage = False
                        async for line in resp.aiter_lines():
                            if not line.strip():
                                continue
                            result = json.loads(line).get("result") or {}
                            if result.get("created"):
                                # Resync after (re)connecting: changes may have happened meanwhile.
                                self._notify(on_config, on_workloads, config=True, workloads=True)
                                continue
                            keys = [_unb64(ev["kv"]["key"]) for ev in result.get("events") or [] if "kv" in ev]
                            self._notify(
                                on_config, on_workloads,
                                config=rev_key in keys, workloads=any(k.startswith(wl_prefix) for k in keys),
                            )  # fmt: skip
                except (httpx.HTTPError, ValueError) as exc:
                    if not outage:
                        log.warning("etcd watch on %s lost (%s); retrying every %.1fs", endpoint, exc, self._watch_retry)
                    outage = True
                await self._clock.sleep(self._watch_retry)

    def _notify(self, on_config: Callable[[int], None], on_workloads: Callable[[], None], *, config: bool, workloads: bool) -> None:
        try:
            if config:
                on_config(self.current_revision())
            if workloads:
                on_workloads()
        except StoreError as exc:  # etcd went away between the event and our read: resync later
            log.warning("cannot reload after an etcd change: %s", exc)
        except Exception:  # noqa: BLE001 - a bad record must not stop the watch (or the replica)
            log.exception("reloading after an etcd change failed; the previous state stays in use")

