"""IST0108 UnknownAnnotation: Istio annotations have no effect in novamesh."""

from __future__ import annotations

from collections.abc import Iterator

from ..context import Context
from ..messages import Message
from ..registry import analyzer

KNOWN_ANNOTATIONS: frozenset[str] = frozenset()
"""Istio annotations novamesh honours (none yet); every other ``*istio.io/*`` one is reported."""


@analyzer("IST0108", "annotations.UnknownAnnotationAnalyzer",
          "Istio annotations (keys with an istio.io/ prefix) change nothing in novamesh; each is reported.")
def unknown_annotations(ctx: Context) -> Iterator[Message]:
    for key in sorted(ctx.resources):
        resource = ctx.resources[key]
        metadata = resource.manifest.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        for name in sorted(annotations) if isinstance(annotations, dict) else ():
            prefix = str(name).partition("/")[0]
            if (prefix == "istio.io" or prefix.endswith(".istio.io")) and name not in KNOWN_ANNOTATIONS:
                yield ctx.message("IST0108", resource, f"Unknown annotation: {name}",
                                  path=f"metadata.annotations.{name}",
                                  hint="remove it: novamesh does not read Istio annotations")
