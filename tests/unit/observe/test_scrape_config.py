"""`novamesh prometheus-config` and the scrape configuration behind it."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from novamesh.cli.main import app
from novamesh.errors import NovameshError
from novamesh.observe.scrape_config import control_plane_target, scrape_config, workload_target_groups

WORKLOADS = [
    {"id": "b1", "service": "back", "namespace": "shop", "version": "v2", "address": "127.1.0.3", "labels": {"app": "back", "version": "v2"}, "kind": "sidecar"},
    {"id": "a1", "service": "front", "namespace": "shop", "version": "v1", "address": "127.1.0.2", "labels": {}, "kind": "sidecar"},
    {"id": "x", "service": "lost", "namespace": "shop", "address": ""},
]


def test_control_plane_target() -> None:
    assert control_plane_target("http://127.0.0.1:15014") == "127.0.0.1:15014"
    assert control_plane_target("https://cp.example") == "cp.example:443"
    assert control_plane_target("http://[::1]:15014/") == "[::1]:15014"
    with pytest.raises(NovameshError, match="not http"):
        control_plane_target("127.0.0.1:15014")


def test_workload_targets_sorted_with_labels() -> None:
    groups = workload_target_groups(WORKLOADS, 15020)
    assert [g["targets"] for g in groups] == [["127.1.0.3:15020"], ["127.1.0.2:15020"]]
    assert groups[1]["labels"] == {"namespace": "shop", "pod": "a1", "app": "front", "version": "v1", "kind": "sidecar"}


def test_scrape_config_jobs() -> None:
    cfg = scrape_config(["http://127.0.0.1:15014", "http://127.0.0.2:15014"], WORKLOADS, interval="1s")
    assert cfg["global"]["scrape_interval"] == "1s"
    cp, wl = cfg["scrape_configs"]
    assert cp["static_configs"][0]["targets"] == ["127.0.0.1:15014", "127.0.0.2:15014"] and cp["metrics_path"] == "/metrics"
    assert wl["metrics_path"] == "/stats/prometheus" and len(wl["static_configs"]) == 2
    with pytest.raises(NovameshError):
        scrape_config([], WORKLOADS)


class FakeClient:
    base_urls = ["http://127.0.0.1:15014"]

    def get(self, path: str) -> list[dict[str, object]]:
        assert path == "/api/v1/workloads"
        return WORKLOADS  # type: ignore[return-value]


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("novamesh.cli.observe_cmds.client_for", lambda url: FakeClient())


def test_cli_prints_yaml_and_file_sd(fake_client: None) -> None:
    r = CliRunner().invoke(app, ["prometheus-config", "--interval", "5s"])
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load(r.stdout)
    assert [j["job_name"] for j in cfg["scrape_configs"]] == ["novamesh-control-plane", "novamesh-workloads"]
    r = CliRunner().invoke(app, ["prometheus-config", "--format", "file_sd", "--metrics-port", "16020"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["targets"] == ["127.1.0.3:16020"]


@pytest.mark.parametrize(
    "args, message",
    [(["--format", "xml"], "--format 'xml' is not one of static, file_sd"),
     (["--interval", "soon"], "--interval 'soon' is not a Prometheus duration"),
     (["--metrics-port", "70000"], "--metrics-port 70000 is not a TCP port")],
)
def test_cli_bad_options(args: list[str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_client(url: object) -> None:
        raise AssertionError("must fail before contacting the control plane")

    monkeypatch.setattr("novamesh.cli.observe_cmds.client_for", no_client)
    r = CliRunner().invoke(app, ["prometheus-config", *args])
    assert r.exit_code == 1
    assert message in r.output
