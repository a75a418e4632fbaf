"""Translation cache: one class translation per (snapshot, proxy class), packed once.

Each resource is stored with a content hash, so the server can tell cheaply whether what a proxy
would get differs from what it already has.

Per-proxy work is kept small, because it runs once per connected proxy after every change:

* a class translation is packed once (per certificate *variant*: proxies without a mesh
  certificate get the class clusters without mesh mTLS, stripped once per class, not per proxy);
* a per-proxy view reuses the class's packed resources wherever ``translate_proxy`` kept the
  class's resource object; where a whole type is the class's (endpoints, routes, often
  clusters), the proxy gets the class's :class:`Versioned` mapping itself, so its version, its
  name-filtered subsets and its prepared ``DiscoveryResponse`` are computed once per class;
* a resource whose content was packed under the previous snapshot is not parsed again (packing
  is by content digest), so a change re-parses only what it changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from ..model.proxy import Proxy
from ..model.snapshot import MeshSnapshot
from ..translate import T, ClassKey, Resources, TranslateOptions, class_key, consistency_errors, translate_class, translate_proxy
from ..translate.proxy import class_inputs
from ..translate.mtls import has_identity, strip_mesh_tls
from ..translate.protos import MESSAGE_TYPES, to_any

__all__ = ["Packed", "Versioned", "ProxyView", "TranslationCache", "version_of", "content_digest"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Packed:
    """A resource ready to send: its packed message and content hash."""

    any: any_pb2.Any
    digest: str


def version_of(entries: Mapping[str, Packed]) -> str:
    """The xDS version of a set of resources: a hash of their names and content digests."""
    if isinstance(entries, Versioned):
        return entries.version
    return _hash(entries)


def _hash(entries: Mapping[str, Packed]) -> str:
    # One update over the concatenation hashes the same bytes as one update per name and digest.
    return hashlib.sha256("".join([n + entries[n].digest for n in sorted(entries)]).encode()).hexdigest()[:12]


class Versioned(dict[str, Packed]):
    """One xDS type's resources for a proxy (name -> :class:`Packed`), never changed once built.

    Memoizes what the server derives from it (the version, the subsets Envoy subscribes to by
    name and, when ``shared`` by the proxies of a class, the prepared ``DiscoveryResponse``), so
    proxies that share one instance share that work. ``base``/``extra``: built as the shared
    ``base`` plus a few per-proxy resources (``extra``, no name of ``base`` among them), so a
    response copies the base's prepared message and appends the extras instead of packing every
    resource into a new message.
    """

    __slots__ = ("_version", "_subsets", "_response", "_changes", "shared", "base", "extra")

    def __init__(self, entries: Iterable[tuple[str, Packed]] = (), *, shared: bool = False, base: Versioned | None = None,
                 extra: tuple[Packed, ...] = ()) -> None:
        super().__init__(entries)
        self._version = ""
        self._subsets: dict[frozenset[str], Versioned] = {}
        self._changes: list[tuple[Mapping[str, Packed], dict[str, Packed]]] = []
        self._response: discovery_pb2.DiscoveryResponse | None = None
        self.shared = shared
        """Used by many proxies: keep the prepared response (a per-proxy one would hold a copy of every resource)."""
        self.base = base
        self.extra = extra

    @property
    def version(self) -> str:
        if not self._version:
            self._version = _hash(self)
        return self._version

    def subset(self, names: frozenset[str]) -> Versioned:
        """The resources named in ``names`` (what Envoy subscribed to), sorted by name."""
        out = self._subsets.get(names)
        if out is None:
            out = self if names.issuperset(self) else Versioned(((n, self[n]) for n in sorted(names) if n in self), shared=self.shared)
            if len(self._subsets) < 64:  # bounded: subscriptions of one class are nearly always alike
                self._subsets[names] = out
        return out

    def changed_since(self, old: Mapping[str, Packed]) -> dict[str, Packed]:
        """The entries that ``old`` lacks or holds with another content. Memoized per ``old``
        (by identity, holding it), so the proxies of a class that had the same set compute
        it once."""
        for seen, changes in self._changes:
            if seen is old:
                return changes
        changes = {n: p for n, p in self.items() if (o := old.get(n)) is None or o.digest != p.digest}
        self._changes = [*self._changes[-3:], (old, changes)]  # the last few predecessors
        return changes

    def response(self, type_url: str) -> discovery_pb2.DiscoveryResponse:
        """A new DiscoveryResponse with these resources and version (no nonce yet), the caller's to
        change. Shared sets prepare it once and copy it (in C) for each call."""
        if self._response is not None:
            resp = discovery_pb2.DiscoveryResponse()
            resp.CopyFrom(self._response)
            return resp
        if self.base is not None:
            resp = self.base.response(type_url)
            resp.resources.extend(p.any for p in self.extra)
        else:
            resp = discovery_pb2.DiscoveryResponse()
            resp.resources.extend(p.any for p in self.values())
        resp.version_info, resp.type_url = self.version, type_url
        if not self.shared:
            return resp
        self._response = resp
        return self.response(type_url)


_NONE = Versioned(shared=True)  # a type the class has no resources of (never filled)

ProxyView = dict[str, Versioned]
"""type URL -> name -> Packed: everything one proxy should have."""


def content_digest(resource: Mapping[str, Any]) -> str:
    """The content hash of one resource (its JSON with sorted keys): what the cache reuses packs
    by, and what guarded apply remembers accepted resources by."""
    return hashlib.sha256(json.dumps(resource, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class _Base:
    """A class translation as given to ``translate_proxy`` for one certificate variant, packed."""

    raw: Resources
    packed: dict[str, Versioned]


@dataclass
class _ClassEntry:
    raw: Resources
    bases: dict[bool, _Base] = field(default_factory=dict)  # has a mesh certificate -> base


class TranslationCache:
    """Holds the current snapshot and its class translations."""

    def __init__(self, opts: TranslateOptions) -> None:
        self._opts = opts
        self._snapshot: MeshSnapshot | None = None
        self._classes: dict[ClassKey, _ClassEntry] = {}
        self._keys: dict[tuple[object, ...], ClassKey] = {}  # class_inputs(proxy) -> its class key
        self._proxy_cache: dict[tuple[str, Proxy], ProxyView] = {}
        self._packs: dict[tuple[str, str], Packed] = {}
        self._previous_packs: dict[tuple[str, str], Packed] = {}
        self._own: dict[tuple[Proxy, str, str], tuple[dict[str, Any], Packed]] = {}
        self._previous_own: dict[tuple[Proxy, str, str], tuple[dict[str, Any], Packed]] = {}
        self.translations = 0
        """Class translations performed (for metrics and benchmarks)."""
        self.packed = 0
        """Resources parsed into protobuf (the rest were reused by content digest)."""

    @property
    def snapshot(self) -> MeshSnapshot | None:
        return self._snapshot

    def set_snapshot(self, snapshot: MeshSnapshot) -> None:
        self._snapshot = snapshot
        self._classes.clear()
        self._keys.clear()
        self._proxy_cache.clear()
        # Keep what the previous snapshot packed, for reuse by digest; older packs are dropped.
        self._previous_packs, self._packs = self._packs, {}
        self._previous_own, self._own = self._own, {}

    def _pack(self, type_url: str, resource: dict[str, Any]) -> Packed:
        key = (type_url, content_digest(resource))
        packed = self._packs.get(key)
        if packed is None:
            packed = self._previous_packs.get(key)
            if packed is None:
                packed = Packed(to_any(type_url, resource), key[1])
                self.packed += 1
            self._packs[key] = packed
        return packed

    def _pack_own(self, proxy: Proxy, type_url: str, name: str, resource: dict[str, Any]) -> Packed:
        """Pack a resource made for ``proxy`` alone (its listeners, inbound clusters). Usually it
        equals what the proxy got under the previous snapshot: comparing the dicts is far cheaper
        than hashing their JSON, which every other resource needs only once per class."""
        key = (proxy, type_url, name)
        prev = self._own.get(key) or self._previous_own.get(key)
        packed = prev[1] if prev is not None and prev[0] == resource else self._pack(type_url, resource)
        self._own[key] = (resource, packed)
        return packed

    def _class(self, key: ClassKey) -> _ClassEntry:
        entry = self._classes.get(key)
        if entry is None:
            assert self._snapshot is not None
            entry = _ClassEntry(translate_class(self._snapshot, key, self._opts))
            self.translations += 1
            self._classes[key] = entry
        return entry

    def _key(self, proxy: Proxy) -> ClassKey:
        inputs = class_inputs(proxy)
        key = self._keys.get(inputs)
        if key is None:
            key = self._keys[inputs] = class_key(proxy, self._snapshot)
        return key

    def _base(self, entry: _ClassEntry, identity: bool) -> _Base:
        base = entry.bases.get(identity)
        if base is None:
            raw = entry.raw if identity else {**entry.raw, T.CLUSTER: strip_mesh_tls(entry.raw[T.CLUSTER])}
            # Only xDS types are packed (a class translation may carry e.g. its telemetry plan).
            packed = {t: Versioned(((n, self._pack(t, r)) for n, r in res.items()), shared=True)
                      for t, res in raw.items() if t in MESSAGE_TYPES}
            errors = consistency_errors(raw)
            if errors:
                log.error("inconsistent class translation: %s", "; ".join(errors))
            base = entry.bases[identity] = _Base(raw, packed)
        return base

    def raw_for(self, proxy: Proxy) -> Resources:
        """Unpacked resources for ``proxy`` (for inspection and tests)."""
        return translate_proxy(self._class(self._key(proxy)).raw, proxy, self._opts)

    def view(self, proxy: Proxy) -> ProxyView:
        """Everything ``proxy`` should have under the current snapshot."""
        if self._snapshot is None:
            return {}
        ck = (self._snapshot.version, proxy)
        cached = self._proxy_cache.get(ck)
        if cached is not None:
            return cached
        base = self._base(self._class(self._key(proxy)), has_identity(proxy.labels))
        full = translate_proxy(base.raw, proxy, self._opts)
        view: ProxyView = {}
        own: Resources = {}  # what translate_proxy made for this proxy rather than took from the class
        for type_url, resources in full.items():
            if type_url not in MESSAGE_TYPES:
                continue
            shared = base.packed.get(type_url, _NONE)
            class_res = base.raw.get(type_url, {})
            if resources is class_res:
                view[type_url] = shared
                own[type_url] = {}
                continue
            mine = {n: r for n, r in resources.items() if class_res.get(n) is not r}
            own[type_url] = mine
            if not mine and len(resources) == len(shared):
                view[type_url] = shared
            elif len(resources) - len(mine) == len(shared):  # every class resource kept, none replaced
                extra = {n: self._pack_own(proxy, type_url, n, r) for n, r in mine.items()}
                view[type_url] = Versioned(((n, extra.get(n) or shared[n]) for n in resources), base=shared,
                                           extra=tuple(extra.values()))
            else:
                view[type_url] = Versioned((n, shared[n] if n not in mine else self._pack_own(proxy, type_url, n, r))
                                           for n, r in resources.items())
        # The class part was checked once in _base; check what references or is this proxy's own.
        errors = consistency_errors({T.CLUSTER: own.get(T.CLUSTER, {}), T.ENDPOINT: full[T.ENDPOINT],
                                     T.LISTENER: full[T.LISTENER], T.ROUTE: full[T.ROUTE]})
        if errors:
            log.error("inconsistent translation for %s: %s", proxy.id, "; ".join(errors))
        self._proxy_cache[ck] = view
        return view
