"""Which xDS ports a control plane binds, and the refusals of impossible combinations."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest

from novamesh.errors import NovameshError
from novamesh.security.service import SecurityServer, bind_xds_ports, plaintext_xds_host
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


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.mark.parametrize("ca", ["on", "off"])
async def test_plaintext_binds_loopback_whatever_bind_host_says(store: SqliteStore, clock: ManualClock, tmp_path: Path, ca: str) -> None:
    """bind_host 0.0.0.0 would accept on every address (127.0.0.2 included); plaintext xDS
    binds 127.0.0.1 only, with the CA on or off (the CA being off was the old exception)."""
    s = Settings(data_dir=str(tmp_path), bind_host="0.0.0.0", xds_port=free_port(), csr_port=0 if ca == "on" else -1)
    server = grpc.aio.server()
    security = SecurityServer(s, store, clock)
    assert bind_xds_ports(server, s, security) == ("127.0.0.1", s.xds_port)
    assert bool(security.xds_backend_port) == (ca == "on")  # mTLS ADS behind csr_port's router
    await server.start()
    try:
        assert _accepts("127.0.0.1", s.xds_port)
        assert not _accepts("127.0.0.2", s.xds_port)  # not a wildcard bind
    finally:
        await server.stop(None)


def test_loopback_bind_host_is_kept() -> None:
    s = Settings(bind_host="127.0.0.2")
    assert plaintext_xds_host(s) == "127.0.0.2"  # replicas of a local HA stack on their own loopback address


async def test_any_address_is_an_explicit_opt_out(store: SqliteStore, clock: ManualClock, tmp_path: Path) -> None:
    s = Settings(data_dir=str(tmp_path), bind_host="0.0.0.0", xds_port=free_port(), csr_port=-1, xds_plaintext_any_address=True)
    server = grpc.aio.server()
    assert bind_xds_ports(server, s, SecurityServer(s, store, clock)) == ("0.0.0.0", s.xds_port)
    await server.start()
    try:
        assert _accepts("127.0.0.2", s.xds_port)  # the wildcard bind the setting asked for
    finally:
        await server.stop(None)


def test_the_opt_out_is_off_by_default_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().xds_plaintext_any_address is False
    monkeypatch.setenv("NOVAMESH_XDS_PLAINTEXT_ANY_ADDRESS", "true")
    assert Settings.from_env().xds_plaintext_any_address is True
