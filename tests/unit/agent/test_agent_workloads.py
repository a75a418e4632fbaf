"""Registration, heartbeats, re-registration and the Agent end to end, against an in-test control
plane that implements just the workload endpoints of docs/rest-api.md."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from novamesh.agent.client import ControlPlaneClient, WorkloadSpec
from novamesh.agent.registration import Registration
from novamesh.agent.runner import Agent
from novamesh.agent.workload import AgentConfig, PortSpec, free_port
from novamesh.errors import ConfigError, ControlPlaneUnavailable
from novamesh.model.proxy import Proxy, ProxyPort
from novamesh.settings import Settings
from novamesh.testing.waiting import wait_until, wait_until_async

DEADLINE = 30.0  # safety net only


class FakeControlPlane:
    """The workload endpoints of the REST API, in memory, served by uvicorn in a thread."""

    def __init__(self, port: int | None = None, heartbeat_interval: float = 0.1) -> None:
        self.port = port or free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        self.heartbeat_interval = heartbeat_interval
        self.workloads: dict[str, dict[str, Any]] = {}
        self.log: list[tuple[str, str, Any]] = []
        self._next = 0
        self._prefix = f"127.{random.randint(100, 250)}.{random.randint(0, 255)}"
        self.app = FastAPI()
        self.app.post("/api/v1/workloads")(self.register)
        self.app.put("/api/v1/workloads/{wid}/heartbeat")(self.heartbeat)
        self.app.delete("/api/v1/workloads/{wid}")(self.deregister)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def register(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        self.log.append(("register", body.get("id", ""), dict(body)))
        if "id" not in body:
            self._next += 1
            body["id"] = f"w{self._next}-{random.randint(0, 10**6)}"
        if not body.get("address"):
            body["address"] = f"{self._prefix}.{self._next % 250 + 1}"
        self.workloads[body["id"]] = body
        return {"id": body["id"], "address": body["address"], "lease_ttl": 15.0,
                "heartbeat_interval": self.heartbeat_interval}  # fmt: skip

    async def heartbeat(self, wid: str, request: Request) -> Response:
        body = await request.json()
        self.log.append(("heartbeat", wid, body))
        if wid not in self.workloads:
            return JSONResponse({"error": "NotFoundError", "message": f"no workload {wid}"}, status_code=404)
        self.workloads[wid]["ready"] = body["ready"]
        return JSONResponse({"lease_ttl": 15.0})

    async def deregister(self, wid: str) -> Response:
        self.log.append(("deregister", wid, None))
        self.workloads.pop(wid, None)
        return Response(status_code=204)

    def calls(self, kind: str) -> list[Any]:
        return [body for k, _, body in list(self.log) if k == kind]

    def start(self) -> FakeControlPlane:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        server, thread = self._server, self._thread
        wait_until(lambda: server.started or not thread.is_alive(), DEADLINE, 0.01, "the fake control plane to start")
        assert server.started, "fake control plane failed to start"
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(DEADLINE)


@pytest.fixture
def control_plane() -> Iterator[FakeControlPlane]:
    cp = FakeControlPlane().start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
async def client(control_plane: FakeControlPlane) -> AsyncIterator[ControlPlaneClient]:
    async with ControlPlaneClient(control_plane.url) as c:
        yield c


SPEC = WorkloadSpec(service="reviews", namespace="bookinfo", version="v2", labels={"app": "reviews"},
                    ports=(ProxyPort(9080, "HTTP", "http-9080", 41000),))  # fmt: skip


# ---- ControlPlaneClient ---------------------------------------------------------------------


async def test_register_heartbeat_deregister(client: ControlPlaneClient, control_plane: FakeControlPlane) -> None:
    lease = await client.register(SPEC)
    assert lease.id and lease.address.startswith("127.")
    assert lease.heartbeat_interval == control_plane.heartbeat_interval
    sent = control_plane.calls("register")[0]
    assert sent["ports"] == [{"number": 9080, "protocol": "HTTP", "name": "http-9080", "app_port": 41000}]
    assert sent["ready"] is False and sent["kind"] == "sidecar" and "id" not in sent

    assert await client.heartbeat(lease.id, True) is True
    assert control_plane.workloads[lease.id]["ready"] is True

    await client.deregister(lease.id)
    assert lease.id not in control_plane.workloads
    await client.deregister(lease.id)  # already gone is fine
    assert await client.heartbeat(lease.id, True) is False  # 404: caller re-registers


async def test_requested_address_is_sent(client: ControlPlaneClient, control_plane: FakeControlPlane) -> None:
    lease = await client.register(SPEC, address="127.203.0.9")
    assert lease.address == "127.203.0.9"


async def test_unreachable_control_plane_names_url_and_hint() -> None:
    url = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    async with ControlPlaneClient(url) as c:
        with pytest.raises(ControlPlaneUnavailable, match="novamesh control-plane") as info:
            await c.register(SPEC)
    assert url in str(info.value)


async def test_error_answers_map_to_the_error_tree() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(422, json={"error": "ConfigError", "message": "bad", "violations": [
                {"message": "port 0 is invalid", "path": "ports[0].number"}]})  # fmt: skip
        return httpx.Response(503, json={"error": "StoreError", "message": "disk full"})

    async with ControlPlaneClient("http://cp.test", transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(ConfigError) as info:
            await c.register(SPEC)
        assert info.value.violations[0].path == "ports[0].number"
        with pytest.raises(ControlPlaneUnavailable, match="disk full"):
            await c.heartbeat("w1", True)


# ---- Registration ---------------------------------------------------------------------------


async def test_lost_lease_is_registered_again_with_same_id_and_address(
    client: ControlPlaneClient, control_plane: FakeControlPlane
) -> None:
    ready = {"value": False}

    async def probe() -> bool:
        return ready["value"]

    reg = Registration(client, SPEC, ready_probe=probe)
    lease = await reg.register()
    ready["value"] = True
    assert await reg.beat() is True
    control_plane.workloads.clear()  # the control plane restarted and forgot us

    assert await reg.beat() is True
    assert reg.reregistrations == 1
    again = control_plane.calls("register")[-1]
    assert (again["id"], again["address"]) == (lease.id, lease.address)
    assert again["ports"] == [p.to_dict() for p in SPEC.ports] and again["ready"] is True
    assert control_plane.workloads[lease.id]["ready"] is True
    assert (reg.id, reg.address) == (lease.id, lease.address)


async def test_outage_is_retried_logged_once_and_recovered(caplog: pytest.LogCaptureFixture) -> None:
    first = FakeControlPlane().start()
    try:
        async with ControlPlaneClient(first.url, timeout=2) as c:
            reg = Registration(c, SPEC)
            lease = await reg.register()
            first.stop()

            caplog.set_level(logging.WARNING, logger="novamesh.agent.registration")
            for _ in range(3):
                assert await reg.beat() is False
            assert not reg.available
            outage_logs = [r for r in caplog.records if "logged once per outage" in r.getMessage()]
            assert len(outage_logs) == 1

            second = FakeControlPlane(port=first.port).start()  # restarted, with no state
            try:
                assert await reg.beat() is True
                assert reg.available and reg.reregistrations == 1
                assert second.workloads[lease.id]["address"] == lease.address
                assert any("reachable again" in r.getMessage() for r in caplog.records)
            finally:
                second.stop()
    finally:
        first.stop()


async def test_deregister_when_unreachable_does_not_raise(control_plane: FakeControlPlane) -> None:
    async with ControlPlaneClient(control_plane.url) as c:
        reg = Registration(c, SPEC)
        await reg.register()
        control_plane.stop()
        assert await reg.deregister() is False


# ---- Agent end to end (real Envoy with a static bootstrap, real app process) ----------------

APP = r"""
import http.server, json, os, signal, sys
json.dump({k: v for k, v in os.environ.items() if k in ("HOST", "PORT", "HTTP_PROXY", "http_proxy")
           or k.startswith("NOVAMESH_")}, open(sys.argv[1], "w"))
