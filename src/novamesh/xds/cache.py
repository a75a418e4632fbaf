"""Translation cache: one class translation per (snapshot, proxy class), packed once.

Each resource is stored with a content hash, so the server can tell cheaply whether what a proxy
would get differs from what it already has.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2

from ..model.proxy import Proxy
from ..model.snapshot import MeshSnapshot
from ..translate import ClassKey, Resources, TranslateOptions, class_key, consistency_errors, translate_class, translate_proxy
from ..translate.protos import MESSAGE_TYPES, to_any

__all__ = ["Packed", "ProxyView", "TranslationCache"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Packed:
    """A resource ready to send: its packed message and content hash."""

    any: any_pb2.Any
    digest: str


def _digest(resource: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(resource, sort_keys=True).encode()).hexdigest()[:16]


def _pack(type_url: str, resources: dict[str, dict[str, Any]]) -> dict[str, Packed]:
    return {name: Packed(to_any(type_url, r), _digest(r)) for name, r in resources.items()}


@dataclass
class _ClassEntry:
    raw: Resources
    packed: dict[str, dict[str, Packed]] = field(default_factory=dict)


ProxyView = dict[str, dict[str, Packed]]
"""type URL -> name -> Packed: everything one proxy should have."""


class TranslationCache:
    """Holds the current snapshot and its class translations."""

    def __init__(self, opts: TranslateOptions) -> None:
        self._opts = opts
        self._snapshot: MeshSnapshot | None = None
        self._classes: dict[ClassKey, _ClassEntry] = {}
        self._proxy_cache: dict[tuple[str, Proxy], ProxyView] = {}
        self.translations = 0
        """Class translations performed (for metrics and benchmarks)."""

    @property
    def snapshot(self) -> MeshSnapshot | None:
        return self._snapshot

    def set_snapshot(self, snapshot: MeshSnapshot) -> None:
        self._snapshot = snapshot
        self._classes.clear()
        self._proxy_cache.clear()

    def _class(self, key: ClassKey) -> _ClassEntry:
        entry = self._classes.get(key)
        if entry is None:
            assert self._snapshot is not None
            raw = translate_class(self._snapshot, key, self._opts)
            self.translations += 1
            # Only xDS types are packed (a class translation may carry e.g. its telemetry plan).
            entry = _ClassEntry(raw, {t: _pack(t, r) for t, r in raw.items() if t in MESSAGE_TYPES})
            self._classes[key] = entry
        return entry

    def raw_for(self, proxy: Proxy) -> Resources:
        """Unpacked resources for ``proxy`` (for inspection and tests)."""
        return translate_proxy(self._class(class_key(proxy, self._snapshot)).raw, proxy, self._opts)

    def view(self, proxy: Proxy) -> ProxyView:
        """Everything ``proxy`` should have under the current snapshot."""
        if self._snapshot is None:
            return {}
        ck = (self._snapshot.version, proxy)
        cached = self._proxy_cache.get(ck)
        if cached is not None:
            return cached
        entry = self._class(class_key(proxy, self._snapshot))
        full = translate_proxy(entry.raw, proxy, self._opts)
        errors = consistency_errors(full)
        if errors:
            log.error("inconsistent translation for %s: %s", proxy.id, "; ".join(errors))
        view: ProxyView = {}
        for type_url, resources in full.items():
            shared = entry.packed.get(type_url, {})
            out: dict[str, Packed] = {}
            for name, res in resources.items():
                if name in shared and entry.raw[type_url].get(name) is res:
                    out[name] = shared[name]
                else:
                    out[name] = Packed(to_any(type_url, res), _digest(res))
            view[type_url] = out
        self._proxy_cache[ck] = view
        return view
