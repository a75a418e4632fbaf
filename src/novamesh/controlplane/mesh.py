"""The control plane's state machine: config set + registry -> snapshots -> xDS.

:class:`Mesh` owns the store, the in-memory config set, the registry and the translation cache;
it is what the REST API calls. It has no sockets (see :mod:`.server` for those), so tests can
drive it directly.
"""

from __future__ import annotations

import builtins
import difflib
import getpass
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..clock import SYSTEM_CLOCK, Clock
from ..config.loader import dump_manifest, parse_documents, parse_manifest
from ..config.names import canonical_kind
from ..config.resource import Resource, ResourceKey, Source
from ..config.validate import check_duplicates, validate_state
from ..errors import ConfigError, NotFoundError, Violation
from ..model.snapshot import MeshSnapshot, snapshot_for
from ..registry import Registry
from ..settings import Settings
from ..store.base import ConfigStore, Revision
from ..translate import TranslateOptions
from ..xds import Debouncer, TranslationCache, XdsServer
from .guard import ApplyGuard, analyze_documents, guard_candidate
from .leader import Leadership, SoleLeader

__all__ = ["Mesh", "ApplyResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApplyResult:
    revision: int
    changes: list[dict[str, str]]
    dry_run: bool = False
    diff: str = ""
    guard: dict[str, Any] | None = None
    """Dry runs: the guarded-apply check (controlplane/guard.py GuardReport.to_dict)."""
    analysis: list[dict[str, object]] | None = None
    """Dry runs of apply: the analyzers' messages for live config + the applied documents."""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"revision": self.revision, "changes": self.changes, "dry_run": self.dry_run, "diff": self.diff}
        if self.guard is not None:
            d["guard"] = self.guard
        if self.analysis is not None:
            d["analysis"] = self.analysis
        return d


def _key_label(key: ResourceKey) -> str:
    return f"{key[0]}/{key[1]}/{key[2]}"