if sys.argv[2] == "fail-early":
    sys.exit(7)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0 if sys.argv[2] == "serve" else 1))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/exit":
            os._exit(3)
        self.send_response(200); self.end_headers(); self.wfile.write(b"app")
    def log_message(self, *a): pass
import threading
ports = [int(v) for k, v in os.environ.items() if k.startswith("NOVAMESH_PORT_")]
servers = [http.server.HTTPServer((os.environ["HOST"], p), H) for p in ports]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
servers[0].serve_forever()
"""


def static_builder(proxy: Proxy, settings: Settings) -> dict[str, Any]:
    """Admin only: Envoy is ready at once without a control plane's xDS."""
    return {"admin": {"address": {"socket_address": {"address": proxy.address, "port_value": proxy.admin_port}}}}


def make_agent(tmp_path: Path, cp: FakeControlPlane, mode: str) -> Agent:
    settings = Settings(
        data_dir=str(tmp_path / "data"),
        control_plane_url=cp.url,
        deregister_grace=0.0,
        drain_time=0.0,
        ready_timeout=DEADLINE,
        stop_timeout=10.0,
    )
    config = AgentConfig(
        service="reviews",
        namespace="bookinfo",
        version="v2",
        ports=(PortSpec(9080), PortSpec(9090, "GRPC")),
        labels={"team": "books"},
        command=(sys.executable, "-c", APP, str(tmp_path / "env.json"), mode),
    )
    return Agent(config, settings, bootstrap_builder=static_builder)


