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
import contextlib
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
_PIPE_CHUNK = 256 * 1024


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


async def _read_hello(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(the records holding the ClientHello, whatever the client sent after them), reading at
    most :data:`MAX_HELLO` bytes."""
    buf = b""
    while True:
        need = handshake_length(buf)
        if need is not None:
            return buf[:need], buf[need:]
        if len(buf) >= MAX_HELLO:
            raise NotClientHello(f"ClientHello larger than {MAX_HELLO} bytes")
        chunk = await reader.read(MAX_HELLO - len(buf))
        if not chunk:
            raise NotClientHello("connection closed before the ClientHello")
        buf += chunk


class SniRouter:
    """TCP router on ``host:port``: each connection goes to ``route(sni)`` (a loopback port)."""

    def __init__(self, host: str, port: int, route: Callable[[str | None], int], *, hello_timeout: float) -> None:
        self.host, self.port = host, port
        self.route = route
        self.hello_timeout = hello_timeout
        self.routed = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._peers: dict[int, str] = {}

    async def start(self) -> int:
        """Bind and serve; returns the bound port. Raises NovameshError when it is taken."""
        try:
            self._server = await asyncio.start_server(self._accept, self.host, self.port, reuse_address=True)
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

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        peer = writer.get_extra_info("peername")
        client = f"ipv{6 if ':' in str(peer[0]) else 4}:{peer[0]}:{peer[1]}" if peer else "unknown"
        local_port = 0
        try:
            try:
                hello, early = await asyncio.wait_for(_read_hello(reader), self.hello_timeout)
                sni = client_hello_sni(hello)
            except (NotClientHello, TimeoutError, ConnectionError) as exc:
                self.refused += 1
                log.info("closed a connection from %s on the TLS port: %s", client, exc or "no ClientHello in time")
                return
            backend_port = self.route(sni)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend_port)
            local_port = int(up_writer.get_extra_info("sockname")[1])
            self._peers[local_port] = client
            self.routed += 1
            up_writer.write(hello + early)
            await _pipe_both(reader, writer, up_reader, up_writer)
        except OSError as exc:
            log.warning("TLS port: could not reach the backend for %s: %s", client, exc)
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio's stream callback would log a cancelled handler)
        finally:
            self._peers.pop(local_port, None)
            self._handlers.discard(task)
            writer.close()

    async def stop(self) -> None:
        """Stop accepting and close every routed connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        for task in handlers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _pipe_both(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                     b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:  # fmt: skip
    """Copy both directions until either side closes, then close both."""
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_pipe(a_reader, b_writer))
            tg.create_task(_pipe(b_reader, a_writer))
    except* (ConnectionError, OSError):
        pass
    finally:
        b_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(_PIPE_CHUNK):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
