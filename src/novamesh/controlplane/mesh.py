"""The control plane's state machine: config set + registry -> snapshots -> xDS.

:class:`Mesh` owns the store, the in-memory config set, the registry and the translation cache;
it is what the REST API calls. It has no sockets (see :mod:`.server` for those), so tests can
drive it directly.
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..config.loader import parse_documents, parse_manifest
from ..config.names import canonical_kind
from ..config.resource import Resource, ResourceKey, Source
from ..config.validate import check_duplicates, validate_state
from ..errors import ConfigError, NotFoundError, Violation
from ..model.snapshot import MeshSnapshot, build_snapshot
from ..registry import Registry
from ..settings import Settings
from ..store.base import ConfigStore
from ..translate import TranslateOptions
from ..xds import Debouncer, TranslationCache, XdsServer

__all__ = ["Mesh", "ApplyResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApplyResult:
    revision: int
    changes: list[dict[str, str]]
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "changes": self.changes, "dry_run": self.dry_run}


class Mesh:
    """Config set, registry and xDS cache of one control plane."""

    def __init__(self, settings: Settings, store: ConfigStore, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.debouncer = Debouncer(settings.debounce_quiet, settings.debounce_max, clock)
        self.registry = Registry(
            store, lease_ttl=settings.lease_ttl, address_pool=settings.address_pool, clock=clock,
            service_retention=settings.service_retention,
            on_change=self.debouncer.trigger,
        )
        self.cache = TranslationCache(TranslateOptions(connect_timeout=settings.connect_timeout))
        self.xds = XdsServer(self.cache, clock=clock)
        self.resources: dict[ResourceKey, Resource] = {}
        self.revision = store.current_revision()
        self._load()
        self.pushes = 0

    # -- state ----------------------------------------------------------------------------
    def _load(self) -> None:
        for obj in self.store.list():
            try:
                self.resources[obj.key] = parse_manifest(obj.manifest, source=Source(file="<store>"))
            except ConfigError as exc:  # a stored object that no longer validates: keep serving the rest
                log.error("stored %s %s/%s no longer validates and is ignored: %s", *obj.key, exc)

    def snapshot(self) -> MeshSnapshot:
        return build_snapshot(
            self.resources,
            self.registry.workloads(),
            revision=self.revision,
            registry_version=self.registry.version,
            domain_suffix=self.settings.domain_suffix,
            departed=self.registry.departed_services(),
        )

    def push(self) -> None:
        """Build a snapshot and hand it to the xDS server (which pushes only what changed)."""
        snap = self.snapshot()
        self.xds.update(snap)
        self.pushes += 1
        log.debug("push %d: revision %d, registry %d, snapshot %s", self.pushes, snap.revision, snap.registry_version, snap.version)

    # -- config ---------------------------------------------------------------------------
    def _parse(self, documents: Sequence[Mapping[str, str]], namespace: str) -> list[Resource]:
        resources: list[Resource] = []
        violations: list[Violation] = []
        for doc in documents:
            try:
                resources += parse_documents(str(doc.get("content", "")), file=str(doc.get("file", "")), default_namespace=namespace)
            except ConfigError as exc:
                violations += exc.violations
        violations += check_duplicates(resources)
        if violations:
            raise ConfigError(violations)
        return resources

    def apply(
        self,
        documents: Sequence[Mapping[str, str]],
        *,
        namespace: str = "default",
        dry_run: bool = False,
        author: str = "",
        message: str = "",
    ) -> ApplyResult:
        """Validate every document, then store all of them as one revision — or nothing."""
        resources = self._parse(documents, namespace)
        if not resources:
            raise ConfigError([Violation("no documents to apply", hint="pass a file with at least one resource")])
        state = dict(self.resources)
        for r in resources:
            state[r.key] = r
        violations = validate_state(state, [r.key for r in resources], self.settings.domain_suffix, previous=self.resources)
        if violations:
            raise ConfigError(violations)
        changes = []
        for r in resources:
            old = self.store.get(r.key)
            action = "created" if old is None else ("unchanged" if old.manifest == r.manifest else "configured")
            changes.append({"kind": r.kind, "namespace": r.namespace, "name": r.name, "action": action})
        if dry_run:
            return ApplyResult(self.revision, changes, dry_run=True)
        rev = self.store.commit(
            [(r.key, r.manifest) for r in resources], [], author=author or _default_author(), message=message or "apply"
        )
        self.revision = max(self.revision, rev.number)
        for r in resources:
            self.resources[r.key] = r
        if rev.changes:
            self.debouncer.trigger()
        return ApplyResult(self.revision, changes)

    def delete(self, keys: Sequence[ResourceKey], *, author: str = "", message: str = "") -> ApplyResult:
        """Delete resources as one revision; refuse if what remains would be inconsistent."""
        present = [k for k in keys if k in self.resources]
        changes = [
            {"kind": k[0], "namespace": k[1], "name": k[2], "action": "deleted" if k in self.resources else "not found"}
            for k in keys
        ]
        if not present:
            return ApplyResult(self.revision, changes)
        state = {k: v for k, v in self.resources.items() if k not in present}
        violations = validate_state(state, present, self.settings.domain_suffix, previous=self.resources)
        if violations:
            raise ConfigError(violations, summary="delete refused")
        rev = self.store.commit([], present, author=author or _default_author(), message=message or "delete")
        self.revision = max(self.revision, rev.number)
        for k in present:
            self.resources.pop(k, None)
        self.debouncer.trigger()
        return ApplyResult(self.revision, changes)

    def delete_documents(self, documents: Sequence[Mapping[str, str]], *, namespace: str = "default", author: str = "", message: str = "") -> ApplyResult:
        resources = self._parse(documents, namespace)
        return self.delete([r.key for r in resources], author=author, message=message)

    def list(self, kind: str | None = None, namespace: str | None = None) -> list[Resource]:
        want = resolve_kind(kind) if kind else None
        return [
            r for k, r in sorted(self.resources.items())
            if (want is None or k[0] == want) and (namespace is None or k[1] == namespace)
        ]

    def get(self, kind: str, namespace: str, name: str) -> Resource:
        key = (resolve_kind(kind), namespace, name)
        try:
            return self.resources[key]
        except KeyError:
            raise NotFoundError(f"{key[0]} {namespace}/{name} not found") from None


def resolve_kind(kind: str) -> str:
    """Canonical kind for user input, or NotFoundError listing the known kinds."""
    canon = canonical_kind(kind)
    if canon is None:
        raise NotFoundError(
            f"unknown kind {kind!r}; known kinds: VirtualService (vs), DestinationRule (dr), "
            "ServiceEntry (se), WorkloadEntry (we)"
        )
    return canon


def _default_author() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some sandboxes
        return "unknown"
