"""The sidecar bootstrap: shape, node metadata round trip, and Envoy accepts it."""

from __future__ import annotations

from pathlib import Path

import pytest

from novamesh.agent.bootstrap import XDS_CLUSTER, build_bootstrap, write_bootstrap
from novamesh.agent.envoy import find_envoy, validate_config
from novamesh.errors import EnvoyError
from novamesh.model.proxy import METADATA_KEY, Proxy, ProxyPort
from novamesh.settings import Settings

PROXY = Proxy(
    id="w-42",
    service="reviews",
    namespace="bookinfo",
    version="v2",
    service_account="bookinfo-reviews",
    address="127.1.0.7",
    app_host="127.1.0.7",
    labels=(("app", "reviews"), ("version", "v2")),
    ports=(ProxyPort(9080, "HTTP", "http-9080", 40123), ProxyPort(9090, "GRPC", "grpc-9090", 40124)),
    admin_port=15000,
    outbound_port=15001,
)


def test_node_identifies_the_proxy_and_metadata_round_trips() -> None:
    settings = Settings(domain_suffix="example.local")
    boot = build_bootstrap(PROXY, settings)
    node = boot["node"]
    assert node["id"] == PROXY.node_id("example.local") == "sidecar~127.1.0.7~w-42~bookinfo.svc.example.local"
    assert node["cluster"] == "reviews.bookinfo"
    assert Proxy.from_metadata(node["metadata"][METADATA_KEY]) == PROXY


def test_admin_is_bound_to_the_workload_address() -> None:
    boot = build_bootstrap(PROXY, Settings())
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.1.0.7", "port_value": 15000}


def test_everything_dynamic_comes_over_one_ads_stream() -> None:
    settings = Settings(xds_host="127.0.0.1", xds_port=25010)
    boot = build_bootstrap(PROXY, settings)
    (cluster,) = boot["static_resources"]["clusters"]
    assert cluster["name"] == XDS_CLUSTER and cluster["type"] == "STATIC"
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 25010}
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "connection_keepalive" in options["explicit_http_config"]["http2_protocol_options"]
    dyn = boot["dynamic_resources"]
    backoff = {"retry_back_off": {"base_interval": "0.500s", "max_interval": "5.000s"}}  # reconnect within 5 s
    assert dyn["ads_config"]["grpc_services"] == [{"envoy_grpc": {"cluster_name": XDS_CLUSTER, "retry_policy": backoff}}]
    assert dyn["ads_config"]["set_node_on_first_message_only"] is True
    assert dyn["cds_config"] == dyn["lds_config"] == {"ads": {}, "resource_api_version": "V3"}
    assert [layer["name"] for layer in boot["layered_runtime"]["layers"]] == ["static", "admin"]


def test_fragments_are_stripped_not_refused() -> None:
    """Istio's runtime override: Envoy strips ``#frag`` before normalization and RBAC (e2e: normalization corpus)."""
    static = build_bootstrap(PROXY, Settings())["layered_runtime"]["layers"][0]["static_layer"]
    assert static == {"envoy.reloadable_features.http_reject_path_with_fragment": False}


@pytest.mark.parametrize("xds_host", ["127.0.0.1", "localhost"])
def test_envoy_validates_the_bootstrap(tmp_path: Path, xds_host: str) -> None:
    settings = Settings(xds_host=xds_host)
    path = write_bootstrap(tmp_path / "w" / "bootstrap.json", build_bootstrap(PROXY, settings))
    validate_config(path)


def test_validate_reports_envoys_complaint(tmp_path: Path) -> None:
    boot = build_bootstrap(PROXY, Settings())
    boot["admin"]["no_such_field"] = 1
    path = write_bootstrap(tmp_path / "bootstrap.json", boot)
    with pytest.raises(EnvoyError, match="no_such_field"):
        validate_config(path)


def test_missing_configured_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EnvoyError, match="does not exist"):
        find_envoy(Settings(envoy_binary=str(tmp_path / "nope")))
    assert Path(find_envoy(Settings())).is_file()
