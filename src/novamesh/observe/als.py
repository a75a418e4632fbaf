"""The agent's gRPC access-log service: Envoy streams entries here, we count them.

Envoy opens one stream per logger and worker thread; the first message of a stream names the
logger (``identifier.log_name``), later ones omit it. Entries are aggregated on arrival (a few
label lookups and counter increments each), so memory stays bounded by the label sets seen.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from ..errors import NovameshError
from .aggregate import LocalIdentity, record_http, record_tcp
from .workload_metrics import WorkloadMetrics

__all__ = ["AccessLogServer"]

log = logging.getLogger(__name__)


class _Servicer(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, metrics: WorkloadMetrics, me: LocalIdentity) -> None:
        self.metrics = metrics
        self.me = me
        self.entries = 0

    async def StreamAccessLogs(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage], context: grpc.aio.ServicerContext
    ) -> als_pb2.StreamAccessLogsResponse:
        log_name = ""
        async for msg in request_iterator:
            if msg.HasField("identifier"):
                log_name = msg.identifier.log_name
            try:
                for http in msg.http_logs.log_entry:
                    record_http(self.metrics, self.me, log_name, http)
                    self.entries += 1
                for tcp in msg.tcp_logs.log_entry:
                    record_tcp(self.metrics, self.me, log_name, tcp)
                    self.entries += 1
            except Exception:  # a malformed entry must not end the stream (Envoy would reconnect)
                log.exception("cannot aggregate an access-log entry from %s", log_name)
        return als_pb2.StreamAccessLogsResponse()


class AccessLogServer:
    """Serves Envoy's AccessLogService on ``host:port`` and counts into ``metrics``."""

    def __init__(self, host: str, port: int, metrics: WorkloadMetrics, me: LocalIdentity) -> None:
        self.host = host
        self.port = port
        self.servicer = _Servicer(metrics, me)
        self._server: grpc.aio.Server | None = None

    @property
    def entries(self) -> int:
        """Entries received so far (HTTP and TCP)."""
        return self.servicer.entries

    async def start(self) -> None:
        """Bind and serve. Raises :class:`NovameshError` if the port is taken."""
        server = grpc.aio.server()
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(self.servicer, server)
        try:
            bound = server.add_insecure_port(f"{self.host}:{self.port}")
        except RuntimeError as exc:
            bound = 0
            log.debug("bind failed: %s", exc)
        if not bound:
            raise NovameshError(
                f"cannot serve the access-log (metrics) port on {self.host}:{self.port}; is another workload "
                f"using address {self.host}? (set NOVAMESH_TELEMETRY_PORT to move it, 0 turns metrics off)"
            )
        self.port = bound
        await server.start()
        self._server = server

    async def stop(self) -> None:
        """Stop serving (streams still open are cut)."""
        if self._server is not None:
            await self._server.stop(grace=0.5)
            self._server = None
