"""Port syntax, labels, the app's environment, the health port and the run/agent commands."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import typer
from typer.testing import CliRunner

from novamesh.agent.health import HealthServer
from novamesh.agent.workload import AgentConfig, PortSpec, app_environment, parse_labels, parse_port, port_open
from novamesh.cli import agent_cmds
from novamesh.errors import NovameshError
from novamesh.model.proxy import ProxyPort
from novamesh.settings import Settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9080", PortSpec(9080, "HTTP", 0)),
        ("9080/grpc", PortSpec(9080, "GRPC", 0)),
        ("3306/TCP=13306", PortSpec(3306, "TCP", 13306)),
        ("8080=18080", PortSpec(8080, "HTTP", 18080)),
    ],
)
def test_parse_port(text: str, expected: PortSpec) -> None:
    assert parse_port(text) == expected


@pytest.mark.parametrize("text", ["", "http", "9080/", "9080/smtp", "0", "70000", "9080=0", "9080:grpc"])
def test_parse_port_rejects_with_the_syntax(text: str) -> None:
    with pytest.raises(NovameshError, match="--port"):
        parse_port(text)


def test_port_name_follows_istio() -> None:
    assert parse_port("9090/grpc").to_proxy_port(40000) == ProxyPort(9090, "GRPC", "grpc-9090", 40000)


def test_parse_labels() -> None:
    assert parse_labels(["team=books", "tier=", "team=reviews"]) == {"team": "reviews", "tier": ""}
    with pytest.raises(NovameshError, match="key=value"):
        parse_labels(["oops"])


def test_agent_mode_needs_app_ports() -> None:
    with pytest.raises(NovameshError, match="9080=8080"):
        AgentConfig(service="r", ports=(PortSpec(9080),)).validate()
    AgentConfig(service="r", ports=(PortSpec(9080, app_port=8080),)).validate()
    AgentConfig(service="r", ports=(PortSpec(9080),), command=("app",)).validate()
    with pytest.raises(NovameshError, match="twice"):
        AgentConfig(service="r", ports=(PortSpec(9080), PortSpec(9080, "TCP")), command=("app",)).validate()


def test_app_environment() -> None:
    env = app_environment(
        {"PATH": "/bin", "PORT": "1"},
        address="127.1.0.7",
        ports=[ProxyPort(9080, app_port=40001), ProxyPort(9090, "GRPC", app_port=40002)],
        service="reviews",
        version="v2",
        namespace="bookinfo",
        outbound_port=15001,
    )
    assert env == {
        "PATH": "/bin",
        "HOST": "127.1.0.7",
        "PORT": "40001",
        "NOVAMESH_PORT_9080": "40001",
        "NOVAMESH_PORT_9090": "40002",
        "HTTP_PROXY": "http://127.1.0.7:15001",
        "http_proxy": "http://127.1.0.7:15001",
        "NOVAMESH_SERVICE": "reviews",
        "NOVAMESH_VERSION": "v2",
        "NOVAMESH_NAMESPACE": "bookinfo",
        "NOVAMESH_ADDRESS": "127.1.0.7",
    }


async def test_health_server_reflects_the_probe() -> None:
    state = {"ready": False}

    async def probe() -> bool:
        return state["ready"]

    server = HealthServer("127.0.0.1", 0, probe)
    await server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(trust_env=False, timeout=5) as c:
            assert (await c.get(f"{base}/healthz/ready")).status_code == 503
            state["ready"] = True
            response = await c.get(f"{base}/healthz/ready")
            assert response.status_code == 200 and response.text == "ready\n"
            assert (await c.get(f"{base}/other")).status_code == 404
    finally:
        await server.stop()
    assert not await port_open("127.0.0.1", server.port)


async def test_health_server_port_in_use_is_a_clear_error() -> None:
    async def probe() -> bool:
        return True

    first = HealthServer("127.0.0.1", 0, probe)
    await first.start()
    try:
        with pytest.raises(NovameshError, match="health port"):
            await HealthServer("127.0.0.1", first.port, probe).start()
    finally:
        await first.stop()


# ---- CLI ------------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> tuple[typer.Typer, list[tuple[AgentConfig, Settings]]]:
    seen: list[tuple[AgentConfig, Settings]] = []

    async def fake_run(config: AgentConfig, settings: Settings) -> int:
        seen.append((config, settings))
        await asyncio.sleep(0)
        return 5

    monkeypatch.setattr(agent_cmds, "_run_agent", fake_run)
    app = typer.Typer()
    agent_cmds.register(app)

    @app.command("version")
    def _version() -> None:  # a second command, so typer keeps subcommands
        pass

    return app, seen


def test_run_parses_flags_and_exits_with_the_apps_code(
    cli: tuple[typer.Typer, list[tuple[AgentConfig, Settings]]],
) -> None:
    app, seen = cli
    result = CliRunner().invoke(app, [
        "run", "--service", "reviews", "--port", "9080", "-p", "9090/grpc", "--label", "team=books",
        "--control-plane", "http://127.0.0.1:1", "--data-dir", "/tmp/x",
        "--", "python", "app.py", "--flag",
    ])  # fmt: skip
    assert result.exit_code == 5, result.output
    config, settings = seen[0]
    assert config.command == ("python", "app.py", "--flag")
    assert config.ports == (PortSpec(9080), PortSpec(9090, "GRPC"))
    assert (config.namespace, config.version, config.labels) == ("default", "v1", {"team": "books"})
    assert (settings.control_plane_url, settings.data_dir) == ("http://127.0.0.1:1", "/tmp/x")


def test_agent_mode_and_bad_flags(cli: tuple[typer.Typer, list[tuple[AgentConfig, Settings]]]) -> None:
    app, seen = cli
    args = ["agent", "--service", "ratings", "--port", "9080=8080", "--app-host", "127.0.0.2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 5, result.output
    assert seen[0][0].command == () and seen[0][0].app_host == "127.0.0.2"

    result = CliRunner().invoke(app, ["agent", "--service", "ratings", "--port", "9080"])
    assert result.exit_code == 1 and "9080=8080" in result.output

    result = CliRunner().invoke(app, ["run", "--service", "x", "--port", "nope", "--", "app"])
    assert result.exit_code == 1 and "NUMBER/PROTOCOL" in result.output


def test_help_explains_the_environment(cli: tuple[typer.Typer, list[tuple[AgentConfig, Settings]]]) -> None:
    app, _ = cli
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for word in ("HOST", "PORT", "NOVAMESH_PORT_", "HTTP_PROXY", "--address", "--label", "=APP_PORT"):
        assert word in result.output