def unified_diff(old: Mapping[ResourceKey, Mapping[str, Any]], new: Mapping[ResourceKey, Mapping[str, Any]], old_label: str, new_label: str) -> str:
    """A unified YAML diff between two config sets, resource by resource, in key order."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        a_text = dump_manifest(dict(a)).splitlines(keepends=True) if a is not None else []
        b_text = dump_manifest(dict(b)).splitlines(keepends=True) if b is not None else []
        out += difflib.unified_diff(
            a_text, b_text,
            fromfile=f"{_key_label(key)} ({old_label})" if a is not None else "/dev/null",
            tofile=f"{_key_label(key)} ({new_label})" if b is not None else "/dev/null",
        )
    return "".join(out)


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
        self.xds = XdsServer(self.cache, clock=clock, push_concurrency=settings.xds_push_concurrency)
        self.guard = ApplyGuard(settings)
        """Refuses writes Envoy would reject (controlplane/guard.py); every write calls guard_candidate."""
        self.resources: dict[ResourceKey, Resource] = {}
        self.revision = store.current_revision()
        self._load()
        self.pushes = 0
        self.leader: Leadership = SoleLeader()
        """Who runs singleton jobs (backups, CA creation): ``mesh.leader.is_leader``."""

    # -- state ----------------------------------------------------------------------------
    def _load(self) -> None:
        for obj in self.store.list():
            try:
                self.resources[obj.key] = parse_manifest(obj.manifest, source=Source(file="<store>"))
            except ConfigError as exc:  # a stored object that no longer validates: keep serving the rest
                log.error("stored %s %s/%s no longer validates and is ignored: %s", *obj.key, exc)

    def reload(self, revision: int | None = None) -> bool:
        """Re-read the config set if the store moved past our revision (another replica
        committed; called by the store's watch and before every write). True if it did."""
        rev = self.store.current_revision() if revision is None else revision
        if rev == self.revision:
            return False
        self.resources = {}
        self._load()
        self.revision = rev
        self.debouncer.trigger()
        log.info("config reloaded from the store at revision %d", rev)
        return True

    def snapshot(self) -> MeshSnapshot:
        return snapshot_for(self.settings, self.resources, self.registry.workloads(), revision=self.revision,
                            registry_version=self.registry.version, departed=self.registry.departed_services())

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
        self.reload()  # validate against the newest config, whichever replica wrote it
        resources = self._parse(documents, namespace)
        if not resources:
            raise ConfigError([Violation("no documents to apply", hint="pass a file with at least one resource")])
        state = dict(self.resources)
        for r in resources:
            state[r.key] = r
        violations = validate_state(state, [r.key for r in resources], self.settings.domain_suffix, previous=self.resources)
        if violations:
            raise ConfigError(violations)
        guard = guard_candidate(self, state, [r.key for r in resources], dry_run=dry_run)
        changes = []
        for r in resources:
            old = self.store.get(r.key)
            action = "created" if old is None else ("unchanged" if old.manifest == r.manifest else "configured")
            changes.append({"kind": r.kind, "namespace": r.namespace, "name": r.name, "action": action})
        diff = unified_diff(
            {r.key: self.resources[r.key].manifest for r in resources if r.key in self.resources},
            {r.key: r.manifest for r in resources},
            f"revision {self.revision}", "applied",
        )
        if dry_run:
            return ApplyResult(self.revision, changes, dry_run=True, diff=diff, guard=guard.to_dict(),
                               analysis=analyze_documents(self, documents, namespace))
        rev = self.store.commit(
            [(r.key, r.manifest) for r in resources], [], author=author or _default_author(), message=message or "apply"
        )
        self.revision = max(self.revision, rev.number)
        for r in resources:
            self.resources[r.key] = r
        if rev.changes:
            self.debouncer.trigger()
        return ApplyResult(self.revision, changes, diff=diff)

    def delete(self, keys: Sequence[ResourceKey], *, author: str = "", message: str = "") -> ApplyResult:
        """Delete resources as one revision; refuse if what remains would be inconsistent."""
        self.reload()
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
        guard_candidate(self, state, present)
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

    # -- history --------------------------------------------------------------------------
    def history(self, key: ResourceKey | None = None, limit: int = 50) -> builtins.list[Revision]:
        """Revisions, newest first; with ``key`` only those that changed that resource."""
        return self.store.revisions(limit, key)

    def diff(self, rev_from: int, rev_to: int | None = None) -> str:
        """Unified YAML diff of the config set between two revisions (to: the current one)."""
        self._check_revision(rev_from)
        to = self.revision if rev_to is None else rev_to
        self._check_revision(to)
        return unified_diff(self.store.state_at(rev_from), self.store.state_at(to), f"revision {rev_from}", f"revision {to}")

    def _check_revision(self, rev: int) -> None:
        if rev < 0 or rev > self.revision:
            raise NotFoundError(f"revision {rev} does not exist; revisions run from 0 (empty) to {self.revision}")

    def rollback(self, to: int | None = None, *, author: str = "", message: str = "", dry_run: bool = False) -> ApplyResult:
        """Make the config set equal to revision ``to`` (default: the one before the latest), as
        a NEW revision. Refused — with every reason, nothing changed — if that state no longer
        validates."""
        self.reload()
        target = self.revision - 1 if to is None else to
        if self.revision == 0:
            raise NotFoundError("there is no revision to roll back from; the store is empty")
        self._check_revision(target)
        manifests = self.store.state_at(target)
        violations: list[Violation] = []
        state: dict[ResourceKey, Resource] = {}
        for key, manifest in sorted(manifests.items()):
            try:
                state[key] = parse_manifest(manifest, source=Source(file=f"<revision {target}>"))
            except ConfigError as exc:
                violations += exc.violations
        changed = [k for k in set(state) | set(self.resources)
                   if (k in state) != (k in self.resources) or (k in state and state[k].manifest != self.resources[k].manifest)]
        if not violations:
            violations = validate_state(state, changed, self.settings.domain_suffix, previous=self.resources)
        if violations:
            raise ConfigError(
                violations,
                summary=f"rollback to revision {target} refused: that config no longer validates "
                "(fix the listed resources in a new apply instead)",
            )
        guard = guard_candidate(self, state, changed, dry_run=dry_run)
        current = {k: r.manifest for k, r in self.resources.items()}
        diff = unified_diff(current, manifests, f"revision {self.revision}", f"revision {target}")
        changes = [
            {"kind": k[0], "namespace": k[1], "name": k[2],
             "action": "deleted" if k not in state else ("created" if k not in self.resources else "configured")}
            for k in sorted(changed)
        ]
        if dry_run or not changed:
            return ApplyResult(self.revision, changes, dry_run=dry_run, diff=diff, guard=guard.to_dict() if dry_run else None)
        rev = self.store.commit(
            [(k, state[k].manifest) for k in sorted(changed) if k in state],
            [k for k in sorted(changed) if k not in state],
            author=author or _default_author(),
            message=message or f"rollback to revision {target}",
        )
        self.revision = max(self.revision, rev.number)
        self.resources = state
        self.debouncer.trigger()
        return ApplyResult(self.revision, changes, diff=diff)

    def replace_all(
        self, manifests: Sequence[Mapping[str, Any]], *, author: str = "", message: str = "", dry_run: bool = False, source: str = "<restore>"
    ) -> ApplyResult:
        """Make the config set exactly ``manifests`` (a restore) as ONE revision: the whole target
        set is validated (every violation, nothing changed, if any), then puts and deletes are
        committed together. Changes list every resource: created/configured/deleted/unchanged."""
        self.reload()
        violations: list[Violation] = []
        parsed: list[Resource] = []
        for i, manifest in enumerate(manifests):
            try:
                parsed.append(parse_manifest(dict(manifest), source=Source(file=source, document=i)))
            except ConfigError as exc:
                violations += exc.violations
        violations += check_duplicates(parsed)
        state = {r.key: r for r in parsed}
        if not violations:
            violations = validate_state(state, set(state) | set(self.resources), self.settings.domain_suffix, previous=self.resources)
        if violations:
            raise ConfigError(violations, summary="restore refused: the backup's config does not validate here")
        guard = guard_candidate(self, state, set(state) | set(self.resources), dry_run=dry_run)
        current = {k: r.manifest for k, r in self.resources.items()}
        target = {k: r.manifest for k, r in state.items()}
        actions = {k: "deleted" if k not in target else "created" if k not in current
                   else "unchanged" if current[k] == target[k] else "configured" for k in set(current) | set(target)}
        changes = [{"kind": k[0], "namespace": k[1], "name": k[2], "action": a} for k, a in sorted(actions.items())]
        diff = unified_diff(current, target, f"revision {self.revision}", "restored")
        changed = sorted(k for k, a in actions.items() if a != "unchanged")
        if dry_run or not changed:
            return ApplyResult(self.revision, changes, dry_run=dry_run, diff=diff, guard=guard.to_dict() if dry_run else None)
        rev = self.store.commit(
            [(k, target[k]) for k in changed if k in target], [k for k in changed if k not in target],
            author=author or _default_author(), message=message or "restore",
        )
        self.revision = max(self.revision, rev.number)
        self.resources = state
        self.debouncer.trigger()
        return ApplyResult(self.revision, changes, diff=diff)


def resolve_kind(kind: str) -> str:
    """Canonical kind for user input, or NotFoundError listing the known kinds."""
    canon = canonical_kind(kind)
    if canon is None:
        raise NotFoundError(
            f"unknown kind {kind!r}; known kinds: VirtualService (vs), DestinationRule (dr), "
            "ServiceEntry (se), WorkloadEntry (we), Sidecar, Gateway (gw), MeshConfig (mesh-config)"
        )
    return canon


def _default_author() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some sandboxes
        return "unknown"
