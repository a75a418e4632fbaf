"""The analyzers, one module per family; importing this package registers all of them."""

from __future__ import annotations

from . import (
    destinationrule,
    gateway,
    metadata,
    mtls,
    references,
    retries,
    schema,
    serviceentry,
    sidecar,
    standards,
    virtualservice,
)

__all__ = [
    "destinationrule", "gateway", "metadata", "mtls", "references", "retries", "schema", "serviceentry", "sidecar", "standards",
    "virtualservice",
]
