"""Port 15012: the SNI router in front of the CSR service and mTLS ADS, and the ADS identity check.

Real TLS on loopback: gRPC clients with and without a workload certificate, a real CSR service,
and an ADS servicer that answers one response per stream (the router and the identity check are
what is under test; the real ADS server is covered by the e2e tests).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from novamesh.model.proxy import METADATA_KEY
from novamesh.security import pki
from novamesh.security.csr import SERVER_NAME, XDS_SERVER_NAME, request_certificate
from novamesh.security.portmux import NotClientHello, client_hello_sni, handshake_length
from novamesh.security.service import SecurityServer, bind_xds_ports, tokens_for
from novamesh.security.xds_authn import AuthenticatedAds
from novamesh.settings import Settings
from novamesh.store.sqlite import SqliteStore
from novamesh.testing.clock import ManualClock
from novamesh.testing.mesh import free_port

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def _client_hello(server_name: str | None) -> bytes:
    """The ClientHello records Python's TLS stack sends for ``server_name``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_sni_is_read_from_a_real_client_hello() -> None:
    hello = _client_hello("xds.novamesh-control-plane")
    assert handshake_length(hello) == len(hello)
    assert client_hello_sni(hello) == "xds.novamesh-control-plane"
    assert client_hello_sni(_client_hello("Novamesh-Control-Plane")) == "novamesh-control-plane"
    assert client_hello_sni(_client_hello(None)) is None
    # Split anywhere, the router waits for the rest; split across two records, it reassembles.
    assert handshake_length(hello[:7]) is None and handshake_length(hello[:-1]) is None
    body = hello[5:]
    two = b"\x16\x03\x01" + (40).to_bytes(2, "big") + body[:40] + b"\x16\x03\x01" + (len(body) - 40).to_bytes(2, "big") + body[40:]
    assert handshake_length(two) == len(two) and client_hello_sni(two) == "xds.novamesh-control-plane"
    # Bytes after the hello (say, early data) are not part of it.
    assert handshake_length(hello + b"\x17\x03\x03\x00\x10" + b"x" * 16) == len(hello)


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n\r\n", b"PRI * HTTP/2.0\r\n", b"\x16\x03\x01\x00\x00", b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00"])
def test_anything_but_a_client_hello_is_refused(data: bytes) -> None:
    with pytest.raises(NotClientHello):
        handshake_length(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048), st.integers(min_value=0, max_value=600), st.binary(min_size=1, max_size=8))
def test_fuzz_client_hello_parsing_never_crashes(noise: bytes, at: int, patch: bytes) -> None:
    """Random bytes, and real hellos with bytes overwritten: a name, None or NotClientHello."""
    hello = bytearray(_HELLO)
    at = at % len(hello)
    hello[at : at + len(patch)] = patch
    for data in (noise, bytes(hello), b"\x16\x03\x01" + noise):
        try:
            if handshake_length(data) is not None:
                name = client_hello_sni(data)
                assert name is None or isinstance(name, str)
        except NotClientHello:
            pass


_HELLO = _client_hello("xds.novamesh-control-plane")


class _OneResponse(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """Answers the first request of a stream with one response naming the node and peer."""

    def __init__(self, security: SecurityServer) -> None:
        self.security = security
        self.peers: list[tuple[str, list[str]]] = []

    async def StreamAggregatedResources(self, request_iterator: AsyncIterator[Any], context: Any) -> None:  # noqa: N802
        async for req in request_iterator:
            router = self.security.router
            self.peers.append((context.peer(), router.clients() if router else []))
            await context.write(discovery_pb2.DiscoveryResponse(version_info=req.node.id, nonce="1"))
            return


def _node(node_id: str, namespace: str, service_account: str) -> discovery_pb2.DiscoveryRequest:
    md = struct_pb2.Struct()
    md.update({METADATA_KEY: {"id": node_id, "namespace": namespace, "service_account": service_account}})
    return discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id=node_id, metadata=md), type_url="t")


async def _ads(port: int, roots: bytes, request: discovery_pb2.DiscoveryRequest, cert: tuple[bytes, bytes] | None,
               server_name: str = XDS_SERVER_NAME) -> str:  # fmt: skip
    """One ADS exchange through the router; the response's version_info (the node id)."""
    key, chain = cert if cert else (None, None)
    creds = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", server_name)]) as ch:
        stream = ch.stream_stream(ADS_METHOD, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                                  response_deserializer=discovery_pb2.DiscoveryResponse.FromString)(timeout=10)  # fmt: skip
        await stream.write(request)
        resp = await stream.read()
        stream.cancel()
        return str(resp.version_info)


