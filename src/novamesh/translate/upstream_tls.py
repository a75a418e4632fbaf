"""TLS origination from a DestinationRule's ``trafficPolicy.tls`` (Istio's ClientTLSSettings):
an ``UpstreamTlsContext`` transport socket on the cluster.

Semantics, and where novamesh differs from Istio on purpose:

- ``DISABLE``: plain text (no transport socket).
- ``SIMPLE``: TLS; ``MUTUAL``: TLS presenting ``clientCertificate``/``privateKey``.
- The server certificate is verified against ``caCertificates``, or, when that is not set,
  against the system trust bundle (:data:`SYSTEM_CA_BUNDLE`) — as newer Istio does, rather than
  silently not verifying. ``insecureSkipVerify: true`` turns verification off.
- ``subjectAltNames`` must match a SAN of the server certificate (URI for ``spiffe://...``,
  IP for addresses, DNS otherwise).
- SNI is ``sni`` when set, else the destination host (when it is not a wildcard), so virtual-hosted
  HTTPS servers see the name the client asked for.
"""

from __future__ import annotations

import ipaddress
from typing import Any

# Registers the TLS messages this module names in an Any (see translate/protos.py).
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401

from ..config.types_traffic import ClientTLSSettings
from .common import typed

__all__ = ["SYSTEM_CA_BUNDLE", "UPSTREAM_TLS", "transport_socket"]

UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
"""Trust bundle used when ``caCertificates`` is not set (Debian/Ubuntu's path; set
``caCertificates`` explicitly on systems that keep it elsewhere)."""


def _san_matcher(san: str) -> dict[str, Any]:
    if "://" in san:
        kind = "URI"
    else:
        try:
            ipaddress.ip_address(san)
            kind = "IP_ADDRESS"
        except ValueError:
            kind = "DNS"
    return {"san_type": kind, "matcher": {"exact": san}}


def transport_socket(tls: ClientTLSSettings, host: str, http2: bool) -> dict[str, Any] | None:
    """The cluster's ``transport_socket`` for ``tls`` towards ``host`` (None: plain text)."""
    if tls.mode not in ("SIMPLE", "MUTUAL"):
        return None
    common: dict[str, Any] = {}
    if tls.mode == "MUTUAL":
        common["tls_certificates"] = [
            {"certificate_chain": {"filename": tls.client_certificate}, "private_key": {"filename": tls.private_key}}
        ]
    if not tls.insecure_skip_verify:
        validation: dict[str, Any] = {"trusted_ca": {"filename": tls.ca_certificates or SYSTEM_CA_BUNDLE}}
        if tls.subject_alt_names:
            validation["match_typed_subject_alt_names"] = [_san_matcher(s) for s in tls.subject_alt_names]
        common["validation_context"] = validation
    if http2:
        common["alpn_protocols"] = ["h2"]  # an HTTP/2 cluster must negotiate h2 over TLS
    context: dict[str, Any] = {"common_tls_context": common}
    sni = tls.sni or ("" if "*" in host else host)
    if sni:
        context["sni"] = sni
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed(UPSTREAM_TLS, **context)}
