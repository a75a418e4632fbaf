"""Checks across resources: references between them and conflicts.

:func:`validate_state` looks at the config set an apply or delete *would* produce and reports
only problems that involve a changed resource, so a pre-existing problem elsewhere does not
block unrelated work. :func:`check_duplicates` catches the same resource twice in one apply.
Both return violations (never raise); the caller raises :class:`~novamesh.errors.ConfigError`.

Codes: IST0101 (ReferencedResourceNotFound) for a subset no DestinationRule defines. Istio has
no code for two DestinationRules on one host or for a resource given twice; those use IST0106,
as they are rejected before anything is stored, like a schema error.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence

from ..errors import Violation
from ._semantic_gateway import gateway_violations
from ._semantic_sidecar import sidecar_conflicts
from ._semantic_mesh import mesh_config_violations
from ._semantic_telemetry import telemetry_provider_violations
from .names import resolve_host
from .resource import Resource, ResourceKey
from .types import DestinationRuleSpec, Subset, VirtualServiceSpec

__all__ = ["validate_state", "check_duplicates", "host_matches"]

REFERENCE_CODE = "IST0101"
CONFLICT_CODE = "IST0106"


def host_matches(pattern: str, host: str) -> bool:
    """True if DestinationRule host ``pattern`` (maybe ``*`` or ``*.suffix``) covers ``host``."""
    if pattern == host or pattern == "*":
        return True
    return pattern.startswith("*.") and host.endswith(pattern[1:])


def validate_state(
    state: Mapping[ResourceKey, Resource],
    changed: Collection[ResourceKey],
    domain_suffix: str = "cluster.local",
    *,
    previous: Mapping[ResourceKey, Resource] | None = None,
) -> list[Violation]:
    """Cross-resource violations in ``state`` that involve at least one key in ``changed``.

    ``state`` is the config set after the apply or delete; ``changed`` holds the keys applied
    or deleted. ``previous`` (the set before the change) is optional: with it, a deleted or
    re-hosted DestinationRule is tied to exactly the hosts it used to serve; without it, any
    deleted DestinationRule counts as involved in every broken subset reference.

    - A route destination's ``subset`` must be defined by a DestinationRule for its host
      (hosts compared after :func:`resolve_host`, each in its resource's own namespace). The
      violation is always reported on the VirtualService, even when the DestinationRule
      changed, so the user sees which route would break.
    - Two DestinationRules for the same host in one namespace are rejected.
    """
    changed = set(changed)
    rules = {
        key: resolve_host(r.spec.host, r.namespace, domain_suffix)
        for key, r in state.items()
        if isinstance(r.spec, DestinationRuleSpec)
    }
    touched_hosts: set[str] = set()  # hosts a changed DestinationRule serves now or served before
    unknown_deletion = False
    for key in changed:
        if key[0] != "DestinationRule":
            continue
        if key in rules:
            touched_hosts.add(rules[key])
        old = previous.get(key) if previous is not None else None
        if old is not None and isinstance(old.spec, DestinationRuleSpec):
            touched_hosts.add(resolve_host(old.spec.host, old.namespace, domain_suffix))
        elif key not in state:
            unknown_deletion = True
    violations = list(
        _missing_subsets(state, changed, rules, touched_hosts, unknown_deletion, domain_suffix)
    )
    violations += _conflicting_rules(state, changed, rules)
    violations += sidecar_conflicts(state, changed)
    violations += gateway_violations(state, changed, domain_suffix)
    violations += mesh_config_violations(state, changed)  # one MeshConfig, istio-system/default
    violations += telemetry_provider_violations(state, changed)  # tracing providers exist
    return violations


def _missing_subsets(
    state: Mapping[ResourceKey, Resource],
    changed: set[ResourceKey],
    rules: dict[ResourceKey, str],
    touched_hosts: set[str],
    unknown_deletion: bool,
    domain_suffix: str,
) -> Iterator[Violation]:
    for vs_key in sorted(state):
        vs = state[vs_key]
        if not isinstance(vs.spec, VirtualServiceSpec):
            continue
        for i, http in enumerate(vs.spec.http):
            for j, route in enumerate(http.route):
                subset = route.destination.subset
                if subset is None:
                    continue
                host = resolve_host(route.destination.host, vs.namespace, domain_suffix)
                matching = sorted(k for k, h in rules.items() if host_matches(h, host))
                defined = sorted({s.name for k in matching for s in _subsets(state[k])})
                if subset in defined:
                    continue
                involved = (
                    vs_key in changed
                    or unknown_deletion
                    or any(k in changed for k in matching)
                    or any(host_matches(h, host) for h in touched_hosts)
                )
                if involved:
                    yield _subset_violation(
                        vs,
                        f"spec.http[{i}].route[{j}].destination.subset",
                        subset,
                        host,
                        matching,
                        defined,
                        state,
                        changed,
                    )


def _subsets(resource: Resource) -> list[Subset]:
    spec = resource.spec
    return list(spec.subsets) if isinstance(spec, DestinationRuleSpec) else []


def _subset_violation(
    vs: Resource,
    path: str,
    subset: str,
    host: str,
    matching: Sequence[ResourceKey],
    defined: Sequence[str],
    state: Mapping[ResourceKey, Resource],
    changed: set[ResourceKey],
) -> Violation:
    if matching:
        names = ", ".join(state[k].ref() for k in matching)
        found = f"{names} defines subsets: {', '.join(defined) or 'none'}"
        hint = f"add subset '{subset}' to {names}" + (
            f", or route to one of: {', '.join(defined)}" if defined else ""
        )
    else:
        found = f"no DestinationRule exists for host '{host}'"
        hint = f"create a DestinationRule with host '{host}' and a subset named '{subset}'"
    cause = "" if vs.key in changed else " (this change to another resource would break it)"
    return Violation(
        message=f"route destination subset '{subset}' of host '{host}' is not defined by any "
        f"DestinationRule; {found}{cause}",
        path=path,
        kind=vs.kind,
        name=vs.name,
        namespace=vs.namespace,
        file=vs.source.file,
        document=vs.source.document,
        line=vs.source.line,
        hint=hint,
        code=REFERENCE_CODE,
    )


def _conflicting_rules(
    state: Mapping[ResourceKey, Resource],
    changed: set[ResourceKey],
    rules: dict[ResourceKey, str],
) -> list[Violation]:
    groups: dict[tuple[str, str], list[ResourceKey]] = defaultdict(list)
    for key, host in sorted(rules.items()):
        groups[(key[1], host)].append(key)
    violations: list[Violation] = []
    for (namespace, host), keys in sorted(groups.items()):
        if len(keys) < 2:
            continue
        blamed = [k for k in keys if k in changed]
        if len(blamed) == len(keys):
            blamed = blamed[1:]  # all new together: the first is fine on its own
        for key in blamed:
            rule = state[key]
            others = ", ".join(state[k].ref() for k in keys if k != key)
            violations.append(
                Violation(
                    message=f"host '{host}' already has a DestinationRule in namespace "
                    f"'{namespace}' ({others}); novamesh allows one per host and namespace",
                    path="spec.host",
                    kind=rule.kind,
                    name=rule.name,
                    namespace=rule.namespace,
                    file=rule.source.file,
                    document=rule.source.document,
                    line=rule.source.line,
                    hint=f"merge the subsets into {others}, or delete one of them",
                    code=CONFLICT_CODE,
                )
            )
    return violations


def check_duplicates(resources: Sequence[Resource]) -> list[Violation]:
    """One violation for each resource whose kind, namespace and name repeat an earlier one."""
    first: dict[ResourceKey, Resource] = {}
    violations: list[Violation] = []
    for resource in resources:
        earlier = first.setdefault(resource.key, resource)
        if earlier is resource:
            continue
        violations.append(
            Violation(
                message=f"{resource.ref()} is defined twice in this apply; first at "
                f"{_where(earlier)}, again at {_where(resource)}",
                path="metadata.name",
                kind=resource.kind,
                name=resource.name,
                namespace=resource.namespace,
                file=resource.source.file,
                document=resource.source.document,
                line=resource.source.line,
                hint="remove one of the two documents, or give them different names",
                code=CONFLICT_CODE,
            )
        )
    return violations


def _where(resource: Resource) -> str:
    source = resource.source
    parts = [source.file or "<input>"]
    if source.line is not None:
        parts[0] += f":{source.line}"
    if source.document is not None:
        parts.append(f"document {source.document + 1}")
    return " ".join(parts)
