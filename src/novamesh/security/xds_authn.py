"""Who may ask for a proxy's configuration: the ADS stream checked against the client certificate.

Over mutual TLS the ADS client presents its workload certificate, verified by gRPC against the
trust bundle. :class:`AuthenticatedAds` wraps the real ADS servicer and, before the first request
reaches it, checks that the node's namespace and service account (the agent's node metadata) are
the ones in the certificate's SPIFFE ID: a workload can read its own configuration, not another
identity's. A mismatch answers PERMISSION_DENIED; the log says why.

Plaintext streams (the loopback-only port 15010 for local development) carry no certificate
and pass unchecked; turn them off with ``xds_plaintext = false``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from ..xds.server import proxy_from_node
from . import pki

__all__ = ["AuthenticatedAds"]

log = logging.getLogger(__name__)


def _peer_identity(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[bool, pki.SpiffeId | None]:
    """(whether the stream is TLS, the client certificate's SPIFFE ID if any)."""
    auth = context.auth_context() or {}
    if b"ssl" not in auth.get("transport_security_type", []):
        return False, None
    pems = auth.get("x509_pem_cert") or []
    if not pems:
        return True, None
    try:
        return True, pki.spiffe_of(pki.load_certs(pems[0])[0])
    except pki.BadInput:
        return True, None


class AuthenticatedAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """``inner`` (the ADS servicer) behind the identity check of the module docstring."""

    def __init__(self, inner: ads_pb2_grpc.AggregatedDiscoveryServiceServicer, trust_domain: str,
                 peer_name: Callable[[str], str] = lambda peer: peer) -> None:  # fmt: skip
        self.inner = inner
        self.trust_domain = trust_domain
        self.peer_name = peer_name
        self.refused = 0

    async def StreamAggregatedResources(  # noqa: N802 (gRPC method name)
        self,
        request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        tls, spiffe = _peer_identity(context)
        if not tls:
            await self.inner.StreamAggregatedResources(request_iterator, context)
            return
        peer = self.peer_name(context.peer())
        first = await anext(request_iterator, None)
        if first is None:
            return
        why = self._refusal(spiffe, first)
        if why is not None:
            self.refused += 1
            log.warning("xDS stream from %s refused: %s", peer, why)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "the client certificate does not match the node")

        async def replay() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
            yield first
            async for req in request_iterator:
                yield req

        await self.inner.StreamAggregatedResources(replay(), cast(Any, _RealPeer(context, self.peer_name)))

    def _refusal(self, spiffe: pki.SpiffeId | None, first: discovery_pb2.DiscoveryRequest) -> str | None:
        if spiffe is None:
            return "no SPIFFE certificate"
        if spiffe.trust_domain != self.trust_domain:
            return f"{spiffe.uri} is of trust domain {spiffe.trust_domain!r}, not {self.trust_domain!r}"
        if not first.HasField("node"):
            return "the first request names no node"
        claimed = proxy_from_node(first.node)
        if (claimed.namespace, claimed.service_account) != (spiffe.namespace, spiffe.service_account):
            return f"node {first.node.id!r} claims ns/{claimed.namespace}/sa/{claimed.service_account} but presents {spiffe.uri}"
        return None


class _RealPeer:
    """``context`` whose ``peer()`` is the client's address behind the port-15012 router."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], peer_name: Callable[[str], str]) -> None:
        self._context = context
        self._peer = peer_name(context.peer())

    def peer(self) -> str:
        return self._peer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)
