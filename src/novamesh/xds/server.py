"""ADS server (state of the world) with per-proxy, per-type ACK/NACK tracking.

Per connection, one coroutine processes everything in order (requests from Envoy and "new
snapshot" wake-ups), so connection state needs no locks. Push order is make-before-break:

1. CDS: the new clusters plus every cluster sent before (old routes may still use them);
2. EDS: answered as soon as Envoy subscribes to the new clusters' names;
3. LDS and RDS: only once CDS is acknowledged and EDS covers the new clusters (or a deadline
   passes), so no route ever points at a cluster Envoy has not warmed;
4. CDS again without the stale clusters, once LDS and RDS are acknowledged.

A version Envoy rejected (NACK) is recorded with Envoy's error and not sent again; the next
different version is.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format

from ..clock import SYSTEM_CLOCK, Clock
from ..model.proxy import METADATA_KEY, Proxy
from ..model.snapshot import MeshSnapshot
from ..observe.controlplane_metrics import XdsHooks, all_acked
from ..translate import SHORT_NAMES, XDS_ORDER, T
from .cache import Packed, ProxyView, TranslationCache, Versioned, version_of

__all__ = ["XdsServer", "TypeState", "Connection", "proxy_from_node"]

log = logging.getLogger(__name__)

_WILDCARD_TYPES = (T.CLUSTER, T.LISTENER)
_EMPTY = Versioned()
_PUSH = object()
_END = object()


@dataclass
class TypeState:
    """What one proxy has of one xDS type."""

    subscribed: bool = False
    names: frozenset[str] | None = None  # None: wildcard
    sent_version: str = ""
    sent_nonce: str = ""
    sent: Mapping[str, Packed] = field(default_factory=dict)  # what sent_version holds (never mutated)
    acked: Mapping[str, Packed] = field(default_factory=dict)  # what acked_version holds
    acked_version: str = ""
    nack_version: str = ""
    nack_error: str = ""
    sent_at: float = 0.0
    acked_at: float = 0.0
    sent_revision: int = -1  # config revision of the snapshot the sent version came from

    def status(self, desired_version: str | None) -> str:
        if not self.sent_version:
            return "NOT SENT"
        if self.nack_version and self.nack_version == self.sent_version:
            return "NACK"
        if self.acked_version == self.sent_version and (desired_version is None or desired_version == self.sent_version):
            return "SYNCED"
        return "STALE"


@dataclass
class Connection:
    """One ADS stream."""

    id: int
    proxy: Proxy
    peer: str
    connected_at: float
    inbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    types: dict[str, TypeState] = field(default_factory=lambda: {t: TypeState() for t in XDS_ORDER})
    stale_clusters: bool = False
    sent_clusters: Mapping[str, Packed] = field(default_factory=dict)
    acked_clusters: Mapping[str, Packed] = field(default_factory=dict)
    gate_deadline: float = 0.0
    gate_timer: asyncio.TimerHandle | None = None


_version = version_of  # memoized on the shared Versioned mappings of the cache


def proxy_from_node(node: Any) -> Proxy:
    """The proxy an ADS node describes: the agent's metadata, else a client-only sidecar from an
    Istio-style node id ``sidecar~ip~id~ns.svc.cluster.local`` (service account "default")."""
    md = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    meta = md.get(METADATA_KEY)
    if isinstance(meta, dict) and meta.get("id"):
        return Proxy.from_metadata(meta)
    # A plain Envoy (no novamesh agent): program it as a client-only sidecar.
    parts = node.id.split("~")
    ns = parts[3].split(".")[0] if len(parts) == 4 and parts[3] else "default"
    return Proxy(id=node.id or "unknown", namespace=ns, address=parts[1] if len(parts) == 4 else "127.0.0.1")


class XdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """The ADS servicer. Call :meth:`update` with each new snapshot."""

    def __init__(self, cache: TranslationCache, *, clock: Clock = SYSTEM_CLOCK, gate_timeout: float = 5.0,
                 push_concurrency: int = 0) -> None:  # fmt: skip
        self.cache = cache
        self._clock = clock
        self._gate_timeout = gate_timeout
        # At most this many connections build and write responses at once (0: no limit): after
        # a restart every proxy reconnects together, and each full response is held in memory
        # until written, so this bounds the control plane's peak memory (Istio: PILOT_PUSH_THROTTLE).
        self._push_slots = asyncio.Semaphore(push_concurrency) if push_concurrency > 0 else None
        self._conns: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self._nonces = itertools.count(1)
        self.pushes: dict[str, int] = {SHORT_NAMES[t]: 0 for t in XDS_ORDER}
        self.nacks = 0
        self.last_nack: dict[str, str] = {}
        self.hooks = XdsHooks()
        """Metrics hooks (push time, NACKs, convergence); the control plane installs real ones."""
        self.on_nack: Callable[[Proxy, str, TypeState], None] | None = None
        """Called (on the event loop) with proxy, type URL and its TypeState after each NACK;
        controlplane/autorollback.py uses it. Must not block."""

    # -- public ---------------------------------------------------------------------------
    def update(self, snapshot: MeshSnapshot) -> None:
        """Install a new snapshot and wake every connection."""
        self.cache.set_snapshot(snapshot)
        now = self._clock.time()
        for conn in self._conns.values():
            self.hooks.changed(conn.id, now)
            conn.inbox.put_nowait(_PUSH)

    def connections(self) -> list[Connection]:
        return sorted(self._conns.values(), key=lambda c: (c.proxy.namespace, c.proxy.service, c.proxy.id))

    def status(self) -> list[dict[str, Any]]:
        """Per proxy and type: SYNCED / STALE / NACK / NOT SENT, with versions and errors."""
        out = []
        for conn in self.connections():
            view = self.cache.view(conn.proxy)
            types = {}
            for t in XDS_ORDER:
                st = conn.types[t]
                desired = self._desired(conn, t, view)
                types[SHORT_NAMES[t]] = {
                    "status": st.status(_version(desired) if st.subscribed else None),
                    "sent_version": st.sent_version,
                    "acked_version": st.acked_version,
                    "error": st.nack_error if st.nack_version == st.sent_version and st.nack_version else "",
                }
            p = conn.proxy
            out.append(
                {
                    "id": p.id,
                    "kind": p.kind,
                    "service": p.service,
                    "namespace": p.namespace,
                    "version": p.version,
                    "address": p.address,
                    "peer": conn.peer,
                    "connected": True,
                    "types": types,
                }
            )
        return out

    # -- gRPC -----------------------------------------------------------------------------
    async def StreamAggregatedResources(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> None:
        conn: Connection | None = None
        inbox: asyncio.Queue[Any] = asyncio.Queue()

        async def reader() -> None:
            try:
                async for req in request_iterator:
                    inbox.put_nowait(req)
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass
            finally:
                inbox.put_nowait(_END)

        read_task = asyncio.create_task(reader(), name="ads-reader")
        try:
            while True:
                item = await inbox.get()
                if item is _END:
                    return
                if item is _PUSH:
                    if conn is not None:
                        await self._sync_throttled(conn, context, forced=set())
                        self.hooks.settled(conn.id, self._clock.time(), all_acked(conn.types.values()), False)
                    continue
                req: discovery_pb2.DiscoveryRequest = item
                if conn is None:
                    proxy = proxy_from_node(req.node)
                    conn = Connection(next(self._ids), proxy, context.peer(), self._clock.time(), inbox=inbox)
                    self._conns[conn.id] = conn
                    log.info("proxy %s (%s.%s) connected from %s", proxy.id, proxy.service, proxy.namespace, conn.peer)
                forced = self._on_request(conn, req)
                await self._sync_throttled(conn, context, forced)
                self.hooks.settled(conn.id, self._clock.time(), all_acked(conn.types.values()), bool(req.response_nonce))
        finally:
            read_task.cancel()
            if conn is not None:
                if conn.gate_timer is not None:
                    conn.gate_timer.cancel()
                self._conns.pop(conn.id, None)
                self.hooks.disconnected(conn.id)
                log.info("proxy %s disconnected", conn.proxy.id)

    # -- protocol -------------------------------------------------------------------------
    def _on_request(self, conn: Connection, req: discovery_pb2.DiscoveryRequest) -> set[str]:
        t = req.type_url
        if t not in conn.types:
            log.debug("proxy %s asked for unsupported type %s", conn.proxy.id, t)
            return set()
        st = conn.types[t]
        if req.response_nonce:
            if req.response_nonce != st.sent_nonce:
                return set()  # stale: an answer to a response that has since been superseded
            if req.HasField("error_detail") and (req.error_detail.code or req.error_detail.message):
                st.nack_version = st.sent_version
                st.nack_error = req.error_detail.message
                if t == T.CLUSTER:  # Envoy keeps what it had: the last acknowledged clusters
                    conn.sent_clusters = conn.acked_clusters
                if t == T.ENDPOINT:  # ... and endpoints (the next response is a delta against them)
                    st.sent = st.acked
                self.nacks += 1
                self.hooks.rejected(SHORT_NAMES[t])
                self.last_nack[conn.proxy.id] = st.nack_error
                log.warning("proxy %s rejected %s version %s: %s", conn.proxy.id, SHORT_NAMES[t], st.sent_version, st.nack_error)
                if self.on_nack is not None:
                    self.on_nack(conn.proxy, t, st)
            else:
                st.acked_version = req.version_info
                st.acked = st.sent
                st.acked_at = self._clock.time()
                if t == T.CLUSTER:
                    conn.acked_clusters = conn.sent_clusters
        names = None if (t in _WILDCARD_TYPES and not req.resource_names) else frozenset(req.resource_names)
        forced: set[str] = set()
        if not st.subscribed or names != st.names or not req.response_nonce:
            forced.add(t)
        st.subscribed = True
        st.names = names
        return forced

    def _desired(self, conn: Connection, t: str, view: ProxyView) -> Versioned:
        available = view.get(t, _EMPTY)
        st = conn.types[t]
        if st.names is None:
            return available
        return available.subset(st.names)  # memoized: proxies of one class share the result

    def _gate_open(self, conn: Connection, view: ProxyView) -> bool:
        """True when LDS/RDS may be sent: clusters acknowledged and their endpoints served."""
        cds, eds = conn.types[T.CLUSTER], conn.types[T.ENDPOINT]
        if self._clock.monotonic() >= conn.gate_deadline > 0:
            return True
        if not cds.sent_version:
            return False
        if cds.acked_version != cds.sent_version and cds.nack_version != cds.sent_version:
            return False
        eds_names = view.get(T.ENDPOINT, _EMPTY).keys() & cds.sent.keys()
        if eds_names and (eds.names is None or not eds_names <= eds.names):
            return False
        return True

    async def _send(self, conn: Connection, context: grpc.aio.ServicerContext, t: str, entries: Mapping[str, Packed],
                    only: Mapping[str, Packed] | None = None) -> None:  # fmt: skip
        """Send ``entries`` as the proxy's new state of type ``t``; with ``only``, a response
        carrying just those resources (EDS: what the proxy lacks, see :meth:`_endpoint_delta`)."""
        started = self._clock.monotonic()
        st = conn.types[t]
        version = _version(entries)
        nonce = str(next(self._nonces))
        if only is not None:
            resp = discovery_pb2.DiscoveryResponse(version_info=version, type_url=t)
            resp.resources.extend(p.any for p in only.values())
        elif isinstance(entries, Versioned):  # prepared once per set the proxies of a class share
            resp = entries.response(t)
        else:
            resp = discovery_pb2.DiscoveryResponse(version_info=version, type_url=t)
            resp.resources.extend(p.any for p in entries.values())
        resp.nonce = nonce
        st.sent_version, st.sent_nonce = version, nonce
        st.sent = entries  # never mutated: views and unions are built anew
        st.sent_at = self._clock.time()
        st.sent_revision = self.cache.snapshot.revision if self.cache.snapshot is not None else -1
        if t == T.CLUSTER:
            conn.sent_clusters = entries
        self.pushes[SHORT_NAMES[t]] += 1
        await context.write(resp)
        self.hooks.pushed(SHORT_NAMES[t], self._clock.monotonic() - started)

    async def _sync_throttled(self, conn: Connection, context: grpc.aio.ServicerContext, forced: set[str]) -> None:
        if self._push_slots is None:
            await self._sync(conn, context, forced)
            return
        async with self._push_slots:
            await self._sync(conn, context, forced)

    async def _sync(self, conn: Connection, context: grpc.aio.ServicerContext, forced: set[str]) -> None:
        """Bring the proxy towards the current snapshot, in make-before-break order."""
        if self.cache.snapshot is None:
            return
        view = self.cache.view(conn.proxy)
        cds = conn.types[T.CLUSTER]
        # 1. clusters: new ones plus everything sent before (removed only once routes moved on)
        rewarm: frozenset[str] = frozenset()
        if cds.subscribed:
            desired = self._desired(conn, T.CLUSTER, view)
            union: Mapping[str, Packed] = desired
            if conn.sent_clusters.keys() - desired.keys():  # keep what old routes may still use
                keep = {n: p for n, p in conn.sent_clusters.items() if n not in desired}
                union = dict(sorted({**keep, **desired}.items()))
            version = _version(union)
            conn.stale_clusters = union is not desired
            if (version != cds.sent_version or T.CLUSTER in forced) and version != cds.nack_version:
                new_names = union.keys() - cds.sent.keys()
                if isinstance(union, Versioned):
                    rewarm = frozenset(union.changed_since(cds.sent).keys() - new_names)
                else:
                    rewarm = frozenset(n for n, p in union.items() if (o := cds.sent.get(n)) is not None and o.digest != p.digest)
                await self._send(conn, context, T.CLUSTER, union)
                if rewarm:
                    # Envoy re-warms a changed EDS cluster and waits for its endpoints again;
                    # its re-subscription looks like a plain ACK, so send them unasked (as
                    # Istio does) instead of letting the cluster sit warming until it times out.
                    forced = forced | {T.ENDPOINT}
                if new_names:
                    conn.gate_deadline = self._clock.monotonic() + self._gate_timeout
                    self._arm_gate_timer(conn)
        # 2. endpoints for whatever Envoy subscribed to
        eds = conn.types[T.ENDPOINT]
        if eds.subscribed:
            desired = self._desired(conn, T.ENDPOINT, view)
            version = _version(desired)
            if (version != eds.sent_version or T.ENDPOINT in forced) and version != eds.nack_version:
                await self._send(conn, context, T.ENDPOINT, desired, self._endpoint_delta(eds, desired, rewarm))
        # 3. listeners and routes, once clusters are warm
        if not self._gate_open(conn, view):
            return
        conn.gate_deadline = 0.0
        for t in (T.LISTENER, T.ROUTE):
            st = conn.types[t]
            if not st.subscribed:
                continue
            desired = self._desired(conn, t, view)
            version = _version(desired)
            if (version != st.sent_version or t in forced) and version != st.nack_version:
                await self._send(conn, context, t, desired)
        # 4. drop clusters nothing references any more
        if conn.stale_clusters:
            lds, rds = conn.types[T.LISTENER], conn.types[T.ROUTE]
            settled = all(
                (not s.subscribed) or s.acked_version == s.sent_version or s.nack_version == s.sent_version
                for s in (lds, rds)
            )
            if settled:
                desired = self._desired(conn, T.CLUSTER, view)
                if _version(desired) != cds.nack_version:
                    await self._send(conn, context, T.CLUSTER, desired)
                conn.stale_clusters = False

    @staticmethod
    def _endpoint_delta(eds: TypeState, desired: Versioned, rewarm: frozenset[str]) -> Mapping[str, Packed] | None:
        """What an EDS response must carry, or None for everything.

        EDS is not a wildcard type: in the state-of-the-world protocol a resource missing from a
        response is *not* removed (Envoy drops endpoints only with their cluster). So after the
        first response only what the proxy lacks is sent: assignments that are new to it or
        changed since the state it acknowledged, plus those of ``rewarm`` (clusters just changed
        in CDS, which Envoy re-warms and waits for endpoints of). One workload joining a mesh
        of 1000 services is then one assignment per proxy, not a thousand."""
        if not eds.sent_version or not eds.sent:
            return None
        delta = desired.changed_since(eds.sent)
        if rewarm:
            extra = {n: desired[n] for n in rewarm if n in desired and n not in delta}
            if extra:
                delta = {**delta, **extra}
        return None if len(delta) == len(desired) else delta

    def _arm_gate_timer(self, conn: Connection) -> None:
        if conn.gate_timer is not None:
            conn.gate_timer.cancel()
        loop = asyncio.get_running_loop()
        conn.gate_timer = loop.call_later(self._gate_timeout + 0.05, conn.inbox.put_nowait, _PUSH)