async def health(agent: Agent) -> int:
    assert agent.proxy is not None
    async with httpx.AsyncClient(trust_env=False, timeout=2) as c:
        return (await c.get(f"http://{agent.proxy.address}:{agent.settings.health_port}/healthz/ready")).status_code


async def test_agent_runs_app_heartbeats_ready_and_stops_in_order(
    tmp_path: Path, control_plane: FakeControlPlane
) -> None:
    agent = make_agent(tmp_path, control_plane, "serve")
    run = asyncio.create_task(agent.run(handle_signals=False))
    try:
        await asyncio.wait_for(agent.started.wait(), DEADLINE)
        wid = agent.registration.id
        await wait_until_async(lambda: control_plane.workloads.get(wid, {}).get("ready") is True, DEADLINE, 0.02, "a ready heartbeat")
        assert await health(agent) == 200

        assert agent.proxy is not None and agent.workdir is not None
        address = agent.proxy.address
        env = json.loads((tmp_path / "env.json").read_text())
        app_ports = {p.number: p.app_port for p in agent.proxy.ports}
        assert env["HOST"] == env["NOVAMESH_ADDRESS"] == address
        assert env["PORT"] == env["NOVAMESH_PORT_9080"] == str(app_ports[9080])
        assert env["NOVAMESH_PORT_9090"] == str(app_ports[9090])
        assert env["HTTP_PROXY"] == env["http_proxy"] == f"http://{address}:15001"
        assert (env["NOVAMESH_SERVICE"], env["NOVAMESH_VERSION"], env["NOVAMESH_NAMESPACE"]) == (
            "reviews", "v2", "bookinfo")  # fmt: skip

        registered = control_plane.workloads[wid]
        assert registered["address"] == address
        assert registered["labels"] == {"app": "reviews", "version": "v2", "team": "books"}
        assert [p["number"] for p in registered["ports"]] == [9080, 9090]
        assert registered["ports"][1]["protocol"] == "GRPC"
        assert (agent.workdir / "bootstrap.json").is_file()
        assert agent.workdir.name == f"reviews-v2-{wid}"
        envoy_pid = agent.envoy.pid if agent.envoy else None

        agent.request_stop(signal.SIGTERM)
        assert await asyncio.wait_for(run, DEADLINE) == 0  # the app exited cleanly on SIGTERM
    finally:
        if not run.done():
            agent.request_stop()
            await run
    assert wid not in control_plane.workloads
    assert control_plane.calls("deregister")
    assert agent.envoy is not None and not agent.envoy.running and envoy_pid is not None
    assert agent.app is not None and agent.app.returncode == 0


