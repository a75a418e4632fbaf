"""The telemetry additions to the HCM, tcp_proxy and bootstrap; Envoy accepts them."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from novamesh.agent.bootstrap import build_bootstrap
from novamesh.agent.envoy import find_envoy
from novamesh.model.proxy import Proxy, ProxyPort
from novamesh.model.snapshot import build_snapshot
from novamesh.observe.envoy_config import (
    ALS_CLUSTER,
    EDGE_STRIP_FILTER,
    LOG_OUTBOUND,
    PEER_HEADER,
    SOURCE_HEADER,
    UPSTREAM_LOCAL_PRINCIPAL_TAG,
    UPSTREAM_PEER_PRINCIPAL_TAG,
    UPSTREAM_PEER_TAG,
    add_http_telemetry,
    als_cluster,
    edge_strip_filter,
    peer_value,
    workload_peer_value,
)
from novamesh.registry import Workload, WorkloadPort
from novamesh.settings import Settings
from novamesh.translate import (
    TranslateOptions,
    class_key,
    translate_class,
    translate_proxy,
)
from novamesh.translate.common import T
from novamesh.translate.endpoints import endpoints_for_service
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


# -- outbound TCP and gateways ------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).parents[1] / "translate"))  # the golden scenarios
from scenarios import all_scenarios

SCENARIOS = all_scenarios()


def _scenario(name: str) -> dict[str, dict[str, dict[str, Any]]]:
    snap, proxy = SCENARIOS[name]
    opts = TranslateOptions()
    return translate_proxy(translate_class(snap, class_key(proxy), opts), replace(proxy, telemetry_port=15019), opts)


def _tcp_proxies(listener: dict[str, Any]) -> list[dict[str, Any]]:
    chains = [*listener.get("filter_chains", []), *([listener["default_filter_chain"]] if "default_filter_chain" in listener else [])]
    return [f["typed_config"] for c in chains for f in c["filters"] if f["name"] == "envoy.filters.network.tcp_proxy"]


def test_outbound_tcp_listeners_log_as_source_at_open_and_close() -> None:
    res = _scenario("protocols_tcp_tls_grpc")
    outbound = [ln for name, ln in res[T.LISTENER].items() if name.startswith("outbound|")]
    proxies = [tp for ln in outbound for tp in _tcp_proxies(ln)]
    assert proxies, "the scenario has local TCP/TLS listeners"
    for tp in proxies:
        assert [a["typed_config"]["common_config"]["log_name"] for a in tp["access_log"]] == [LOG_OUTBOUND]
        assert tp["access_log_options"] == {"flush_access_log_on_connected": True}
    # The CONNECT path: the outbound HCM flushes an entry when a tunnel is up.
    assert _hcm(res[T.LISTENER]["virtualOutbound"])["access_log_options"] == {"flush_log_on_tunnel_successfully_established": True}
    # Without telemetry the templates stay untouched (the shared class resources too).
    snap, proxy = SCENARIOS["protocols_tcp_tls_grpc"]
    opts = TranslateOptions()
    plain = translate_proxy(translate_class(snap, class_key(proxy), opts), proxy, opts)
    assert "access_log" not in json.dumps(plain[T.LISTENER])


def test_gateway_strips_forged_identity_then_adds_its_own() -> None:
    res = _scenario("gateway_ingress")
    for listener in res[T.LISTENER].values():
        for chain in listener["filter_chains"]:
            hcm = chain["filters"][0]["typed_config"]
            names = [f["name"] for f in hcm["http_filters"]]
            assert names[:3] == [EDGE_STRIP_FILTER, "novamesh.peer_to_metadata", "novamesh.peer_header"], names
            added = hcm["http_filters"][2]["typed_config"]["mutations"]["request_mutations"][0]["append"]["header"]
            assert added == {"key": SOURCE_HEADER, "value": "istio-ingressgateway,istio-system,istio-ingressgateway,"}
            assert hcm["access_log"][-1]["typed_config"]["common_config"]["log_name"] == LOG_OUTBOUND
    for rc in res[T.ROUTE].values():  # the router would strip them before the identity filters see them
        assert "request_headers_to_remove" not in rc and "response_headers_to_remove" not in rc
    strip = edge_strip_filter()["typed_config"]["mutations"]
    assert strip == {"request_mutations": [{"remove": SOURCE_HEADER}], "response_mutations": [{"remove": PEER_HEADER}]}


def test_gateway_without_telemetry_still_strips() -> None:
    snap, proxy = SCENARIOS["gateway_ingress"]
    opts = TranslateOptions()
    res = translate_proxy(translate_class(snap, class_key(proxy), opts), proxy, opts)
    hcm = next(iter(res[T.LISTENER].values()))["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["http_filters"][0] == edge_strip_filter()
    assert "access_log" not in json.dumps(res[T.LISTENER])


def test_envoy_accepts_gateway_and_tcp_telemetry(tmp_path: Path) -> None:
    for name in ("gateway_ingress", "protocols_tcp_tls_grpc"):
        boot = static_bootstrap(_scenario(name))
        boot["static_resources"]["clusters"].extend(als_cluster(replace(PROXY, telemetry_port=15019)))
        proc = _validate(boot, tmp_path)
        assert proc.returncode == 0, name + proc.stdout + proc.stderr


# -- the upstream workload for the source reporter ---------------------------------------------


def _custom_tags(access_log: dict[str, Any]) -> list[str]:
    return [t["tag"] for t in access_log["typed_config"]["common_config"].get("custom_tags", [])]


def test_only_outbound_loggers_read_the_upstream_host() -> None:
    res = _scenario("protocols_tcp_tls_grpc")
    expected = [UPSTREAM_PEER_TAG, UPSTREAM_PEER_PRINCIPAL_TAG, UPSTREAM_LOCAL_PRINCIPAL_TAG]
    outbound = [ln for name, ln in res[T.LISTENER].items() if name.startswith("outbound|")]
    assert outbound and all(_custom_tags(tp["access_log"][0]) == expected for ln in outbound for tp in _tcp_proxies(ln))
    assert _custom_tags(_hcm(res[T.LISTENER]["virtualOutbound"])["access_log"][-1]) == expected
    host_tag = _hcm(res[T.LISTENER]["virtualOutbound"])["access_log"][-1]["typed_config"]["common_config"]["custom_tags"][0]
    assert host_tag["metadata"] == {"kind": {"host": {}}, "metadata_key": {"key": "novamesh", "path": [{"key": "peer"}]}}
    inbound = _resources(PROXY)[T.LISTENER]["inbound|9080"]
    assert _custom_tags(_hcm(inbound)["access_log"][-1]) == []


def test_eds_endpoints_name_their_workload_as_its_sidecar_does() -> None:
    from scenarios import wl

    front = wl("front1", "front", "v1", "127.1.0.2", ns="shop")
    gateway = Workload(id="gw1", service="edge", namespace="shop", kind="gateway", address="127.1.0.9",
                       labels=(("app", "edge"),), ports=(WorkloadPort(8080),), ready=True)
    snap = build_snapshot({}, [front, gateway], revision=1, registry_version=1)
    eds = endpoints_for_service(snap, snap.services["front.shop.svc.cluster.local"])
    [entry] = eds["outbound|9080||front.shop.svc.cluster.local"]["endpoints"][0]["lb_endpoints"]
    # The value the serving sidecar announces in x-novamesh-peer, so both reporters agree.
    assert entry["metadata"]["filter_metadata"]["novamesh"] == {"peer": peer_value(PROXY)}
    eds = endpoints_for_service(snap, snap.services["edge.shop.svc.cluster.local"])
    [entry] = eds["outbound|8080||edge.shop.svc.cluster.local"]["endpoints"][0]["lb_endpoints"]
    assert entry["metadata"]["filter_metadata"]["novamesh"] == {"peer": "edge,shop,edge,"}
    assert workload_peer_value("edge", "shop", {"app": "edge"}) == peer_value(Proxy(id="gw1", service="edge", namespace="shop"))


def test_endpoints_without_a_registered_workload_carry_no_identity() -> None:
    snap, _ = SCENARIOS["external_services"]
    eds = [e for svc in snap.services.values() if svc.origin != "registry" for e in endpoints_for_service(snap, svc).values()]
    assert eds, "the scenario has ServiceEntry endpoints"
    assert "novamesh" not in json.dumps(eds)
