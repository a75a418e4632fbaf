"""The inspection commands' wiring, against a fake control-plane API (no processes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from novamesh.cli import inspect_cmds
from novamesh.cli.main import app
from novamesh.errors import NotFoundError

FQDN = "reviews.default.svc.cluster.local"
MANIFESTS = [
    {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "reviews", "namespace": "default"},
     "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}],
              "trafficPolicy": {"connectionPool": {"http": {"http1MaxPendingRequests": 1}}}}},
]
WORKLOADS = [
    {"id": "r1", "service": "reviews", "namespace": "default", "version": "v1", "kind": "sidecar", "address": "127.9.0.1",
     "labels": {"app": "reviews", "version": "v1"}, "ports": [{"number": 9080, "protocol": "HTTP"}], "ready": True},
    {"id": "c1", "service": "client", "namespace": "default", "version": "", "kind": "sidecar", "address": "127.9.0.5",
     "labels": {"app": "client"}, "ports": [], "ready": True},
]
CP_CONFIG = {
    "CDS": {f"outbound|9080|v1|{FQDN}": {"name": f"outbound|9080|v1|{FQDN}", "type": "EDS"}},
    "EDS": {f"outbound|9080|v1|{FQDN}": {"cluster_name": f"outbound|9080|v1|{FQDN}", "endpoints": [
        {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.9.0.1", "port_value": 9080}}}}]}]}},
    "LDS": {}, "RDS": {},
}


class FakeApi:
    """Answers the GETs the inspection commands make."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def get(self, path: str, **params: Any) -> Any:
        self.paths.append(path)
        if path == "/api/v1/resources":
            return MANIFESTS
        if path == "/api/v1/workloads":
            return WORKLOADS
        if path == "/api/v1/proxies":
            return [{"id": "r1", "service": "reviews", "version": "v1", "types": {"CDS": {"status": "SYNCED"}}}]
        if path == "/api/v1/proxies/c1/config":
            return CP_CONFIG
        raise NotFoundError(f"no such path {path}")


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(inspect_cmds, "client_for", lambda url: fake)
    return fake


runner = CliRunner()


def test_proxy_config_from_the_control_plane(api: FakeApi) -> None:
    res = runner.invoke(app, ["proxy-config", "clusters", "client", "--source", "control-plane"])
    assert res.exit_code == 0, res.output
    assert [FQDN, "9080", "v1", "outbound", "EDS", "reviews.default"] in [line.split() for line in res.output.splitlines()]
    res = runner.invoke(app, ["proxy-config", "endpoints", "c1", "--source", "control-plane", "-o", "yaml"])
    assert res.exit_code == 0, res.output
    assert yaml.safe_load(res.output)[0]["endpoint"] == "127.9.0.1:9080"
    assert "/api/v1/proxies/c1/config" in api.paths


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["proxy-config", "clusters", "client", "-o", "xml"], "unknown output format 'xml'"),
        (["proxy-config", "clusters", "client", "--source", "memory"], "unknown --source 'memory'"),
        (["proxy-config", "cluster", "client"], "unknown section 'cluster'"),
        (["proxy-config", "clusters", "nobody"], "no workload 'nobody'"),
        (["describe", "gateway", "x"], "cannot describe 'gateway'"),
        (["describe", "service", "ratings"], "no service 'ratings'"),
    ],
)
def test_bad_input_is_a_clear_error(api: FakeApi, args: list[str], message: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 1
    assert message in res.output


def test_describe_and_explain_json(api: FakeApi) -> None:
    res = runner.invoke(app, ["describe", "service", "reviews", "-o", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["destinationRules"] == ["default/reviews"] and data["hostname"] == FQDN
    res = runner.invoke(app, ["explain-flags", "UO", "--service", "reviews", "-o", "json"])
    assert res.exit_code == 0, res.output
    [item] = json.loads(res.output)
    assert item["flag"] == "UO"
    assert item["config"] == ["circuit breaker: DestinationRule default/reviews sets http1MaxPendingRequests: 1"]
