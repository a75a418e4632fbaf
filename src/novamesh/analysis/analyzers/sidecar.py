"""Workload selectors: Sidecars that overlap (IST0110, IST0111) and selectors that match no
workload (IST0127)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from ...config.resource import Resource
from ...config.types import ServiceEntrySpec, WorkloadEntrySpec
from ..context import Context
from ..messages import Message
from ..registry import analyzer


def _labels(resource: Resource) -> dict[str, str] | None:
    """The workload selector labels of a Sidecar or ServiceEntry; None when it has none."""
    selector = getattr(resource.spec, "workload_selector", None)
    labels = dict(getattr(selector, "labels", None) or {})
    return labels or None


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@analyzer("IST0111", "sidecar.DefaultSelectorAnalyzer",
          "At most one Sidecar per namespace has no workload selector.")
def multiple_default_sidecars(ctx: Context) -> Iterator[Message]:
    defaults: dict[str, list[Resource]] = defaultdict(list)
    for sc in ctx.of_kind("Sidecar"):
        if _labels(sc) is None:
            defaults[sc.namespace].append(sc)
    for namespace, sidecars in sorted(defaults.items()):
        if len(sidecars) < 2:
            continue
        names = [s.name for s in sidecars]
        for sc in sidecars:
            yield ctx.message(
                "IST0111", sc,
                f"The Sidecars {names} in namespace {namespace!r} have no workload selector, which can lead "
                "to undefined behavior.", path="spec",
                hint="keep one Sidecar without workloadSelector per namespace; give the others a selector")


@analyzer("IST0110", "sidecar.SelectorAnalyzer",
          "No workload is selected by two Sidecars.", live_only=True)
def conflicting_sidecars(ctx: Context) -> Iterator[Message]:
    sidecars = [(sc, labels) for sc in ctx.of_kind("Sidecar") if (labels := _labels(sc)) is not None]
    reported: set[tuple[str, str]] = set()
    for w in ctx.workloads or ():
        chosen = [sc for sc, labels in sidecars if sc.namespace == w.namespace and _matches(labels, w.label_dict)]
        if len(chosen) < 2:
            continue
        names = [s.name for s in chosen]
        for sc in chosen:
            if (sc.name, w.namespace) in reported:
                continue
            reported.add((sc.name, w.namespace))
            yield ctx.message(
                "IST0110", sc,
                f"The Sidecars {names} in namespace {w.namespace!r} select the same workload pod "
                f"{w.id!r} ({w.service} {w.version}), which can lead to undefined behavior.",
                path="spec.workloadSelector", hint="make the selectors disjoint, or merge the Sidecars")


@analyzer("IST0127", "selector.NoMatchingWorkloadsAnalyzer",
          "The workloadSelector of a Sidecar or ServiceEntry matches at least one workload in its "
          "namespace (a registered workload, or a WorkloadEntry for a ServiceEntry).",
          live_only=True)
def selectors_without_workloads(ctx: Context) -> Iterator[Message]:
    entries = [we for we in ctx.of_kind("WorkloadEntry") if isinstance(we.spec, WorkloadEntrySpec)]
    for resource in ctx.of_kind("Sidecar") + ctx.of_kind("ServiceEntry"):
        selector = _labels(resource)
        if selector is None:
            continue
        candidates = [w.label_dict for w in ctx.workloads or () if w.namespace == resource.namespace]
        if isinstance(resource.spec, ServiceEntrySpec):
            candidates += [dict(we.spec.labels) for we in entries
                           if we.namespace == resource.namespace and isinstance(we.spec, WorkloadEntrySpec)]
        if any(_matches(selector, labels) for labels in candidates):
            continue
        text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        yield ctx.message(
            "IST0127", resource, f"No matching workloads for this resource with the following labels: {text}",
            path="spec.workloadSelector.labels",
            hint="fix the labels, or start a workload with them in namespace " + resource.namespace)
