"""Mesh mTLS between sidecars: client transport sockets (auto mTLS) and server filter chains.

Client side (auto mTLS, Istio's approach). Every EDS cluster of a service without a
DestinationRule ``tls`` gets two ``transport_socket_matches``: endpoints whose metadata says
``tlsMode: istio`` are reached over mTLS with the workload certificate (SDS secret ``default``),
verifying the server against the trust bundle (``ROOTCA``) and the SPIFFE ids of the service's
service accounts; every other endpoint in plain text. Endpoints get that metadata when they have a
sidecar with a certificate (label ``security.istio.io/tlsMode: istio``, set by the agent on
registered workloads and written by users on WorkloadEntries) *and* their PeerAuthentication
does not DISABLE mTLS on the port: the control plane knows the destination's policy, so a
DISABLE server is reached in plain text without a DestinationRule (Istio needs ``tls: DISABLE``).
A DestinationRule ``tls.mode: ISTIO_MUTUAL`` forces mesh mTLS to every endpoint; ``DISABLE``,
``SIMPLE`` and ``MUTUAL`` replace it (see :mod:`.upstream_tls`).

Server side: the inbound listener of each port follows :mod:`.peer_authn`: STRICT has one chain
requiring a client certificate from the trust bundle; PERMISSIVE a TLS chain (matched by the TLS
inspector on transport protocol ``tls`` and ALPN ``istio``, which mesh clients offer) and a plain
chain; DISABLE the plain chain only. The HCM tells the app who called in
``x-forwarded-client-cert`` (sanitized, then set with the peer's URI SAN).

A sidecar without a certificate (the CA is off) gets neither: its clusters keep plain text only
and its inbound listeners accept plain text.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from ..config.names import TLS_MODE_LABEL, spiffe_id
from ..config.resource import Resource
from ..model.proxy import Proxy
from ..model.snapshot import Endpoint, MeshSnapshot, Service
from .cluster_policies import effective_policy
from .common import typed
from .peer_authn import InboundMtls, effective_mode
from .upstream_tls import UPSTREAM_TLS

__all__ = [
    "MESH_ALPN",
    "TLS_MODE_LABEL",
    "apply_auto_mtls",
    "dr_tls_mode",
    "endpoint_metadata",
    "has_identity",
    "mesh_upstream_socket",
    "secure_inbound",
    "secure_inbound_all",
    "strip_mesh_tls",
]

MESH_ALPN = "istio"
"""ALPN mesh clients offer, so a PERMISSIVE server tells mesh mTLS from an app's own TLS."""
MATCH_KEY = "tlsMode"
MESH_MATCH = "tlsMode-istio"
PLAIN_MATCH = "tlsMode-disabled"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
RAW_BUFFER = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
TLS_INSPECTOR = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
CERT_SECRET = "default"
ROOT_SECRET = "ROOTCA"
SDS_CLUSTER = "sds-grpc"
_HCM = "envoy.filters.network.http_connection_manager"


def has_identity(labels: Iterable[tuple[str, str]]) -> bool:
    """True when a workload with ``labels`` has a sidecar holding a mesh certificate."""
    return dict(labels).get(TLS_MODE_LABEL) == "istio"


def _sds(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "sds_config": {
            "resource_api_version": "V3",
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
            },
        },
    }


def _validation(sans: Iterable[str], prefix: str = "") -> dict[str, Any]:
    default: dict[str, Any] = {}
    matchers = [{"san_type": "URI", "matcher": {"exact": s}} for s in sorted(set(sans))]
    if prefix:
        matchers.append({"san_type": "URI", "matcher": {"prefix": prefix}})
    if matchers:
        default["match_typed_subject_alt_names"] = matchers
    return {"default_validation_context": default, "validation_context_sds_secret_config": _sds(ROOT_SECRET)}


def mesh_upstream_socket(sans: Iterable[str]) -> dict[str, Any]:
    """The client's mesh mTLS socket: present ``default``, verify ``ROOTCA`` and ``sans``."""
    common = {
        "alpn_protocols": [MESH_ALPN],
        "tls_certificate_sds_secret_configs": [_sds(CERT_SECRET)],
        "combined_validation_context": _validation(sans),
    }
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed(UPSTREAM_TLS, common_tls_context=common)}


def _service_sans(snapshot: MeshSnapshot, service: Service) -> list[str]:
    return sorted({spiffe_id(snapshot.trust_domain, service.namespace, e.service_account)
                   for e in service.endpoints if e.service_account})  # fmt: skip


