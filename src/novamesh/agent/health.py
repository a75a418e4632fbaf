"""The agent's health port: ``GET /healthz/ready`` answers 200 when the workload can serve.

A minimal HTTP/1.x responder on asyncio streams (one request per connection): a health probe
needs nothing more, and it keeps a web framework's signal handling out of the agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ..errors import NovameshError

__all__ = ["HealthServer", "READY_PATH"]

log = logging.getLogger(__name__)

READY_PATH = "/healthz/ready"


class HealthServer:
    """Serves ``GET /healthz/ready`` on ``host:port``: 200 if ``probe()`` is true, else 503."""

    def __init__(self, host: str, port: int, probe: Callable[[], Awaitable[bool]]) -> None:
        self.host = host
        self.port = port
        self.probe = probe
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind and serve. Raises :class:`NovameshError` if the port is taken."""
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise NovameshError(
                f"cannot serve the health port on {self.host}:{self.port}: {exc.strerror}; is another "
                f"workload using address {self.host}? (set NOVAMESH_HEALTH_PORT to move it)"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop accepting connections."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _probe(self) -> bool:
        try:
            return await self.probe()
        except Exception:  # a probe bug must answer "not ready", not break the health port
            log.exception("health probe failed")
            return False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers: nothing in them matters here
                parts = request.decode("latin-1").split()
                if len(parts) >= 2 and parts[0] in ("GET", "HEAD") and parts[1].split("?")[0] == READY_PATH:
                    ok = await self._probe()
                    status, body = ("200 OK", "ready\n") if ok else ("503 Service Unavailable", "not ready\n")
                else:
                    status, body = "404 Not Found", f"not found; try GET {READY_PATH}\n"
                if parts and parts[0] == "HEAD":
                    body_bytes = b""
                else:
                    body_bytes = body.encode()
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode() + body_bytes)
                await writer.drain()
        except (OSError, TimeoutError, UnicodeError) as exc:
            log.debug("health request failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
