"""Typed model of Istio's PeerAuthentication (``security.istio.io/v1`` and ``v1beta1``).

PeerAuthentication says which traffic a workload's sidecar accepts: mutual TLS only
(``STRICT``), mutual TLS or plain text (``PERMISSIVE``), plain text only (``DISABLE``), or what
the parent level says (``UNSET``). Modes are kept as strings so that an unknown mode is reported
by the semantic check (:mod:`._semantic_security`) with its field path and the accepted values.
Translation lives in :mod:`novamesh.translate.peer_authn`.
"""

from __future__ import annotations

from pydantic import Field

from .base import Spec
from .types_authz import PolicySelector

__all__ = ["MTLS_MODES", "PeerAuthenticationMTLS", "PeerAuthenticationSpec"]

MTLS_MODES: tuple[str, ...] = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
"""Istio's ``PeerAuthentication.MutualTLS.Mode`` values."""


class PeerAuthenticationMTLS(Spec):
    """``mtls`` (and each ``portLevelMtls`` value): the mutual TLS mode."""

    mode: str = "UNSET"


class PeerAuthenticationSpec(Spec):
    """Istio PeerAuthentication: no ``selector`` applies it to the whole namespace (to the whole
    mesh in the root namespace); ``portLevelMtls`` keys are workload (container) ports."""

    selector: PolicySelector | None = None
    mtls: PeerAuthenticationMTLS | None = None
    port_level_mtls: dict[int, PeerAuthenticationMTLS] = Field(default_factory=dict)
