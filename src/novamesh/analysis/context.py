"""What analyzers look at: the config set, the workloads (live only) and where things were written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from ..config._paths import LineMap
from ..config.resource import Resource, ResourceKey
from ..model.snapshot import MeshSnapshot, Service, build_snapshot
from ..registry.registry import Workload
from .messages import Message

__all__ = ["Context", "LineIndex"]

LineIndex = Mapping[tuple[str, int], LineMap]
"""Line numbers of field paths, per (file, 0-based document index)."""


@dataclass(frozen=True)
class Context:
    """The input of one analysis run.

    ``workloads`` is None offline (files only): the registry is unknown, so analyzers that need
    it (``live_only``) are skipped, and services are only those ServiceEntries define.
    ``load_messages`` are the IST0106 findings of reading the input.
    """

    resources: Mapping[ResourceKey, Resource]
    workloads: Sequence[Workload] | None = None
    domain_suffix: str = "cluster.local"
    load_messages: Sequence[Message] = ()
    lines: LineIndex = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.workloads is not None

    def of_kind(self, kind: str) -> list[Resource]:
        """Resources of ``kind``, sorted by namespace and name."""
        return [self.resources[k] for k in sorted(self.resources) if k[0] == kind]

    @cached_property
    def snapshot(self) -> MeshSnapshot:
        """The mesh as the control plane would see it: services from workloads and ServiceEntries."""
        return build_snapshot(
            self.resources, self.workloads or (), revision=0, registry_version=0, domain_suffix=self.domain_suffix
        )

    def service(self, fqdn: str) -> Service | None:
        """The service with hostname ``fqdn``, if the input defines it."""
        return self.snapshot.services.get(fqdn)

    def line_of(self, resource: Resource, path: str) -> int | None:
        """The line ``path`` (or its nearest written ancestor) is on, else the document's line."""
        source = resource.source
        lines = self.lines.get((source.file, source.document)) if source.document is not None else None
        found = lines.line(path) if lines is not None else None
        return found if found is not None else source.line

    def message(self, code: str, resource: Resource, text: str, *, path: str = "", hint: str = "") -> Message:
        """A message about ``resource`` at field ``path``, located in its file when known."""
        return Message(
            code=code,
            text=text,
            kind=resource.kind,
            namespace=resource.namespace,
            name=resource.name,
            file=resource.source.file,
            line=self.line_of(resource, path) if resource.source.file else None,
            path=path,
            hint=hint,
        )
