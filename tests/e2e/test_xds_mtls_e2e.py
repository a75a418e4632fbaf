"""xDS over mutual TLS on port 15012 through real Envoy (issue 4, point 4).

Sidecars get their configuration over mTLS on the CSR port, told apart from certificate requests
by TLS server name; the plaintext port is switched off here, so nothing else could have worked.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import grpc
import pytest

from novamesh.security.csr import SERVER_NAME, XDS_SERVER_NAME
from novamesh.testing.load import run_load
from novamesh.testing.mesh import LocalMesh

pytestmark = pytest.mark.e2e

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("xds-mtls"), settings={"xds_plaintext": "false"})
    try:
        m.start_control_plane()
        m.echo("ratings")
        m.client("client")
        yield m
    finally:
        m.close()


def test_sidecars_get_config_over_mtls_on_the_csr_port(mesh: LocalMesh) -> None:
    client = mesh.workload("client")
    res = run_load("http://ratings:9080/", count=10, proxy=client.proxy_url)
    assert res.failed == 0 and res.ok == 10
    csr_port = int(mesh.env["NOVAMESH_CSR_PORT"])
    for wp in (client, mesh.workload("ratings")):
        assert wp.counter("cluster.xds-grpc.ssl.handshake") >= 1  # the ADS stream runs over TLS
        assert wp.counter("cluster.xds-grpc.upstream_cx_active") == 1
    proxies = mesh.api.get("/api/v1/proxies")
    assert {p["service"] for p in proxies} >= {"ratings", "client"}
    assert all(p["types"]["CDS"]["status"] == "SYNCED" for p in proxies)
    # The control plane reports the sidecars' own addresses, not its port router's.
    assert all(not p["peer"].endswith(f":{csr_port}") for p in proxies)
    assert f"CSR service on 127.0.0.1:{csr_port} (TLS; also xDS over mTLS)" in mesh.cp_log()
    with pytest.raises(OSError):  # plaintext xDS is switched off: not served at all
        socket.create_connection(("127.0.0.1", mesh.xds_port), timeout=2).close()


def test_xds_on_15012_needs_a_workload_certificate(mesh: LocalMesh) -> None:
    roots = "".join(mesh.api.get("/api/v1/ca/bundle")["roots"]).encode()
    port = int(mesh.env["NOVAMESH_CSR_PORT"])

    async def call(server_name: str) -> grpc.StatusCode:
        creds = grpc.ssl_channel_credentials(root_certificates=roots)
        opts = [("grpc.ssl_target_name_override", server_name)]
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options=opts) as ch:
            try:
                await ch.unary_unary(ADS_METHOD)(b"", timeout=5)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    # Without a client certificate the ADS side refuses the handshake ...
    assert asyncio.run(call(XDS_SERVER_NAME)) == grpc.StatusCode.UNAVAILABLE
    # ... and the CSR side (no client certificate needed) does not serve ADS.
    assert asyncio.run(call(SERVER_NAME)) == grpc.StatusCode.UNIMPLEMENTED
    # The sidecars stay connected and serving.
    res = run_load("http://ratings:9080/", count=5, proxy=mesh.workload("client").proxy_url)
    assert res.failed == 0
