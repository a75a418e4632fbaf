"""One TLS port, two gRPC services: route each connection on port 15012 by its TLS server name.

Istio serves certificate signing and xDS on one port (15012) with an *optional* client
certificate: a new workload has no certificate yet, a running sidecar presents one. gRPC Python
can only require client certificates or never ask for them, so novamesh runs two internal gRPC
servers on loopback (the CSR service, server-authenticated TLS; the ADS server, mutual TLS) and
puts this small TCP router in front of them on the public port. It reads the ClientHello (without
terminating TLS), takes the SNI, and splices the connection to the matching backend: TLS runs end
to end between the client and the real server, so the backend authenticates the peer itself.

Clients choose by server name: the agent's CSR client sends ``novamesh-control-plane``; the Envoy
ADS cluster sends ``xds.novamesh-control-plane`` (:data:`XDS_SERVER_NAME`). Anything that is not a
TLS ClientHello is closed unanswered.

The backends see the router's loopback address as their peer; :meth:`SniRouter.peer_of` maps it
back to the client's real address for their logs.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable

from ..errors import NovameshError

__all__ = ["SniRouter", "client_hello_sni", "NotClientHello", "MAX_HELLO"]

log = logging.getLogger(__name__)

MAX_HELLO = 64 * 1024
"""The most ClientHello bytes read before routing (a hello spanning more is refused)."""
_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_SNI_EXTENSION = 0x0000
_HOST_NAME = 0x00


class NotClientHello(ValueError):
    """The bytes are not (the start of) a TLS ClientHello."""


class _Reader:
    """Bounds-checked big-endian reads over a bytes buffer."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise NotClientHello("truncated ClientHello")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack("!H", self.take(2))[0])

    def u24(self) -> int:
        hi, lo = struct.unpack("!BH", self.take(3))
        return int(hi) << 16 | int(lo)

    def vector(self, length_bytes: int) -> bytes:
        n = self.u8() if length_bytes == 1 else self.u16()
        return self.take(n)


def handshake_length(records: bytes) -> int | None:
    """How many record bytes hold the whole ClientHello, or None while more are needed.
    Raises :class:`NotClientHello` for anything else."""
    payload, pos = b"", 0
    while True:
        if len(records) < pos + 5:
            return None
        ctype, _version, length = (int(v) for v in struct.unpack("!BHH", records[pos : pos + 5]))
        if ctype != _HANDSHAKE or length == 0 or length > 16384 + 2048:
            raise NotClientHello("not a TLS handshake record")
        if len(records) < pos + 5 + length:
            return None
        payload += records[pos + 5 : pos + 5 + length]
        pos += 5 + length
        if payload[0] != _CLIENT_HELLO:
            raise NotClientHello("the first handshake message is not a ClientHello")
        if len(payload) >= 4 and len(payload) >= 4 + int.from_bytes(payload[1:4], "big"):
            return pos


def client_hello_sni(records: bytes) -> str | None:
    """The server name (SNI) of the ClientHello in ``records`` (one or more complete TLS
    records), lower-cased; None when the client sent none. Raises :class:`NotClientHello`."""
    payload, pos = b"", 0
    while pos < len(records):
        r = _Reader(records[pos:])
        if r.u8() != _HANDSHAKE:
            raise NotClientHello("not a TLS handshake record")
        r.u16()
        payload += r.vector(2)
        pos += r.pos
    r = _Reader(payload)
    if r.u8() != _CLIENT_HELLO:
        raise NotClientHello("the first handshake message is not a ClientHello")
    body = _Reader(r.take(r.u24()))
    body.take(2 + 32)  # client_version, random
    body.vector(1)  # session_id
    body.vector(2)  # cipher_suites
    body.vector(1)  # compression_methods
    if body.pos == len(body.data):
        return None  # no extensions at all
    extensions = _Reader(body.vector(2))
    while extensions.pos < len(extensions.data):
        ext_type, data = extensions.u16(), extensions.vector(2)
        if ext_type != _SNI_EXTENSION:
            continue
        names = _Reader(_Reader(data).vector(2))
        while names.pos < len(names.data):
            kind, name = names.u8(), names.vector(2)
            if kind == _HOST_NAME:
                try:
                    return name.decode("ascii").lower()
                except UnicodeDecodeError as exc:
                    raise NotClientHello("server name is not ASCII") from exc
        return None
    return None


