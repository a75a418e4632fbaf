"""Stack file loading and validation (no processes)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from novamesh.demo import routing_file, stack_file
from novamesh.errors import ConfigError
from novamesh.settings import Settings
from novamesh.stack import PortSpec, StackRunner, load_stack


def write(tmp_path: Path, text: str, name: str = "stack.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def violations(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_stack(path)
    return {v.path: str(v) for v in info.value.violations}


def test_a_full_stack_file_loads_with_defaults(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    path = write(tmp_path, """
        name: shop
        controlPlane:
          dataDir: state
          httpPort: 16014
          settings: {debounce_quiet: 0.2, envoy_log_level: debug}
        workloads:
          - service: web
            ports: [8080, {number: 9090, protocol: grpc, name: grpc-api, appPort: 19090}]
            command: python -m novamesh.testing.echo --verbose
            env: {ECHO_DELAY: 0.1, FLAG: true}
          - service: client
            version: v2
            replicas: 2
            command: ["python", "-c", "pass"]
        config: [cfg]
    """)
    stack = load_stack(path)
    assert stack.name == "shop" and stack.file == path.resolve()
    assert stack.control_plane.data_dir == (tmp_path / "state").resolve()
    assert stack.control_plane.http_port == 16014 and stack.control_plane.xds_port is None
    assert stack.control_plane.settings == {"debounce_quiet": "0.2", "envoy_log_level": "debug"}
    web, client = stack.workloads
    assert (web.namespace, web.version, web.replicas) == ("default", "v1", 1)
    assert web.ports == (PortSpec(8080), PortSpec(9090, "GRPC", "grpc-api", 19090))
    assert [p.run_flag() for p in web.ports] == ["8080", "9090/grpc=19090"]
    assert web.command == ("python", "-m", "novamesh.testing.echo", "--verbose")
    assert web.env == {"ECHO_DELAY": "0.1", "FLAG": "true"}
    assert client.is_client and client.replicas == 2 and client.log_name(1) == "client-v2-1.log"
    assert stack.config == ((tmp_path / "cfg").resolve(),)


def test_runner_merges_settings_and_builds_commands(tmp_path: Path) -> None:
    path = write(tmp_path, """
        controlPlane: {httpPort: 16014, xdsPort: 16010, settings: {debounce_quiet: 0.3}}
        workloads:
          - {service: web, ports: [8080, {number: 3306, protocol: TCP}], command: [python, app.py]}
    """)
    runner = StackRunner(load_stack(path), Settings(data_dir=str(tmp_path / "home")))
    assert runner.data_dir == tmp_path / "home" / "stacks" / tmp_path.name.lower().replace("_", "-")
    assert runner.url == "http://127.0.0.1:16014"
    assert runner.settings.debounce_quiet == 0.3 and runner.settings.xds_port == 16010
    env = runner.process_env({"X": "1"})
    assert env["NOVAMESH_DEBOUNCE_QUIET"] == "0.3" and env["NOVAMESH_HTTP_PORT"] == "16014" and env["X"] == "1"
    assert env["NOVAMESH_DATA_DIR"] == str(runner.data_dir)
    argv = runner.workload_argv(runner.stack.workloads[0])
    assert argv[argv.index("run"):argv.index("--")] == [
        "run", "--service", "web", "--namespace", "default", "--version", "v1",
        "--port", "8080", "--port", "3306/tcp", "--control-plane", "http://127.0.0.1:16014"]
    assert argv[argv.index("--") + 2:] == ["app.py"] and argv[argv.index("--") + 1] != "python"


def test_unknown_keys_are_named_with_path_line_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, """
        name: demo
        workloads:
          - service: web
            comand: [python, app.py]
        controlPlane:
          httpport: 1
          settings: {debounce_quite: 1}
        extra: 1
    """)
    found = violations(path)
    assert set(found) >= {"workloads[0].comand", "workloads[0].command", "controlPlane.httpport",
                          "controlPlane.settings.debounce_quite", "extra"}
    assert "did you mean 'command'?" in found["workloads[0].comand"]
    assert f"{path}:5" in found["workloads[0].comand"]  # file and line
    assert "did you mean 'httpPort'?" in found["controlPlane.httpport"]
    assert "did you mean 'debounce_quiet'?" in found["controlPlane.settings.debounce_quite"]


def test_missing_service_and_command(tmp_path: Path) -> None:
    path = write(tmp_path, """
        workloads:
          - version: v1
            ports: [80]
    """)
    found = violations(path)
    assert "missing required key 'service'" in found["workloads[0].service"]
    assert "missing required key 'command'" in found["workloads[0].command"]
    assert "fix: " in found["workloads[0].command"]


def test_bad_ports_and_values(tmp_path: Path) -> None:
    path = write(tmp_path, """
        controlPlane: {xdsPort: "x", settings: {lease_ttl: soon}}
        workloads:
          - service: Web_1
            replicas: -1
            command: []
            ports: [0, 70000, 15001, 8080, 8080, {protocol: HTTP}, {number: 81, protocol: SMTP}, true]
            env: {A: [1]}
        config: [missing.yaml]
    """)
    found = violations(path)
    assert "port must be an integer from 1 to 65535, got 0" in found["workloads[0].ports[0]"]
    assert "70000" in found["workloads[0].ports[1]"]
    assert "used by the sidecar" in found["workloads[0].ports[2]"]
    assert "listed twice" in found["workloads[0].ports[4]"]
    assert "missing required key 'number'" in found["workloads[0].ports[5].number"]
    assert "unknown protocol 'SMTP'" in found["workloads[0].ports[6].protocol"]
    assert "got True" in found["workloads[0].ports[7]"]
    assert "invalid value 'Web_1'" in found["workloads[0].service"]
    assert "integer >= 0" in found["workloads[0].replicas"]
    assert "non-empty list" in found["workloads[0].command"]
    assert "workloads[0].env.A" in found
    assert "controlPlane.xdsPort" in found
    assert "must be a float, got 'soon'" in found["controlPlane.settings.lease_ttl"]
    assert "does not exist" in found["config[0]"]


def test_duplicate_workload_and_bad_yaml(tmp_path: Path) -> None:
    dup = write(tmp_path, """
        workloads:
          - {service: a, command: [x]}
          - {service: a, version: v1, command: [y]}
    """)
    assert "already defined by workloads[0]" in violations(dup)["workloads[1]"]
    broken = write(tmp_path, "workloads: [\n  - {service: a\n", name="broken.yaml")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_stack(broken)
    assert info.value.violations[0].line is not None
    with pytest.raises(ConfigError, match="cannot read stack file"):
        load_stack(tmp_path / "nope.yaml")


def test_the_bundled_demo_is_valid() -> None:
    stack = load_stack(stack_file())
    by_label = {w.label: w for w in stack.workloads}
    assert set(by_label) == {"frontend/v1", "catalog/v1", "reviews/v1", "reviews/v2", "reviews/v3", "ratings/v1", "loadgen/v1"}
    assert by_label["loadgen/v1"].is_client
    assert all(w.ports == (PortSpec(9080),) for w in stack.workloads if not w.is_client)
    frontend = " ".join(by_label["frontend/v1"].command)
    assert "--call http://catalog:9080/" in frontend and "--call http://reviews:9080/" in frontend
    assert stack.config == (routing_file().resolve(),)


def test_the_demo_routing_is_the_documented_canary() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(routing_file().read_text())}
    assert {d["apiVersion"] for d in docs.values()} == {"networking.istio.io/v1"}
    subsets = docs["DestinationRule"]["spec"]["subsets"]
    assert [(s["name"], s["labels"]) for s in subsets] == [(v, {"version": v}) for v in ("v1", "v2", "v3")]
    first, default = docs["VirtualService"]["spec"]["http"]
    assert first["match"] == [{"headers": {"end-user": {"exact": "jason"}}}]
    assert first["route"] == [{"destination": {"host": "reviews", "subset": "v2"}}]
    assert [(r["destination"]["subset"], r["weight"]) for r in default["route"]] == [("v1", 80), ("v3", 20)]
