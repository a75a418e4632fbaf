"""The agent's SDS server: Envoy's SecretDiscoveryService on a Unix socket.

Envoy asks for two secrets, as in Istio: ``default`` (the workload's certificate chain and
private key) and ``ROOTCA`` (the trust bundle). :meth:`SdsServer.update` installs new material
and pushes it on every open stream (state of the world, one stream per secret as Envoy opens
them); Envoy swaps the TLS context for new connections and keeps existing ones, so a rotation
drops nothing. The private key only ever travels over this socket (mode 0600).

:func:`add_sds` adds what the bootstrap needs: the static cluster ``sds-grpc`` pointing at the
socket, and ``novamesh-identity``, a static cluster without endpoints whose TLS context refers to
both secrets so that Envoy fetches (and ``/config_dump`` and ``/certs`` show) them before any
mesh mTLS uses them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc  # novamesh/__init__.py turns gRPC's fork support off: the agent forks while serving SDS
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2

from ..security.csr import XDS_SERVER_NAME
from ..settings import Settings
from .bootstrap import XDS_CLUSTER, aim_xds_cluster, csr_targets

__all__ = ["SdsServer", "add_sds", "sds_socket_path", "SDS_CLUSTER", "CERT_SECRET", "ROOT_SECRET"]

log = logging.getLogger(__name__)

SDS_CLUSTER = "sds-grpc"
IDENTITY_CLUSTER = "novamesh-identity"
CERT_SECRET = "default"
ROOT_SECRET = "ROOTCA"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
_UDS_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
_TMP_PREFIX = "nm-sds-"


def sds_socket_path(workdir: Path) -> Path:
    """``<workdir>/sds.sock``, or a short path under the temp dir when that is too long."""
    path = workdir / "sds.sock"
    if len(str(path)) <= _UDS_MAX:
        return path
    return Path(tempfile.mkdtemp(prefix=_TMP_PREFIX)) / "sds.sock"


def _secret(name: str, chain: bytes, key: bytes, roots: bytes) -> secret_pb2.Secret:
    if name == CERT_SECRET:
        return secret_pb2.Secret(
            name=name,
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_bytes=chain),
                private_key=base_pb2.DataSource(inline_bytes=key),
            ),
        )
    return secret_pb2.Secret(
        name=name, validation_context=common_pb2.CertificateValidationContext(trusted_ca=base_pb2.DataSource(inline_bytes=roots))
    )


class SdsServer(sds_pb2_grpc.SecretDiscoveryServiceServicer):  # type: ignore[misc]
    """Serves :data:`CERT_SECRET` and :data:`ROOT_SECRET` on ``socket_path`` (see the module
    docstring). Call :meth:`update` before :meth:`start` so the first answer is complete."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.version = 0
        self.pushes = 0
        self.nacks = 0
        self._material: tuple[bytes, bytes, bytes] | None = None
        self._changed = asyncio.Condition()
        self._server: grpc.aio.Server | None = None

    async def update(self, chain_pem: bytes, key_pem: bytes, roots_pem: bytes) -> None:
        """Install new material and wake every stream to push it."""
        async with self._changed:
            self._material = (chain_pem, key_pem, roots_pem)
            self.version += 1
            self._changed.notify_all()

    async def _wait_newer(self, version: int) -> int:
        async with self._changed:
            await self._changed.wait_for(lambda: self.version > version)
            return self.version

    def _response(self, names: list[str], nonce: int) -> discovery_pb2.DiscoveryResponse:
        assert self._material is not None
        resources = []
        for name in names:
            if name not in (CERT_SECRET, ROOT_SECRET):
                continue  # unknown names get no resource (Envoy keeps waiting, as with Istio)
            packed = any_pb2.Any()
            packed.Pack(_secret(name, *self._material))
            resources.append(packed)
        return discovery_pb2.DiscoveryResponse(
            version_info=str(self.version), resources=resources, type_url=SECRET_TYPE, nonce=str(nonce)
        )

    async def StreamSecrets(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        """State of the world: answer every new set of names, push every new version."""
        names: list[str] = []
        sent = -1
        nonce = 0
        requests = aiter(request_iterator)
        reader = asyncio.ensure_future(anext(requests))
        newer = asyncio.ensure_future(self._wait_newer(self.version))
        try:
            while True:
                await asyncio.wait({reader, newer}, return_when=asyncio.FIRST_COMPLETED)
                if reader.done():
                    try:
                        req = reader.result()
                    except StopAsyncIteration:
                        return
                    if req.HasField("error_detail"):
                        self.nacks += 1
                        log.error("envoy rejected secrets version %s: %s", req.version_info, req.error_detail.message)
                    if list(req.resource_names) != names:
                        names = list(req.resource_names)
                        sent = -1  # a new subscription gets the current state at once
                    reader = asyncio.ensure_future(anext(requests))
                if newer.done():
                    newer = asyncio.ensure_future(self._wait_newer(self.version))
                if names and self._material is not None and self.version != sent:
                    nonce += 1
                    sent = self.version
                    self.pushes += 1
                    yield self._response(names, nonce)
        finally:
            for fut in (reader, newer):
                fut.cancel()
            await asyncio.gather(reader, newer, return_exceptions=True)

    async def start(self) -> None:
        """Listen on the Unix socket (a stale socket file is replaced)."""
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if self.socket_path.exists():
            self.socket_path.unlink()
        server = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(self, server)
        server.add_insecure_port(f"unix:{self.socket_path}")
        await server.start()
        os.chmod(self.socket_path, 0o600)
        self._server = server

    async def stop(self) -> None:
        """Stop serving and remove the socket."""
        if self._server is not None:
            await self._server.stop(0.5)
            self._server = None
        if self.socket_path.exists():
            self.socket_path.unlink()
        if self.socket_path.parent.name.startswith(_TMP_PREFIX):
            self.socket_path.parent.rmdir()  # the short fallback directory is ours alone


def _sds_config(name: str) -> dict[str, Any]:
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


def add_sds(bootstrap: dict[str, Any], socket_path: Path, settings: Settings | None = None) -> dict[str, Any]:
    """Add the ``sds-grpc`` and ``novamesh-identity`` static clusters to ``bootstrap`` (in
    place; returned for chaining). With ``settings.xds_tls`` (the default) the ADS cluster also
    moves to mutual TLS on the CSR port (see :func:`_mtls_xds`)."""
    http2 = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    sds_cluster = {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": SDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": str(socket_path)}}}}]}],
        },
        "typed_extension_protocol_options": http2,
    }
    identity_cluster = {
        "name": IDENTITY_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": IDENTITY_CLUSTER, "endpoints": []},
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {
                    "tls_certificate_sds_secret_configs": [_sds_config(CERT_SECRET)],
                    "validation_context_sds_secret_config": _sds_config(ROOT_SECRET),
                },
            },
        },
    }
    clusters = bootstrap.setdefault("static_resources", {}).setdefault("clusters", [])
    clusters.extend([sds_cluster, identity_cluster])
    if settings is not None and settings.xds_tls:
        _mtls_xds(clusters, settings)
    return bootstrap


def _mtls_xds(clusters: list[dict[str, Any]], settings: Settings) -> None:
    """Point the ADS cluster at every replica's CSR port (``csr_addresses``, else
    ``xds_host:csr_port``) over mutual TLS with server name :data:`XDS_SERVER_NAME`, which the
    control plane's port router sends to its ADS server: the workload certificate as client
    certificate, the trust bundle and the control plane's SPIFFE id to verify the server."""
    xds = next(c for c in clusters if c["name"] == XDS_CLUSTER)
    aim_xds_cluster(xds, csr_targets(settings))
    server_id = f"spiffe://{settings.trust_domain}/ns/novamesh-system/sa/control-plane"
    xds["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": XDS_SERVER_NAME,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [_sds_config(CERT_SECRET)],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": server_id}}]
                    },
                    "validation_context_sds_secret_config": _sds_config(ROOT_SECRET),
                },
            },
        },
    }