class SniRouter:
    """TCP router on ``host:port``: each connection goes to ``route(sni)`` (a loopback port).

    Built on asyncio protocols, not streams: once routed, each chunk is handed from one
    transport to the other in the ``data_received`` callback (no task, no await per chunk), with
    flow control from ``pause_writing``/``resume_writing``. bench/portmux.py measures the cost."""

    def __init__(self, host: str, port: int, route: Callable[[str | None], int], *, hello_timeout: float) -> None:
        self.host, self.port = host, port
        self.route = route
        self.hello_timeout = hello_timeout
        self.routed = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._open: set[_Client] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._peers: dict[int, str] = {}

    async def start(self) -> int:
        """Bind and serve; returns the bound port. Raises NovameshError when it is taken."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _Client(self), self.host, self.port, reuse_address=True)
        except OSError as exc:
            raise NovameshError(f"cannot listen on {self.host}:{self.port} ({exc.strerror}); set csr_port") from exc
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    def clients(self) -> list[str]:
        """The client addresses (``ipv4:host:port``) of the connections routed right now."""
        return sorted(self._peers.values())

    def peer_of(self, grpc_peer: str) -> str:
        """The client address behind a backend's ``context.peer()`` (``ipv4:127.0.0.1:P``)."""
        _, _, port = grpc_peer.rpartition(":")
        return self._peers.get(int(port), grpc_peer) if port.isdigit() else grpc_peer

    async def stop(self) -> None:
        """Stop accepting and close every routed connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        for client in list(self._open):
            client.close()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _Client(asyncio.Protocol):
    """One accepted connection: buffers the ClientHello, connects the backend its SNI names,
    then forwards both ways (the backend side is :class:`_Backend`)."""

    def __init__(self, router: SniRouter) -> None:
        self.router = router
        self.transport: asyncio.Transport | None = None
        self.backend: _Backend | None = None
        self.client = "unknown"
        self.buf = b""
        self.routing = False
        self.local_port = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.client = f"ipv{6 if ':' in str(peer[0]) else 4}:{peer[0]}:{peer[1]}"
        self.router._open.add(self)
        self.timer = asyncio.get_running_loop().call_later(self.router.hello_timeout, self.refuse, "no ClientHello in time")

    def data_received(self, data: bytes) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.write(data)
            return
        self.buf += data
        if self.routing:
            return  # connecting to the backend; sent with the hello
        try:
            need = handshake_length(self.buf)
            if need is None:
                if len(self.buf) >= MAX_HELLO:
                    raise NotClientHello(f"ClientHello larger than {MAX_HELLO} bytes")
                return
            sni = client_hello_sni(self.buf[:need])
        except NotClientHello as exc:
            self.refuse(str(exc))
            return
        if self.timer is not None:
            self.timer.cancel()
        self.routing = True
        assert self.transport is not None
        self.transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._connect(self.router.route(sni)), name=f"route {self.client}")
        self.router._tasks.add(task)
        task.add_done_callback(self.router._tasks.discard)

    async def _connect(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, backend = await loop.create_connection(lambda: _Backend(self), "127.0.0.1", port)
        except OSError as exc:
            log.warning("TLS port: could not reach the backend for %s: %s", self.client, exc)
            self.close()
            return
        if self.transport is None or self.transport.is_closing():
            transport.close()
            return
        self.local_port = int(transport.get_extra_info("sockname")[1])
        self.router._peers[self.local_port] = self.client
        self.router.routed += 1
        self.backend = backend
        transport.write(self.buf)
        self.buf = b""
        self.transport.resume_reading()

    def refuse(self, why: str) -> None:
        self.router.refused += 1
        log.info("closed a connection from %s on the TLS port: %s", self.client, why)
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool:
        if self.backend is None or self.backend.transport is None:
            return False  # before routing: close
        if self.backend.transport.can_write_eof():
            self.backend.transport.write_eof()
        return True  # half-close: the answer may still come

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.close()
        self.router._peers.pop(self.local_port, None)
        self.router._open.discard(self)
        self.transport = None

    def pause_writing(self) -> None:  # the client is slow to read: stop reading the backend
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.resume_reading()


class _Backend(asyncio.Protocol):
    """The router's connection to a loopback backend, forwarding to its :class:`_Client`."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.client.transport is not None:
            self.client.transport.write(data)

    def eof_received(self) -> bool:
        if self.client.transport is not None and self.client.transport.can_write_eof():
            self.client.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()
        self.transport = None

    def pause_writing(self) -> None:  # the backend is slow to read: stop reading the client
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.resume_reading()
