"""StackRunner with real processes, but a fake ``novamesh`` (fake_novamesh_cli.py) standing in
for the control plane and ``novamesh run``: proves start order, readiness waits, logs, the state
file, failure reporting and ``down`` from another "process" (the state file alone)."""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from novamesh.cli.stack_cmds import register
from novamesh.errors import ConfigError, NovameshError
from novamesh.settings import Settings
from novamesh.stack import STATE_FILE, StackRunner, load_stack, stop_stack
from novamesh.testing import wait_until

FAKE = [sys.executable, str(Path(__file__).with_name("fake_novamesh_cli.py"))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def make_stack(tmp_path: Path, workloads: str = "", config: str = "") -> Path:
    """A stack file with free control-plane ports; ``workloads`` is the YAML list (or empty)."""
    path = tmp_path / "stack.yaml"
    listing = textwrap.indent(textwrap.dedent(workloads), "  ") if workloads.strip() else "  []\n"
    path.write_text(textwrap.dedent(f"""
        name: t
        controlPlane: {{dataDir: data, httpPort: {free_port()}, xdsPort: {free_port()}}}
        workloads:
    """) + listing + config)
    return path


def runner_for(path: Path, tmp_path: Path) -> StackRunner:
    settings = Settings(data_dir=str(tmp_path / "home"), drain_time=0.5, stop_timeout=2, deregister_grace=0)
    return StackRunner(load_stack(path), settings, novamesh_command=FAKE, control_plane_timeout=30, workload_timeout=30)


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def test_up_starts_everything_and_down_from_the_state_file_stops_it(tmp_path: Path) -> None:
    (tmp_path / "routing.yaml").write_text("kind: VirtualService\n")
    path = make_stack(tmp_path, f"""
        - service: web
          ports: [{free_port()}]
          command: [python, -m, novamesh.testing.echo]
          env: {{ECHO_STATUS: "201"}}
        - service: pinger
          replicas: 2
          command: [python, -c, "import time; time.sleep(600)"]
    """, config="config: [routing.yaml]\n")
    runner = runner_for(path, tmp_path)
    messages: list[str] = []
    runner.up(messages.append)
    try:
        assert any("applied 1 config file(s)" in m for m in messages)
        state = json.loads((tmp_path / "data" / STATE_FILE).read_text())
        names = [p["name"] for p in state["processes"]]
        assert names == ["control-plane", "web/v1#0", "pinger/v1#0", "pinger/v1#1"]
        assert sorted(p.name for p in (tmp_path / "data" / "logs").iterdir()) == [
            "control-plane.log", "pinger-v1-0.log", "pinger-v1-1.log", "web-v1-0.log"]
        registered = httpx.get(runner.url + "/api/v1/workloads").json()
        assert sorted(w["service"] for w in registered) == ["pinger", "pinger", "web"]
        # the workload's env reached the app, and NOVAMESH_* reached every process
        web_port = registered[[w["service"] for w in registered].index("web")]["ports"][0]["number"]
        wait_until(lambda: httpx.get(f"http://127.0.0.1:{web_port}/").status_code == 201, 10,
                   ignore=(httpx.ConnectError,), message="the web app to answer")
        statuses = runner.status()
        assert all(s.running for s in statuses) and {s.address for s in statuses if s.name.startswith("web")} != {""}
    finally:
        # like `novamesh down` in another terminal: only the state file is known
        assert stop_stack(tmp_path / "data", runner.settings) is True
    assert all(pid_gone(p["pid"]) for p in state["processes"])
    assert not (tmp_path / "data" / STATE_FILE).exists()
    assert stop_stack(tmp_path / "data") is False
    runner.down()  # idempotent; here it only reaps the (already exited) children


def test_a_failing_workload_is_named_with_its_log_and_everything_is_stopped(tmp_path: Path) -> None:
    path = make_stack(tmp_path, f"""
        - service: broken
          ports: [{free_port()}]
          command: [python, -c, "import sys; print('boom: missing database'); sys.exit(3)"]
    """)
    runner = runner_for(path, tmp_path)
    with pytest.raises(NovameshError) as info:
        try:
            runner.up()
        finally:
            runner.down()  # a no-op after up() cleaned up; stops everything if up() wrongly succeeded
    message = str(info.value)
    assert "broken/v1#0 exited (code 3)" in message
    assert "boom: missing database" in message and "broken-v1-0.log" in message
    assert not (tmp_path / "data" / STATE_FILE).exists()
    with socket.socket() as s:  # the control plane is gone: its port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", runner.settings.http_port))


def test_rejected_config_is_a_config_error_with_the_control_planes_violations(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("REJECT-ME\n")
    path = make_stack(tmp_path, config="config: [bad.yaml]\n")
    runner = runner_for(path, tmp_path)
    with pytest.raises(ConfigError) as info:
        try:
            runner.up()
        finally:
            runner.down()  # a no-op after up() cleaned up; stops everything if up() wrongly succeeded
    (violation,) = info.value.violations
    assert violation.path == "spec.hosts[0]" and violation.hint == "do not write REJECT-ME"
    assert not (tmp_path / "data" / STATE_FILE).exists()


def test_up_refuses_a_stack_that_is_already_running(tmp_path: Path) -> None:
    path = make_stack(tmp_path)
    first = runner_for(path, tmp_path)
    first.up()
    try:
        with pytest.raises(NovameshError, match="already running"):
            runner_for(path, tmp_path).up()
    finally:
        first.down()


def test_cli_reports_bad_stack_files_and_empty_down(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    bad = tmp_path / "bad.yaml"
    bad.write_text("workloads:\n  - service: web\n")
    result = CliRunner().invoke(app, ["up", "-f", str(bad)])
    assert result.exit_code == 1
    assert "workloads[0].command" in result.output and "missing required key" in result.output
    result = CliRunner().invoke(app, ["down", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0 and "nothing to stop" in result.output