async def test_agent_exits_with_the_apps_code(tmp_path: Path, control_plane: FakeControlPlane) -> None:
    agent = make_agent(tmp_path, control_plane, "serve")
    run = asyncio.create_task(agent.run(handle_signals=False))
    await asyncio.wait_for(agent.started.wait(), DEADLINE)
    assert agent.proxy is not None
    url = f"http://{agent.proxy.address}:{agent.proxy.ports[0].app_port}/exit"
    async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
        with pytest.raises(httpx.HTTPError):
            await c.get(url)
    assert await asyncio.wait_for(run, DEADLINE) == 3
    assert agent.registration.id not in control_plane.workloads
    assert agent.envoy is not None and not agent.envoy.running


async def test_app_failing_before_listening_fails_the_run(tmp_path: Path, control_plane: FakeControlPlane) -> None:
    agent = make_agent(tmp_path, control_plane, "fail-early")
    assert await asyncio.wait_for(agent.run(handle_signals=False), DEADLINE) == 7
    assert control_plane.workloads == {}
    assert not any(call["ready"] for call in control_plane.calls("heartbeat"))


async def test_agent_without_control_plane_fails_clearly(tmp_path: Path) -> None:
    cp = FakeControlPlane()  # never started
    agent = make_agent(tmp_path, cp, "serve")
    with pytest.raises(ControlPlaneUnavailable, match=str(cp.port)):
        await asyncio.wait_for(agent.run(handle_signals=False), DEADLINE)


AGENT_PROCESS = """
import asyncio, sys
from novamesh.agent.runner import Agent
from novamesh.agent.workload import AgentConfig, PortSpec
from novamesh.settings import Settings

def builder(proxy, settings):
    return {"admin": {"address": {"socket_address": {"address": proxy.address, "port_value": proxy.admin_port}}}}

async def main():
    data_dir, url, app, env_path, mode = sys.argv[1:]
    settings = Settings(data_dir=data_dir, control_plane_url=url, deregister_grace=0.0, drain_time=0.0)
    command = (sys.executable, "-c", app, env_path, mode)
    config = AgentConfig(service="reviews", ports=(PortSpec(9080),), command=command)
    agent = Agent(config, settings, bootstrap_builder=builder)
    async def announce():
        await agent.started.wait()
        print("STARTED", flush=True)
    task = asyncio.create_task(announce())
    try:
        return await agent.run()
    finally:
        task.cancel()

sys.exit(asyncio.run(main()))
"""


@pytest.mark.parametrize(("sig", "mode", "expected"), [
    (signal.SIGTERM, "serve", 0),  # the app exits cleanly when stopped: 0
    (signal.SIGINT, "unclean", 130),  # it does not: 128 + the agent's signal
])  # fmt: skip
async def test_signalled_agent_process_shuts_down_in_order(
    tmp_path: Path, control_plane: FakeControlPlane, sig: signal.Signals, mode: str, expected: int
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT_PROCESS, str(tmp_path / "data"), control_plane.url, APP,
        str(tmp_path / "env.json"), mode, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), DEADLINE)
        assert line.strip() == b"STARTED"
        (wid,) = control_plane.workloads
        await wait_until_async(lambda: control_plane.workloads[wid].get("ready") is True, DEADLINE, 0.02, "a ready heartbeat")
        proc.send_signal(sig)
        assert await asyncio.wait_for(proc.wait(), DEADLINE) == expected
        assert control_plane.workloads == {}
        assert control_plane.calls("deregister")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
