"""The ADS server over a real gRPC connection, driven the way Envoy drives it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format, struct_pb2
from google.rpc import status_pb2

from novamesh.model.proxy import METADATA_KEY, Proxy
from novamesh.model.snapshot import build_snapshot
from novamesh.registry import Workload, WorkloadPort
from novamesh.testing.mesh import free_port
from novamesh.testing.waiting import wait_until_async
from novamesh.translate import T, TranslateOptions
from novamesh.xds import TranslationCache, XdsServer


def _wl(wid: str, service: str, address: str) -> Workload:
    return Workload(id=wid, service=service, address=address, labels=(("app", service),), ports=(WorkloadPort(9080),), ready=True)


def _snap(*services: str, rev: int = 1) -> Any:
    ws = [_wl(f"{s}-1", s, f"127.3.0.{i + 2}") for i, s in enumerate(services)]
    return build_snapshot({}, ws, revision=rev, registry_version=rev)


class FakeEnvoy:
    """Speaks SotW ADS like Envoy: requests, ACKs, NACKs."""

    def __init__(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, proxy: Proxy) -> None:
        self.queue: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self.node_sent = False
        self.proxy = proxy

        async def requests() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
            while True:
                item = await self.queue.get()
                if item is None:
                    return
                yield item

        self.call = stub.StreamAggregatedResources(requests())
        self.responses: asyncio.Queue[discovery_pb2.DiscoveryResponse] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for resp in self.call:
            self.responses.put_nowait(resp)

    def send(self, type_url: str, names: list[str] | None = None, last: discovery_pb2.DiscoveryResponse | None = None, error: str = "") -> None:
        req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names or [])
        if not self.node_sent:
            md = struct_pb2.Struct()
            md.update({METADATA_KEY: self.proxy.to_metadata()})
            req.node.id = self.proxy.node_id()
            req.node.metadata.CopyFrom(md)
            self.node_sent = True
        if last is not None:
            req.response_nonce = last.nonce
            if error:
                req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
            else:
                req.version_info = last.version_info
        self.queue.put_nowait(req)

    async def recv(self, timeout: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        return await asyncio.wait_for(self.responses.get(), timeout)

    async def close(self) -> None:
        self.queue.put_nowait(None)
        self.call.cancel()
        self._reader.cancel()


def _names(resp: discovery_pb2.DiscoveryResponse) -> set[str]:
    out = set()
    for a in resp.resources:
        msg = json.loads(json_format.MessageToJson(a))
        out.add(msg.get("name") or msg.get("clusterName"))
    return out


@pytest.fixture
async def server() -> AsyncIterator[tuple[XdsServer, ads_pb2_grpc.AggregatedDiscoveryServiceStub]]:
    xds = XdsServer(TranslationCache(TranslateOptions()), gate_timeout=30)
    xds.update(_snap("reviews", "ratings"))
    srv = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(xds, srv)
    port = free_port()
    srv.add_insecure_port(f"127.0.0.1:{port}")
    await srv.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield xds, ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    finally:
        await channel.close()
        await srv.stop(0)


async def _handshake(env: FakeEnvoy) -> dict[str, discovery_pb2.DiscoveryResponse]:
    """Initial sync the way Envoy does it; returns the last response per type."""
    last: dict[str, discovery_pb2.DiscoveryResponse] = {}
    env.send(T.CLUSTER)
    env.send(T.LISTENER)
    cds = await env.recv()
    assert cds.type_url == T.CLUSTER
    last[T.CLUSTER] = cds
    eds_names = sorted(n for n in _names(cds) if n.startswith("outbound"))
    env.send(T.ENDPOINT, eds_names)
    eds = await env.recv()
    assert eds.type_url == T.ENDPOINT, "listeners must wait until endpoints are served"
    last[T.ENDPOINT] = eds
    env.send(T.CLUSTER, last=cds)
    lds = await env.recv()
    assert lds.type_url == T.LISTENER
    last[T.LISTENER] = lds
    env.send(T.ENDPOINT, eds_names, last=eds)
    env.send(T.LISTENER, last=lds)
    env.send(T.ROUTE, ["outbound"])
    rds = await env.recv()
    assert rds.type_url == T.ROUTE
    last[T.ROUTE] = rds
    env.send(T.ROUTE, ["outbound"], last=rds)
    return last


async def _wait_status(xds: XdsServer, pid: str, t: str, status: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        return next((p for p in xds.status() if p["id"] == pid and p["types"][t]["status"] == status), None)

    try:
        found = await wait_until_async(reached, 5.0, 0.01, f"{pid} {t} to become {status}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status: {xds.status()}") from None
    assert found is not None
    return found


async def test_initial_sync_acks_and_no_push_without_change(server: Any) -> None:
    xds, stub = server
    env = FakeEnvoy(stub, Proxy(id="p1", service="client", address="127.3.1.1"))
    await _handshake(env)
    for t in ("CDS", "EDS", "LDS", "RDS"):
        await _wait_status(xds, "p1", t, "SYNCED")
    pushes = dict(xds.pushes)
    xds.update(_snap("reviews", "ratings", rev=2))  # new revision, identical output
    with pytest.raises(asyncio.TimeoutError):
        await env.recv(timeout=0.5)
    assert xds.pushes == pushes
    await env.close()


async def test_nack_is_recorded_and_not_resent(server: Any) -> None:
    xds, stub = server
    env = FakeEnvoy(stub, Proxy(id="p2", service="client", address="127.3.1.2"))
    last = await _handshake(env)
    xds.update(_snap("reviews", "ratings", "details", rev=2))
    cds = await env.recv()
    assert "outbound|9080||details.default.svc.cluster.local" in _names(cds)
    env.send(T.CLUSTER, last=cds, error="pretend Envoy rejected it")
    p = await _wait_status(xds, "p2", "CDS", "NACK")
    assert p["types"]["CDS"]["error"] == "pretend Envoy rejected it"
    xds.update(_snap("reviews", "ratings", "details", rev=3))  # same output: must not be resent
    with pytest.raises(asyncio.TimeoutError):
        await env.recv(timeout=0.5)
    xds.update(_snap("reviews", rev=4))  # different output: sent
    nxt = await env.recv()
    assert nxt.type_url == T.CLUSTER and last[T.CLUSTER].nonce != nxt.nonce
    await env.close()


async def test_removed_cluster_outlives_the_routes_that_used_it(server: Any) -> None:
    xds, stub = server
    env = FakeEnvoy(stub, Proxy(id="p3", service="client", address="127.3.1.3"))
    await _handshake(env)
    gone = "outbound|9080||ratings.default.svc.cluster.local"
    xds.update(_snap("reviews", rev=2))
    seen: dict[str, discovery_pb2.DiscoveryResponse] = {}
    while T.ROUTE not in seen:
        r = await env.recv()
        if r.type_url == T.CLUSTER:
            assert gone in _names(r), "the stale cluster stays while routes may use it"
            env.send(T.CLUSTER, last=r)
        seen[r.type_url] = r
    assert gone not in str(json_format.MessageToDict(seen[T.ROUTE]))
    env.send(T.ROUTE, ["outbound"], last=seen[T.ROUTE])
    if T.LISTENER in seen:
        env.send(T.LISTENER, last=seen[T.LISTENER])
    final = await env.recv()
    assert final.type_url == T.CLUSTER and gone not in _names(final)
    c = cluster_pb2.Cluster()
    final.resources[0].Unpack(c)
    await env.close()


async def test_proxies_of_one_namespace_share_one_translation(server: Any) -> None:
    xds, stub = server
    envs = [FakeEnvoy(stub, Proxy(id=f"s{i}", service="client", address=f"127.3.2.{i + 1}")) for i in range(3)]
    before = xds.cache.translations
    xds.update(_snap("reviews", rev=9))
    for e in envs:
        await _handshake(e)
    assert xds.cache.translations - before == 1
    for e in envs:
        await e.close()


async def test_changed_cluster_gets_its_endpoints_again(server: Any) -> None:
    """Envoy re-warms a changed EDS cluster and needs its endpoints again, unasked."""
    from novamesh.config.resource import Resource
    from novamesh.config.types import DestinationRuleSpec

    xds, stub = server
    env = FakeEnvoy(stub, Proxy(id="p5", service="client", address="127.3.1.5"))
    await _handshake(env)
    spec = {"host": "reviews", "trafficPolicy": {"loadBalancer": {"simple": "LEAST_REQUEST"}}}
    dr = Resource("DestinationRule", "reviews", "default", "networking.istio.io/v1", DestinationRuleSpec.model_validate(spec), {})
    ws = [_wl("reviews-1", "reviews", "127.3.0.2"), _wl("ratings-1", "ratings", "127.3.0.3")]
    xds.update(build_snapshot({dr.key: dr}, ws, revision=2, registry_version=2))
    cds = await env.recv()
    assert cds.type_url == T.CLUSTER
    eds = await env.recv()
    assert eds.type_url == T.ENDPOINT, "endpoints must follow a changed cluster without a new request"
    # Only the re-warmed cluster's assignment: ratings' is unchanged and Envoy keeps it.
    assert _names(eds) == {n for n in _names(cds) if "reviews" in n and n.startswith("outbound")}
    await env.close()


async def test_endpoint_changes_send_only_the_changed_assignments(server: Any) -> None:
    """EDS is not a wildcard type: after the first response only what the proxy lacks is sent,
    under the version of the whole set; a NACKed delta is recomputed against what was ACKed."""
    xds, stub = server
    env = FakeEnvoy(stub, Proxy(id="p6", service="client", address="127.3.1.6"))
    last = await _handshake(env)
    first = last[T.ENDPOINT]
    assert len(_names(first)) == 2  # reviews and ratings: the first response is complete
    ws = [_wl("reviews-1", "reviews", "127.3.0.2"), _wl("reviews-2", "reviews", "127.3.0.9"), _wl("ratings-1", "ratings", "127.3.0.3")]
    xds.update(build_snapshot({}, ws, revision=1, registry_version=2))  # one workload joins reviews
    eds = await env.recv()
    assert eds.type_url == T.ENDPOINT and eds.version_info != first.version_info
    assert len(_names(eds)) == 1 and "reviews" in next(iter(_names(eds)))
    eds_names = sorted(n for n in _names(last[T.CLUSTER]) if n.startswith("outbound"))
    env.send(T.ENDPOINT, eds_names, last=eds, error="bad endpoint")  # Envoy keeps the first set
    await _wait_status(xds, "p6", "EDS", "NACK")
    ws.append(_wl("ratings-2", "ratings", "127.3.0.10"))  # now ratings changes too
    xds.update(build_snapshot({}, ws, revision=1, registry_version=3))
    again = await env.recv()
    assert again.type_url == T.ENDPOINT and len(_names(again)) == 2  # both differ from what was ACKed
    env.send(T.ENDPOINT, eds_names, last=again)
    await _wait_status(xds, "p6", "EDS", "SYNCED")
    await env.close()
