"""Agents know every control-plane replica: REST fails over, Envoy's xDS cluster lists them all."""

from __future__ import annotations

import httpx
import pytest

from novamesh.agent.bootstrap import XDS_CLUSTER, build_bootstrap, xds_addresses
from novamesh.agent.client import ControlPlaneClient, WorkloadSpec
from novamesh.cli.client import ApiClient
from novamesh.errors import ControlPlaneUnavailable, NovameshError
from novamesh.model.proxy import Proxy
from novamesh.settings import Settings

LEASE = {"id": "w1", "address": "127.1.0.2", "lease_ttl": 15, "heartbeat_interval": 3}


async def test_rest_fails_over_to_the_next_replica_and_sticks_to_it() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        if request.url.host == "cp1":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=LEASE)

    async with ControlPlaneClient("http://cp1:15014,http://cp2:15014", transport=httpx.MockTransport(handler)) as c:
        lease = await c.register(WorkloadSpec(service="reviews"))
        assert lease.id == "w1" and seen == ["cp1", "cp2"]
        assert c.base_url == "http://cp2:15014"
        assert await c.heartbeat("w1", True)
        assert seen == ["cp1", "cp2", "cp2"]


async def test_every_replica_down_names_them_all() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with ControlPlaneClient("http://cp1:1,http://cp2:2", transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(ControlPlaneUnavailable, match="cp1:1.*cp2:2"):
            await c.heartbeat("w1", True)


def test_cli_client_splits_replicas() -> None:
    api = ApiClient("http://a:1, http://b:2/")
    assert api.base_urls == ["http://a:1", "http://b:2"]
    api.close()


def test_xds_cluster_lists_every_replica() -> None:
    proxy = Proxy(id="w", service="s", address="127.1.0.7")
    settings = Settings(xds_addresses="127.0.0.1:15010, 127.0.0.2:15011")
    assert xds_addresses(settings) == [("127.0.0.1", 15010), ("127.0.0.2", 15011)]
    cluster = build_bootstrap(proxy, settings)["static_resources"]["clusters"][0]
    assert cluster["name"] == XDS_CLUSTER and cluster["type"] == "STATIC"
    eps = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in eps] == [15010, 15011]
    assert xds_addresses(Settings(xds_host="10.0.0.1", xds_port=1)) == [("10.0.0.1", 1)]
    named = build_bootstrap(proxy, Settings(xds_addresses="cp1:15010,127.0.0.1:15010"))
    assert named["static_resources"]["clusters"][0]["type"] == "STRICT_DNS"
    with pytest.raises(NovameshError, match="'cp1' is not HOST:PORT"):
        xds_addresses(Settings(xds_addresses="cp1"))
