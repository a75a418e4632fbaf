"""The per-workload sections of a service description in ``novamesh describe``: which Sidecar
scopes each workload (and its outbound traffic policy), which Telemetry resources apply, and the
security kinds (PeerAuthentication, AuthorizationPolicy: "not supported yet" until their config
types exist).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..config.resource import Resource, ResourceKey
from ..config.types import SPEC_TYPES
from ..config.types_telemetry import TelemetrySpec
from ..model.snapshot import MeshSnapshot
from ..registry.registry import Workload
from ..translate.scoping import outbound_policy, sidecar_for
from .describe_base import ServiceDescription

__all__ = ["NOT_SUPPORTED_KINDS", "add_sidecars", "add_telemetry", "add_unsupported", "describe_telemetry"]

NOT_SUPPORTED_KINDS = ("PeerAuthentication", "AuthorizationPolicy")
"""Kinds each description lists, as "not supported yet" while they are not in ``SPEC_TYPES``."""


def add_sidecars(desc: ServiceDescription, snap: MeshSnapshot, members: Sequence[Workload]) -> None:
    """Add the Sidecars section: which Sidecar scopes ``members`` (the service's workloads) and
    the outbound traffic policy each group gets."""
    seen: dict[str, list[str]] = {}
    for w in members:
        sc = sidecar_for(snap, w.namespace, w.label_dict)
        ref = f"{sc.namespace}/{sc.name}" if sc is not None else ""
        seen.setdefault(ref, []).append(w.id)
    lines: list[str] = []
    for ref, ids in sorted(seen.items()):
        mode, origin = outbound_policy(snap, ref)
        if ref:
            sc = next(s for s in snap.sidecars if f"{s.namespace}/{s.name}" == ref)
            egress = [h for e in getattr(sc.spec, "egress", []) for h in e.hosts]
            scope = f"may reach {', '.join(egress)}" if egress else "no egress restriction"
            lines.append(f"Sidecar {ref} applies to {len(ids)} workload(s): {scope}; outbound traffic policy {mode} (from {origin})")
        else:
            lines.append(f"no Sidecar applies to {len(ids)} workload(s): they see every service; "
                         f"outbound traffic policy {mode} (from {origin})")
        desc.fact("sidecar", lines[-1])
    desc.sections.append(("Sidecars (of this service's workloads)", lines or ["none"]))


def describe_telemetry(spec: TelemetrySpec) -> list[str]:
    """Sentences for a Telemetry resource's tracing and access logging."""
    out: list[str] = []
    for t in spec.tracing:
        providers = ", ".join(p.name for p in t.providers) or "the default provider"
        text = f"tracing to {providers}"
        if t.random_sampling_percentage is not None:
            text += f", sampling {t.random_sampling_percentage:g}% of requests"
        if t.disable_span_reporting:
            text += ", span reporting disabled"
        if t.custom_tags:
            text += f", custom tags {', '.join(sorted(t.custom_tags))}"
        out.append(text)
    for a in spec.access_logging:
        providers = ", ".join(p.name for p in a.providers) or "the default provider"
        state = "off" if a.disabled else "on"
        text = f"access logging {state} ({providers})"
        if a.filter is not None:
            text += f", only requests where {a.filter.expression}"
        out.append(text)
    return out or ["sets nothing"]


def add_telemetry(desc: ServiceDescription, resources: Mapping[ResourceKey, Resource], members: Sequence[Workload], namespace: str) -> None:
    """Add the Telemetry section: resources that apply to the service's workloads: mesh-wide
    (root namespace, no selector), namespace-wide (no selector), or selecting some of the workloads."""
    lines: list[str] = []
    for key in sorted(resources):
        r = resources[key]
        if key[0] != "Telemetry" or not isinstance(r.spec, TelemetrySpec) or r.namespace not in (namespace, "istio-system"):
            continue
        sel = dict(r.spec.selector.match_labels) if r.spec.selector is not None else {}
        if sel:
            if r.namespace != namespace:
                continue
            picked = [w for w in members if all(w.label_dict.get(k) == v for k, v in sel.items())]
            if not picked:
                continue
            scope = f"{len(picked)} of {len(members)} workload(s)"
        else:
            scope = "mesh-wide" if r.namespace == "istio-system" else f"namespace {r.namespace}"
        lines.append(f"Telemetry {r.namespace}/{r.name} ({scope}): " + "; ".join(describe_telemetry(r.spec)))
    desc.sections.append(("Telemetry", lines or ["none: mesh defaults for tracing and access logs"]))


def add_unsupported(desc: ServiceDescription, kind: str, resources: Mapping[ResourceKey, Resource], namespace: str) -> None:
    """Add the section of one of :data:`NOT_SUPPORTED_KINDS`: "not supported yet", or the resources
    of that kind in ``namespace`` and ``istio-system`` once the kind has a config type."""
    if kind not in SPEC_TYPES:
        desc.sections.append((kind, ["none (not supported yet)"]))
        if kind == "AuthorizationPolicy":
            desc.fact("authorization", "AuthorizationPolicy is not supported yet, so no novamesh policy denies requests")
        return
    found = [f"{kind} {k[1]}/{k[2]}" for k in sorted(resources) if k[0] == kind and k[1] in (namespace, "istio-system")]
    desc.sections.append((kind, found or ["none"]))
    if kind == "AuthorizationPolicy":
        for f in found:
            desc.fact("authorization", f"{f} may apply")
        if not found:
            desc.fact("authorization", "AuthorizationPolicy: none in this namespace or istio-system applies")
