"""Mesh mTLS: a DestinationRule whose ``tls`` mode cannot work with the PeerAuthentication of
the workloads it sends to (IST0113)."""

from __future__ import annotations

from collections.abc import Iterator

from ...config.names import resolve_host
from ...config.types import DestinationRuleSpec
from ...translate.mtls import dr_tls_mode
from ...translate.peer_authn import effective_mode
from ..context import Context
from ..messages import Message
from ..registry import analyzer

_PLAIN_OR_OWN_TLS = ("DISABLE", "SIMPLE", "MUTUAL")


@analyzer("IST0113", "auth.MTLSAnalyzer",
          "A DestinationRule's tls mode works with the PeerAuthentication of the workloads it sends to: "
          "no plain text or non-mesh TLS to a STRICT port, no ISTIO_MUTUAL to a DISABLE port.",
          live_only=True)
def mtls_policy_conflicts(ctx: Context) -> Iterator[Message]:
    snap = ctx.snapshot
    for dr in ctx.of_kind("DestinationRule"):
        spec = dr.spec
        if not isinstance(spec, DestinationRuleSpec):
            continue
        svc = snap.services.get(resolve_host(spec.host, dr.namespace, ctx.domain_suffix))
        if svc is None or svc.origin != "registry":
            continue
        for port in svc.ports:
            client = dr_tls_mode(dr, None, port.number)
            if client is None:
                continue  # auto mTLS follows the server's policy
            modes = {effective_mode(snap, svc.namespace, dict(e.labels), port.number) for e in svc.endpoints}
            if client in _PLAIN_OR_OWN_TLS and "STRICT" in modes:
                server, hint = "STRICT", "remove trafficPolicy.tls (auto mTLS) or set tls.mode: ISTIO_MUTUAL"
            elif client == "ISTIO_MUTUAL" and "DISABLE" in modes:
                server, hint = "DISABLE", "remove trafficPolicy.tls, or let the PeerAuthentication accept mTLS (PERMISSIVE)"
            else:
                continue
            yield ctx.message(
                "IST0113", dr,
                f"DestinationRule {dr.namespace}/{dr.name} sends {client} traffic to port {port.number} of "
                f"{svc.hostname}, whose workloads' PeerAuthentication is {server}: requests will fail.",
                path="spec.trafficPolicy.tls", hint=hint)
