"""Gateway mode of the agent: its config, its bootstrap (Envoy accepts it) and the CLI flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from novamesh.agent.bootstrap import write_bootstrap
from novamesh.agent.envoy import validate_config
from novamesh.agent.gateway import gateway_bootstrap, gateway_config
from novamesh.agent.workload import PortSpec
from novamesh.cli.main import app
from novamesh.model.proxy import METADATA_KEY, Proxy, ProxyPort
from novamesh.settings import Settings

GATEWAY = Proxy(
    id="gw-1", kind="gateway", service="istio-ingressgateway", namespace="istio-system", address="127.1.0.9", app_host="127.1.0.9",
    labels=(("app", "istio-ingressgateway"), ("istio", "ingressgateway")), ports=(ProxyPort(8080, "HTTP", "http-8080"),),
)


def test_gateway_config_needs_no_app_ports() -> None:
    config = gateway_config(name="istio-egressgateway", namespace="istio-system", labels={"istio": "egressgateway"},
                            ports=(PortSpec(8090),))
    assert config.kind == "gateway" and config.version == "" and config.command == ()
    assert config.ports[0].app_port == 0


def test_bootstrap_caps_connections_and_binds_upstream_source(tmp_path: Path) -> None:
    boot = gateway_bootstrap(GATEWAY, Settings(), max_connections=123)
    (monitor,) = boot["overload_manager"]["resource_monitors"]
    assert monitor["typed_config"]["max_active_downstream_connections"] == 123
    assert boot["admin"]["ignore_global_conn_limit"] is True
    assert boot["cluster_manager"]["upstream_bind_config"]["source_address"]["address"] == "127.1.0.9"
    assert Proxy.from_metadata(boot["node"]["metadata"][METADATA_KEY]) == GATEWAY
    assert boot["node"]["id"].startswith("gateway~127.1.0.9~gw-1~")
    validate_config(write_bootstrap(tmp_path / "bootstrap.json", boot))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "gw", "--port", "8080=9090"], "a gateway has no app"),
        (["--name", "gw", "--label", "bad label"], "--label 'bad label' is not valid"),
    ],
)
def test_cli_rejects_bad_flags(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["gateway", *args])
    assert result.exit_code == 1
    assert message in result.output