def endpoint_metadata(snapshot: MeshSnapshot, service: Service, endpoint: Endpoint, port: int) -> dict[str, Any] | None:
    """``metadata`` of an lb endpoint: ``tlsMode: istio`` when it is reached over mesh mTLS."""
    labels = dict(endpoint.labels)
    if not has_identity(endpoint.labels):
        return None
    if effective_mode(snapshot, service.namespace, labels, port) == "DISABLE":
        return None  # the server accepts plain text only: auto mTLS follows it
    return {"filter_metadata": {"envoy.transport_socket_match": {MATCH_KEY: "istio"}}}


def dr_tls_mode(dr: Resource | None, subset: str | None, port: int) -> str | None:
    """The DestinationRule's ``tls.mode`` for a cluster (None: no ``tls`` set)."""
    policy = effective_policy(dr, subset, port)
    return policy.tls.mode if policy is not None and policy.tls is not None else None


def apply_auto_mtls(cluster: dict[str, Any], snapshot: MeshSnapshot, service: Service, dr_tls_mode: str | None) -> dict[str, Any]:
    """Add mesh mTLS to an outbound ``cluster`` (in place; returned) per the module docstring."""
    sans = _service_sans(snapshot, service)
    if dr_tls_mode == "ISTIO_MUTUAL":
        cluster["transport_socket"] = mesh_upstream_socket(sans)
        return cluster
    if dr_tls_mode is not None or "transport_socket" in cluster or service.resolution != "EDS":
        return cluster  # the DestinationRule decides; DNS endpoints are never sidecars
    if not any(has_identity(e.labels) for e in service.endpoints):
        return cluster
    cluster["transport_socket_matches"] = [
        {"name": MESH_MATCH, "match": {MATCH_KEY: "istio"}, "transport_socket": mesh_upstream_socket(sans)},
        {"name": PLAIN_MATCH, "match": {}, "transport_socket": {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {"@type": RAW_BUFFER}}},
    ]
    return cluster


def strip_mesh_tls(clusters: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Clusters for a proxy without a certificate: no mesh mTLS anywhere (it has nothing to
    present). Returns ``clusters`` itself when nothing changes, else changed copies."""
    out = dict(clusters)
    for name, c in clusters.items():
        if "transport_socket_matches" in c:
            c = dict(c)
            del c["transport_socket_matches"]
            out[name] = c
    return out


def _downstream_socket(trust_domain: str) -> dict[str, Any]:
    common = {
        "tls_certificate_sds_secret_configs": [_sds(CERT_SECRET)],
        "combined_validation_context": _validation((), prefix=f"spiffe://{trust_domain}/"),
    }  # no ALPN: the HCM's AUTO codec then tells HTTP/2 from HTTP/1.1 by the preface
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": typed(DOWNSTREAM_TLS, common_tls_context=common, require_client_certificate=True),
    }


def _forward_client_cert(chain: dict[str, Any]) -> None:
    for f in chain.get("filters", []):
        if f.get("name") == _HCM:
            f["typed_config"]["forward_client_cert_details"] = "SANITIZE_SET"
            f["typed_config"]["set_current_client_cert_details"] = {"uri": True}


def secure_inbound(listener: dict[str, Any], mode: str, trust_domain: str) -> dict[str, Any]:
    """``listener`` (an inbound listener with one plain filter chain) rewritten for ``mode``."""
    plain = listener["filter_chains"][0]
    _forward_client_cert(plain)  # plain chains too: a caller cannot forge the header
    if mode == "DISABLE":
        return listener
    tls = copy.deepcopy(plain)
    tls["name"] = "mtls"
    tls["transport_socket"] = _downstream_socket(trust_domain)
    if mode == "STRICT":
        listener["filter_chains"] = [tls]
        return listener
    tls["filter_chain_match"] = {"transport_protocol": "tls", "application_protocols": [MESH_ALPN]}
    plain["name"] = "plaintext"
    listener["filter_chains"] = [tls, plain]
    listener["listener_filters"] = [
        *listener.get("listener_filters", []),
        {"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": TLS_INSPECTOR}},
    ]
    # A server-first protocol sends nothing to inspect: after the (15 s) inspection timeout the
    # connection goes on in plain text instead of being closed. Declare such ports STRICT or DISABLE.
    listener["continue_on_listener_filters_timeout"] = True
    return listener


def secure_inbound_all(listeners: dict[str, dict[str, Any]], proxy: Proxy, modes: InboundMtls, trust_domain: str) -> None:
    """Apply :func:`secure_inbound` to every inbound listener of ``proxy`` (in place)."""
    if not has_identity(proxy.labels):
        return
    for p in proxy.ports:
        ln = listeners.get(f"inbound|{p.number}")
        if ln is not None and len(ln.get("filter_chains", [])) == 1:
            secure_inbound(ln, modes.mode(p.number), trust_domain)
