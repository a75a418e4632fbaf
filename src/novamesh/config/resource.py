"""A validated config resource: kind, identity, typed spec and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .types import Spec

__all__ = ["Source", "Resource", "ResourceKey"]

ResourceKey = tuple[str, str, str]
"""(kind, namespace, name): the identity of a resource in the store."""


@dataclass(frozen=True)
class Source:
    """Where a resource was read from (empty for resources created through the API)."""

    file: str = ""
    document: int | None = None
    line: int | None = None


@dataclass(frozen=True)
class Resource:
    """One validated config document.

    ``spec`` is the typed, immutable model; ``manifest`` is the document as the user wrote it
    (apiVersion, kind, metadata, spec) so ``get -o yaml`` returns what was applied.
    """

    kind: str
    name: str
    namespace: str
    api_version: str
    spec: Spec
    manifest: dict[str, Any] = field(compare=False, hash=False)
    labels: tuple[tuple[str, str], ...] = ()
    source: Source = field(default_factory=Source, compare=False, hash=False)

    @property
    def key(self) -> ResourceKey:
        return (self.kind, self.namespace, self.name)

    def ref(self) -> str:
        """``Kind namespace/name``, for messages."""
        return f"{self.kind} {self.namespace}/{self.name}"
