"""EnvoyProcess against a real Envoy with a static bootstrap (no control plane needed)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from novamesh.agent.bootstrap import build_bootstrap, write_bootstrap
from novamesh.agent.envoy import Activity, EnvoyProcess, _count_active
from novamesh.agent.workload import free_port
from novamesh.errors import EnvoyError
from novamesh.model.proxy import Proxy
from novamesh.settings import Settings
from novamesh.testing.waiting import wait_until_async

DEADLINE = 30.0  # generous safety net for slow CI machines; never a pass/fail timing


def unique_address() -> str:
    """A loopback address unlikely to be used by any other test running on this host."""
    return f"127.{random.randint(100, 250)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def static_bootstrap(address: str, admin_port: int, listener_port: int, backend_port: int = 0) -> dict[str, Any]:
    """Admin plus one listener (no xDS) answering "hello", or proxying to 127.0.0.1:backend_port."""
    action: dict[str, Any] = {"direct_response": {"status": 200, "body": {"inline_string": "hello"}}}
    clusters: list[dict[str, Any]] = []
    if backend_port:
        action = {"route": {"cluster": "backend", "timeout": "0s"}}
        endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": backend_port}}}
        clusters.append({"name": "backend", "type": "STATIC", "connect_timeout": "1s",
                         "load_assignment": {"cluster_name": "backend",
                                             "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}]}})  # fmt: skip
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "test",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, **action}],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": address, "port_value": admin_port}}},
        "static_resources": {
            "clusters": clusters,
            "listeners": [
                {
                    "name": "test",
                    "address": {"socket_address": {"address": address, "port_value": listener_port}},
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ]
        },
    }


def settings_for(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=str(tmp_path),
        restart_backoff_initial=0.05,
        restart_backoff_max=0.5,
        drain_time=1.0,
        envoy_log_level="info",
    )


@pytest.fixture
async def static_envoy(tmp_path: Path) -> AsyncIterator[tuple[EnvoyProcess, str]]:
    address = unique_address()
    admin_port, listener_port = free_port(address), free_port(address)
    config = write_bootstrap(tmp_path / "bootstrap.json", static_bootstrap(address, admin_port, listener_port))
    envoy = EnvoyProcess(
        config, admin_address=address, admin_port=admin_port, workdir=tmp_path, settings=settings_for(tmp_path)
    )
    await envoy.start()
    try:
        yield envoy, f"http://{address}:{listener_port}/"
    finally:
        await envoy.stop()


async def answers(url: str) -> bool:
    try:
        async with httpx.AsyncClient(trust_env=False, timeout=2) as client:
            response = await client.get(url)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.text == "hello"


async def test_start_ready_restart_after_sigkill_and_stop(static_envoy: tuple[EnvoyProcess, str]) -> None:
    envoy, url = static_envoy
    await envoy.wait_ready(DEADLINE)
    assert await answers(url)
    first_pid = envoy.pid
    assert first_pid is not None

    os.kill(first_pid, signal.SIGKILL)

    async def restarted() -> bool:
        return envoy.restarts >= 1 and envoy.pid != first_pid and await answers(url)

    await wait_until_async(restarted, DEADLINE, message="the supervisor to restart envoy")
    assert envoy.exits == 1
    await envoy.wait_ready(DEADLINE)

    second_pid = envoy.pid
    assert await envoy.stop() is not None
    assert not envoy.running
    with pytest.raises(ProcessLookupError):
        os.kill(second_pid or 0, 0)
    assert not await answers(url)


async def test_drain_without_traffic_completes(static_envoy: tuple[EnvoyProcess, str]) -> None:
    envoy, url = static_envoy
    await envoy.wait_ready(DEADLINE)
    assert await answers(url)
    result = await envoy.drain(DEADLINE)
    assert result.completed and result.activity.requests == 0
    await envoy.stop()
    assert envoy.restarts == 0


async def test_envoy_exiting_at_startup_is_reported_with_its_log(tmp_path: Path) -> None:
    address = unique_address()
    boot = static_bootstrap(address, free_port(address), free_port(address))
    boot["admin"]["no_such_field"] = True
    config = write_bootstrap(tmp_path / "bootstrap.json", boot)
    envoy = EnvoyProcess(config, admin_address=address, admin_port=1, workdir=tmp_path, settings=settings_for(tmp_path))
    await envoy.start()
    try:
        with pytest.raises(EnvoyError, match="no_such_field") as info:
            await envoy.wait_ready(DEADLINE)
        assert "before it became ready" in str(info.value)
    finally:
        await envoy.stop()


async def test_real_bootstrap_without_control_plane_is_not_ready(tmp_path: Path) -> None:
    address = unique_address()
    admin_port = free_port(address)
    settings = settings_for(tmp_path).replace(xds_port=free_port("127.0.0.1"))
    proxy = Proxy(id="w1", service="reviews", address=address, admin_port=admin_port)
    config = write_bootstrap(tmp_path / "bootstrap.json", build_bootstrap(proxy, settings))
    envoy = EnvoyProcess(config, admin_address=address, admin_port=admin_port, workdir=tmp_path, settings=settings)
    await envoy.start()
    try:
        with pytest.raises(EnvoyError, match="not ready after"):
            await envoy.wait_ready(1.0)
        assert envoy.running  # admin is up; Envoy just waits for its xDS configuration
    finally:
        await envoy.stop()


async def test_drain_waits_for_the_request_in_flight(tmp_path: Path) -> None:
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def slow_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        arrived.set()
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow")
        await writer.drain()
        writer.close()

    backend = await asyncio.start_server(slow_backend, "127.0.0.1", 0)
    backend_port = backend.sockets[0].getsockname()[1]
    address = unique_address()
    admin_port, listener_port = free_port(address), free_port(address)
    config = write_bootstrap(tmp_path / "b.json", static_bootstrap(address, admin_port, listener_port, backend_port))
    envoy = EnvoyProcess(
        config, admin_address=address, admin_port=admin_port, workdir=tmp_path, settings=settings_for(tmp_path)
    )
    await envoy.start()
    try:
        await envoy.wait_ready(DEADLINE)
        async with httpx.AsyncClient(trust_env=False, timeout=DEADLINE) as client:
            request = asyncio.create_task(client.get(f"http://{address}:{listener_port}/"))
            await asyncio.wait_for(arrived.wait(), DEADLINE)

            async def in_flight() -> bool:
                return (await envoy.active()).requests == 1

            await wait_until_async(in_flight, DEADLINE, message="envoy to count the request")
            drain = asyncio.create_task(envoy.drain(DEADLINE))
            await wait_until_async(lambda: envoy.draining, DEADLINE, message="envoy to accept the drain")
            assert not drain.done()  # the request is still held by the backend
            release.set()
            response = await request
            assert (response.status_code, response.text) == (200, "slow")
            result = await drain
            assert result.completed and result.activity.requests == 0
    finally:
        await envoy.stop()
        backend.close()
        await backend.wait_closed()


def test_activity_counts_requests_and_non_http_connections() -> None:
    stats = {"stats": [
        {"name": "http.admin.downstream_rq_active", "value": 1},
        {"name": "http.admin.downstream_cx_active", "value": 1},
        {"name": "listener.admin.downstream_cx_active", "value": 1},
        {"name": "listener.admin.main_thread.downstream_cx_active", "value": 1},
        {"name": "http.inbound_9080.downstream_rq_active", "value": 2},
        {"name": "http.inbound_9080.downstream_cx_active", "value": 3},
        {"name": "listener.127.1.0.7_9080.downstream_cx_active", "value": 3},
        {"name": "listener.127.1.0.7_9080.worker_0.downstream_cx_active", "value": 3},
        {"name": "listener.127.1.0.7_3306.downstream_cx_active", "value": 1},
    ]}  # fmt: skip
    activity = _count_active(stats)
    assert activity == Activity(requests=2, connections=4, http_connections=3)
    assert not activity.idle
    assert Activity(requests=0, connections=3, http_connections=3).idle  # idle keep-alives only
    assert not Activity(requests=0, connections=4, http_connections=3).idle  # a TCP connection
