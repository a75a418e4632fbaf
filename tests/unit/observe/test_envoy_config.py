"""The telemetry additions to the HCM, tcp_proxy and bootstrap; Envoy accepts them."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

from novamesh.agent.bootstrap import build_bootstrap
from novamesh.agent.envoy import find_envoy
from novamesh.model.proxy import Proxy, ProxyPort
from novamesh.model.snapshot import build_snapshot
from novamesh.observe.envoy_config import ALS_CLUSTER, PEER_HEADER, SOURCE_HEADER, add_http_telemetry, als_cluster, peer_value
from novamesh.settings import Settings
from novamesh.translate import TranslateOptions, class_key, translate_class, translate_proxy
from novamesh.translate.common import T
from novamesh.translate.static import static_bootstrap

PROXY = Proxy(
    id="front1", service="front", namespace="shop", version="v1", address="127.1.0.2",
    labels=(("app", "front"), ("version", "v1")),
    ports=(ProxyPort(9080, "HTTP", "http", 40001), ProxyPort(5432, "TCP", "tcp", 40002)),
    telemetry_port=15019,
)


def _hcm(listener: dict[str, Any]) -> dict[str, Any]:
    return dict(listener["filter_chains"][0]["filters"][0]["typed_config"])


def _resources(proxy: Proxy) -> dict[str, dict[str, dict[str, Any]]]:
    snap = build_snapshot({}, [], revision=1, registry_version=1)
    opts = TranslateOptions()
    return translate_proxy(translate_class(snap, class_key(proxy), opts), proxy, opts)


def test_peer_value() -> None:
    assert peer_value(PROXY) == "front-v1,shop,front,v1"
    assert peer_value(Proxy(id="x", service="gw", namespace="ns")) == "gw,ns,gw,"


def test_no_telemetry_changes_nothing() -> None:
    hcm = {"http_filters": [{"name": "router"}]}
    assert add_http_telemetry(dict(hcm), replace(PROXY, telemetry_port=0), inbound=True) == hcm
    assert als_cluster(replace(PROXY, telemetry_port=0)) == []
    res = _resources(replace(PROXY, telemetry_port=0))
    assert "access_log" not in json.dumps(res[T.LISTENER])


def test_logger_added_next_to_other_loggers_and_filters_first() -> None:
    hcm = {"http_filters": [{"name": "cors"}, {"name": "router"}], "access_log": [{"name": "file"}]}
    out = add_http_telemetry(hcm, PROXY, inbound=False)
    assert [f["name"] for f in out["access_log"]] == ["file", "envoy.access_loggers.http_grpc"]
    assert out["access_log"][1]["typed_config"]["common_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == ALS_CLUSTER
    names = [f["name"] for f in out["http_filters"]]
    assert names[-2:] == ["cors", "router"] and len(names) == 4
    text = json.dumps(out["http_filters"][:2])
    assert PEER_HEADER in text and SOURCE_HEADER in text and "front-v1,shop,front,v1" in text


def test_listeners_carry_telemetry() -> None:
    res = _resources(PROXY)
    outbound = _hcm(res[T.LISTENER]["virtualOutbound"])
    assert outbound["access_log"][-1]["typed_config"]["common_config"]["log_name"] == "novamesh.outbound"
    inbound = _hcm(res[T.LISTENER]["inbound|9080"])
    assert inbound["access_log"][-1]["typed_config"]["common_config"]["log_name"] == "novamesh.inbound"
    tcp = _hcm(res[T.LISTENER]["inbound|5432"])
    assert tcp["access_log"][0]["name"] == "envoy.access_loggers.tcp_grpc"


def test_bootstrap_has_the_als_cluster_only_with_telemetry() -> None:
    names = [c["name"] for c in build_bootstrap(PROXY, Settings())["static_resources"]["clusters"]]
    assert ALS_CLUSTER in names
    names = [c["name"] for c in build_bootstrap(replace(PROXY, telemetry_port=0), Settings())["static_resources"]["clusters"]]
    assert ALS_CLUSTER not in names


def _validate(boot: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "static.json"
    path.write_text(json.dumps(boot))
    return subprocess.run([find_envoy(Settings()), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error"],
                          capture_output=True, text=True, timeout=120)


def test_envoy_accepts_the_telemetry_config(tmp_path: Path) -> None:
    boot = static_bootstrap(_resources(PROXY))
    boot["static_resources"]["clusters"].extend(als_cluster(PROXY))
    proc = _validate(boot, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_envoy_rejects_a_broken_telemetry_filter(tmp_path: Path) -> None:
    """The validation above can fail: a header_to_metadata rule without a header is refused."""
    boot = static_bootstrap(_resources(PROXY))
    boot["static_resources"]["clusters"].extend(als_cluster(PROXY))
    listener = next(ln for ln in boot["static_resources"]["listeners"] if ln["name"] == "inbound|9080")
    rule = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]["typed_config"]["request_rules"][0]
    rule["header"] = ""
    proc = _validate(boot, tmp_path)
    assert proc.returncode != 0