async def test_one_port_serves_csr_and_mtls_xds_and_checks_the_node(store: SqliteStore, clock: ManualClock, tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path), csr_port=free_port(), xds_port=free_port(), trust_domain="prod.example")
    security = SecurityServer(s, store, clock)
    inner = _OneResponse(security)
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AuthenticatedAds(inner, s.trust_domain, security.peer_name), server)
    bind_xds_ports(server, s, security)
    await server.start()
    await security.start()
    try:
        assert security.ca is not None
        roots = b"".join(pki.cert_pem(r) for r in security.ca.trust_bundle())
        # The CSR service answers on csr_port (server name novamesh-control-plane) ...
        token = tokens_for(s, store, clock).create("payments", "api").value
        key = pki.generate_key()
        csr = pki.make_csr(key, pki.SpiffeId("prod.example", "payments", "api"))
        chain, _ = await request_certificate(f"127.0.0.1:{s.csr_port}", roots, csr, token=token)
        assert pki.spiffe_of(pki.load_certs(chain)[0]).uri == "spiffe://prod.example/ns/payments/sa/api"
        cert = (pki.key_pem(key), chain)
        # ... and ADS over mTLS on the same port (server name xds.novamesh-control-plane).
        assert await _ads(s.csr_port, roots, _node("sidecar~127.0.0.2~a~payments", "payments", "api"), cert) == "sidecar~127.0.0.2~a~payments"
        peer, routed = inner.peers[-1]
        assert peer in routed  # the servicer sees the client's address, not the router's own socket
        # A certificate of payments/api cannot ask for another identity's configuration.
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await _ads(s.csr_port, roots, _node("sidecar~127.0.0.3~b~billing", "billing", "api"), cert)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Without a client certificate the xDS backend refuses the TLS handshake.
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await _ads(s.csr_port, roots, _node("sidecar~127.0.0.2~a~payments", "payments", "api"), None)
        assert anonymous.value.code() == grpc.StatusCode.UNAVAILABLE
        # ADS is not served on the CSR side of the port (server name novamesh-control-plane).
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await _ads(s.csr_port, roots, _node("sidecar~127.0.0.2~a~payments", "payments", "api"), cert, SERVER_NAME)
        assert wrong.value.code() == grpc.StatusCode.UNIMPLEMENTED
        # Garbage and silent clients are closed; the port keeps serving.
        assert security.router is not None
        refused = security.router.refused
        reader, writer = await asyncio.open_connection("127.0.0.1", s.csr_port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed unanswered
        writer.close()
        assert security.router.refused == refused + 1
        chain2, _ = await request_certificate(f"127.0.0.1:{s.csr_port}", roots, pki.make_csr(key, pki.SpiffeId("prod.example", "payments", "api")),
                                              current=(chain, key))  # fmt: skip
        assert pki.spiffe_of(pki.load_certs(chain2)[0]).uri == "spiffe://prod.example/ns/payments/sa/api"
        assert len(inner.peers) == 1  # only the authenticated, matching stream reached the servicer
    finally:
        await security.stop()
        await server.stop(None)


async def test_plaintext_ads_passes_unchecked(store: SqliteStore, clock: ManualClock, tmp_path: Path) -> None:
    """Port 15010 (loopback, local development) has no certificate to check."""
    s = Settings(data_dir=str(tmp_path), csr_port=free_port(), xds_port=free_port())
    security = SecurityServer(s, store, clock)
    inner = _OneResponse(security)
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(AuthenticatedAds(inner, s.trust_domain), server)
    bind_xds_ports(server, s, security)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{s.xds_port}") as ch:
            stream = ch.stream_stream(ADS_METHOD, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                                      response_deserializer=discovery_pb2.DiscoveryResponse.FromString)(timeout=10)  # fmt: skip
            await stream.write(_node("n1", "default", "x"))
            assert (await stream.read()).version_info == "n1"
            stream.cancel()
    finally:
        await server.stop(None)


async def test_router_forwards_big_streams_intact_and_closes_silent_clients() -> None:
    """20 MB each way through the router (flow control both ways), byte for byte; a client that
    sends no ClientHello is closed after hello_timeout; stop() closes what is still open."""
    import hashlib

    from novamesh.security.portmux import SniRouter

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    backend = await asyncio.start_server(echo, "127.0.0.1", 0)
    backend_port = int(backend.sockets[0].getsockname()[1])
    names: list[str | None] = []
    router = SniRouter("127.0.0.1", 0, lambda sni: names.append(sni) or backend_port, hello_timeout=0.3)
    port = await router.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        payload = _HELLO + bytes(range(256)) * (20 * 4096)

        async def send() -> None:
            for i in range(0, len(payload), 1 << 20):
                writer.write(payload[i : i + (1 << 20)])
                await writer.drain()
            writer.write_eof()  # half-close: the echo still comes back

        sender = asyncio.create_task(send())
        got = hashlib.sha256()
        total = 0
        while data := await asyncio.wait_for(reader.read(1 << 20), 20):
            got.update(data)
            total += len(data)
        await sender
        writer.close()
        assert total == len(payload) and got.digest() == hashlib.sha256(payload).digest()
        assert names == ["xds.novamesh-control-plane"] and router.routed == 1
        # Silent client: closed after hello_timeout, counted as refused.
        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(silent_r.read(10), 5) == b""
        silent_w.close()
        assert router.refused == 1
        # stop() closes a routed connection that is still open.
        open_r, open_w = await asyncio.open_connection("127.0.0.1", port)
        open_w.write(_HELLO)
        await open_w.drain()
        for _ in range(200):
            if router.clients():
                break
            await asyncio.sleep(0.01)
        assert len(router.clients()) == 1
        await router.stop()
        try:  # the echoed hello may still be there; then EOF (or a reset): closed either way
            while await asyncio.wait_for(open_r.read(1 << 16), 5):
                pass
        except ConnectionResetError:
            pass
        assert router.clients() == []
        open_w.close()
    finally:
        await router.stop()
        backend.close()
