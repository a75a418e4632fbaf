"""The agent's access-log server and metrics port, over real sockets on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from novamesh.agent.metrics import ENVOY_PATH, MERGED_PATH, MetricsServer
from novamesh.errors import NovameshError
from novamesh.observe.aggregate import LocalIdentity, Peer
from novamesh.observe.als import AccessLogServer
from novamesh.observe.envoy_config import LOG_INBOUND
from novamesh.observe.workload_metrics import WorkloadMetrics

ME = LocalIdentity(Peer("back-v1", "default", "back", "v1"), "back.default.svc.cluster.local")


def _messages(n: int) -> list[als_pb2.StreamAccessLogsMessage]:
    first = als_pb2.StreamAccessLogsMessage()
    first.identifier.log_name = LOG_INBOUND
    for _ in range(n):
        e = first.http_logs.log_entry.add()
        e.response.response_code.value = 503
        e.common_properties.response_flags.upstream_connection_failure = True
    later = als_pb2.StreamAccessLogsMessage()  # later messages carry no identifier
    later.http_logs.log_entry.add().response.response_code.value = 200
    return [first, later]


async def _stream(port: int, msgs: list[als_pb2.StreamAccessLogsMessage]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = als_pb2_grpc.AccessLogServiceStub(ch)

        async def gen() -> AsyncIterator[als_pb2.StreamAccessLogsMessage]:
            for m in msgs:
                yield m

        await stub.StreamAccessLogs(gen())


async def test_entries_become_metrics_on_the_merged_port() -> None:
    metrics = WorkloadMetrics()
    als = AccessLogServer("127.0.0.1", 0, metrics, ME)
    await als.start()

    async def app_metrics(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b"# TYPE app_orders_total counter\napp_orders_total 7\n"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    app = await asyncio.start_server(app_metrics, "127.0.0.1", 0)
    app_port = app.sockets[0].getsockname()[1]
    server = MetricsServer("127.0.0.1", 0, metrics, envoy_admin="http://127.0.0.1:9", app_metrics_url=f"http://127.0.0.1:{app_port}/metrics")
    await server.start()
    try:
        await _stream(als.port, _messages(2))
        assert als.entries == 3
        async with httpx.AsyncClient(trust_env=False) as c:
            text = (await c.get(f"http://127.0.0.1:{server.port}{MERGED_PATH}")).text
            lines = [x for x in text.splitlines() if x.startswith("istio_requests_total{")]
            assert len(lines) == 2
            uf = next(x for x in lines if 'response_code="503"' in x)
            assert 'response_flags="UF"' in uf and 'reporter="destination"' in uf and uf.endswith(" 2.0")
            assert "app_orders_total 7" in text  # the app's own metrics, merged
            envoy = await c.get(f"http://127.0.0.1:{server.port}{ENVOY_PATH}")  # nothing listens on :9
            assert envoy.status_code == 503
            assert (await c.get(f"http://127.0.0.1:{server.port}/nope")).status_code == 404
    finally:
        await server.stop()
        app.close()
        await app.wait_closed()
        await als.stop()


async def test_missing_app_metrics_do_not_hide_ours() -> None:
    metrics = WorkloadMetrics()
    server = MetricsServer("127.0.0.1", 0, metrics, envoy_admin="http://127.0.0.1:9", app_metrics_url="http://127.0.0.1:9/metrics")
    await server.start()
    try:
        body = (await server.merged()).decode()
        assert "# HELP istio_requests_total" in body and "app metrics unavailable" in body
    finally:
        await server.stop()


async def test_port_taken_is_a_clear_error() -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    try:
        with pytest.raises(NovameshError, match="NOVAMESH_METRICS_PORT"):
            await MetricsServer("127.0.0.1", port, WorkloadMetrics(), envoy_admin="http://127.0.0.1:9").start()
        als = AccessLogServer("127.0.0.1", port, WorkloadMetrics(), ME)
        with pytest.raises(NovameshError, match="NOVAMESH_TELEMETRY_PORT"):
            await als.start()
    finally:
        blocker.close()
        await blocker.wait_closed()
