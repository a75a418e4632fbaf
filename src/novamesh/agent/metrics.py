"""The agent's merged metrics port (Istio's 15020).

* ``GET /stats/prometheus``: the workload's ``istio_*`` metrics (aggregated from Envoy's access
  logs by :class:`~novamesh.observe.als.AccessLogServer`), followed by the app's own metrics when
  ``app_metrics_port`` is set (scraped from ``<app host>:<port><app_metrics_path>`` on each
  request, as Istio's metrics merging does for annotated pods);
* ``GET /stats/envoy``: Envoy's own statistics (admin ``/stats/prometheus``), passed through.

Like the health port, a minimal HTTP/1.x responder on asyncio streams (one request per
connection, ``Connection: close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import NovameshError
from ..model.proxy import Proxy
from ..observe.aggregate import LocalIdentity, Peer
from ..observe.als import AccessLogServer
from ..observe.envoy_config import peer_value
from ..observe.workload_metrics import WorkloadMetrics
from ..settings import Settings

__all__ = ["MetricsServer", "Telemetry", "start_telemetry", "MERGED_PATH", "ENVOY_PATH"]

log = logging.getLogger(__name__)

MERGED_PATH = "/stats/prometheus"
ENVOY_PATH = "/stats/envoy"


class MetricsServer:
    """Serves :data:`MERGED_PATH` and :data:`ENVOY_PATH` on ``host:port``."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: WorkloadMetrics,
        *,
        envoy_admin: str,
        app_metrics_url: str = "",
        timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.envoy_admin = envoy_admin.rstrip("/")
        self.app_metrics_url = app_metrics_url
        self.timeout = timeout
        self._server: asyncio.Server | None = None
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Bind and serve. Raises :class:`NovameshError` if the port is taken."""
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            raise NovameshError(
                f"cannot serve the metrics port on {self.host}:{self.port}: {exc.strerror}; is another "
                f"workload using address {self.host}? (set NOVAMESH_METRICS_PORT to move it)"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        self._http = httpx.AsyncClient(timeout=self.timeout, trust_env=False)

    async def stop(self) -> None:
        """Stop accepting connections."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _fetch(self, url: str) -> str | None:
        assert self._http is not None
        try:
            resp = await self._http.get(url)
        except httpx.HTTPError as exc:
            log.debug("cannot fetch %s: %s", url, exc)
            return None
        return resp.text if resp.status_code == 200 else None

    async def merged(self) -> bytes:
        """The body of :data:`MERGED_PATH`."""
        body = generate_latest(self.metrics.registry)
        if self.app_metrics_url:
            app = await self._fetch(self.app_metrics_url)
            if app is None:  # the app's metrics are optional: ours are still served
                body += f"# app metrics unavailable at {self.app_metrics_url}\n".encode()
            else:
                body += app.encode() if app.endswith("\n") else (app + "\n").encode()
        return body

    async def _respond(self, path: str) -> tuple[str, bytes, str]:
        if path == MERGED_PATH:
            return "200 OK", await self.merged(), CONTENT_TYPE_LATEST
        if path == ENVOY_PATH:
            text = await self._fetch(f"{self.envoy_admin}/stats/prometheus")
            if text is None:
                return "503 Service Unavailable", b"envoy admin unavailable\n", "text/plain"
            return "200 OK", text.encode(), CONTENT_TYPE_LATEST
        return "404 Not Found", f"not found; try GET {MERGED_PATH} or {ENVOY_PATH}\n".encode(), "text/plain"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.timeout + 5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                parts = request.decode("latin-1").split()
                if len(parts) >= 2 and parts[0] in ("GET", "HEAD"):
                    status, body, ctype = await self._respond(parts[1].split("?")[0])
                else:
                    status, body, ctype = "405 Method Not Allowed", b"only GET\n", "text/plain"
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode() + (b"" if parts and parts[0] == "HEAD" else body))
                await writer.drain()
        except (OSError, TimeoutError, UnicodeError) as exc:
            log.debug("metrics request failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class Telemetry:
    """The access-log server and the metrics port of one workload, started and stopped together."""

    def __init__(self, als: AccessLogServer, server: MetricsServer) -> None:
        self.als = als
        self.server = server

    async def stop(self) -> None:
        """Stop both servers."""
        try:
            await self.server.stop()
        finally:
            await self.als.stop()


async def start_telemetry(proxy: Proxy, settings: Settings, app_host: str) -> Telemetry | None:
    """Start the access-log server (``proxy.telemetry_port``) and the metrics port
    (``settings.metrics_port``) on the workload's address; None when metrics are off."""
    if not proxy.telemetry_port:
        return None
    metrics = WorkloadMetrics()
    me = LocalIdentity(Peer.parse(peer_value(proxy)), f"{proxy.service}.{proxy.namespace}.svc.{settings.domain_suffix}", settings.domain_suffix)
    als = AccessLogServer(proxy.address, proxy.telemetry_port, metrics, me)
    await als.start()
    app_url = ""
    if settings.app_metrics_port:
        app_url = f"http://{app_host or proxy.address}:{settings.app_metrics_port}{settings.app_metrics_path}"
    server = MetricsServer(
        proxy.address, settings.metrics_port, metrics, envoy_admin=f"http://{proxy.address}:{proxy.admin_port}", app_metrics_url=app_url
    )
    try:
        await server.start()
    except BaseException:
        await als.stop()
        raise
    return Telemetry(als, server)
