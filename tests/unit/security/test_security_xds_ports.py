"""Which xDS ports a control plane binds, and the refusals of impossible combinations."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from novamesh.errors import NovameshError
from novamesh.security.service import SecurityServer, bind_xds_ports
from novamesh.settings import Settings
from novamesh.store.sqlite import SqliteStore
from novamesh.testing.clock import ManualClock
from novamesh.testing.mesh import free_port


async def test_impossible_xds_port_settings_are_refused(store: SqliteStore, clock: ManualClock, tmp_path: Path) -> None:
    no_ca = Settings(data_dir=str(tmp_path), csr_port=-1, xds_plaintext=False)
    with pytest.raises(NovameshError, match="the CA is off.*sidecars could not connect"):
        bind_xds_ports(grpc.aio.server(), no_ca, SecurityServer(no_ca, store, clock))
    nothing = Settings(data_dir=str(tmp_path), xds_tls=False, xds_plaintext=False)
    with pytest.raises(NovameshError, match="xds_tls is off.*sidecars could not connect"):
        bind_xds_ports(grpc.aio.server(), nothing, SecurityServer(nothing, store, clock))


async def test_plaintext_stays_on_loopback_when_mtls_is_on(store: SqliteStore, clock: ManualClock, tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path), bind_host="0.0.0.0", xds_port=free_port(), csr_port=0)
    server = grpc.aio.server()
    security = SecurityServer(s, store, clock)
    bind_xds_ports(server, s, security)
    assert security.xds_backend_port  # mTLS ADS on a loopback port behind csr_port's router
    await server.start()
    try:
        import socket

        socket.create_connection(("127.0.0.1", s.xds_port), timeout=2).close()  # loopback: served
    finally:
        await server.stop(None)
