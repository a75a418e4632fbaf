"""Agent side: renewal schedule (ManualClock), SDS state-of-the-world pushes, bootstrap wiring."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import grpc
import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc

from novamesh.agent.bootstrap import build_bootstrap
from novamesh.agent.identity import Certificate, WorkloadIdentity, renewal_delay
from novamesh.agent.sds import SDS_CLUSTER, SECRET_TYPE, SdsServer, add_sds, sds_socket_path
from novamesh.model.proxy import Proxy
from novamesh.security import pki
from novamesh.security.ca import StoreCA
from novamesh.settings import Settings
from novamesh.store.sqlite import SqliteStore
from novamesh.testing.clock import ManualClock

ID = pki.SpiffeId("cluster.local", "default", "reviews")


def test_renewal_delay_is_half_the_lifetime_minus_jitter() -> None:
    assert renewal_delay(1000, 1000 + 86400, 1000, 0.5, 0.1, 0.0) == 43200
    assert renewal_delay(1000, 1000 + 86400, 1000, 0.5, 0.1, 0.999) == pytest.approx(86400 * (0.5 - 0.0999))
    assert renewal_delay(1000, 1000 + 100, 1090, 0.5, 0.0, 0.5) == 0  # overdue: renew at once
    assert renewal_delay(1000, 900, 1000, 0.5, 0.1, 0.5) == 0  # nonsense input never goes negative


class _FakeSds(SdsServer):
    def __init__(self) -> None:
        super().__init__(Path("/nonexistent"))
        self.updates: list[bytes] = []

    async def update(self, chain_pem: bytes, key_pem: bytes, roots_pem: bytes) -> None:
        self.updates.append(chain_pem)


class _LocalIdentity(WorkloadIdentity):
    """Signs with an in-process CA instead of calling the CSR service."""

    ca: StoreCA
    fail_next = 0

    async def _request(self, roots_pem: bytes, *, token: str | None) -> Certificate:
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("control plane unreachable")
        key = pki.generate_key()
        issued = self.ca.issue(key.public_key(), [ID.uri], self.settings.cert_ttl)
        return Certificate(issued.chain_pem, pki.key_pem(key), issued.roots_pem, self.clock.time())


async def test_renewal_follows_the_schedule_and_retries_on_failure(store: SqliteStore, clock: ManualClock) -> None:
    settings = Settings(cert_ttl=100, cert_renew_fraction=0.5, cert_renew_jitter=0.2, cert_retry_interval=3,
                        trust_bundle_check_interval=0)  # fmt: skip
    sds = _FakeSds()
    wid = _LocalIdentity(settings, clock, ID, sds, rng=random.Random(7))
    wid.ca = StoreCA(store, clock)
    await wid.obtain(b"", "token")
    first = wid.current
    assert first is not None and len(sds.updates) == 1
    delay = wid.next_delay()
    assert 100 * 0.3 <= delay <= 100 * 0.5
    task = asyncio.create_task(wid.run())
    try:
        for _ in range(50):
            await asyncio.sleep(0)
        clock.advance(delay - 1)
        for _ in range(50):
            await asyncio.sleep(0)
        assert wid.renewals == 0  # not yet
        wid.fail_next = 1
        clock.advance(1.01)
        for _ in range(50):
            await asyncio.sleep(0)
        assert wid.failures == 1 and wid.renewals == 0
        clock.advance(3.01)  # cert_retry_interval
        for _ in range(200):
            await asyncio.sleep(0)
            if wid.renewals:
                break
        assert wid.renewals == 1 and len(sds.updates) == 2
        assert wid.current is not None and wid.current.leaf.serial_number != first.leaf.serial_number
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class _BundleWatchingIdentity(_LocalIdentity):
    """Sees the roots the control plane publishes through ``published`` (the REST answer)."""

    published: tuple[frozenset[str], str] | None = None
    checks = 0

    async def published_trust(self) -> tuple[frozenset[str], str] | None:
        self.checks += 1
        return self.published


async def _settle(cond: object, rounds: int = 200) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)
        if callable(cond) and cond():
            return


async def test_a_changed_trust_bundle_triggers_a_renewal_at_once(store: SqliteStore, clock: ManualClock) -> None:
    """Root rotation: the agent picks up A+B (and later only B) within one check interval, not
    at its next scheduled renewal (half of a 24 h certificate by default)."""
    from novamesh.security.ca import rotate_root

    settings = Settings(cert_ttl=1000, cert_renew_jitter=0, trust_bundle_check_interval=10)
    sds = _FakeSds()
    wid = _BundleWatchingIdentity(settings, clock, ID, sds, rng=random.Random(1))
    wid.ca = StoreCA(store, clock)
    await wid.obtain(b"", "token")
    ca = wid.ca

    def publish() -> None:
        wid.published = (frozenset(pki.fingerprint(c) for c in ca.trust_bundle()), ca.signer_subject())

    def roots_held() -> set[str]:
        assert wid.current is not None
        return {pki.fingerprint(c) for c in pki.load_certs(wid.current.roots_pem)}

    publish()
    task = asyncio.create_task(wid.run())
    try:
        await _settle(None, 50)
        clock.advance(10.01)
        await _settle(lambda: wid.checks >= 1)
        assert wid.checks == 1 and wid.renewals == 0  # same bundle, same signer: nothing to do
        ca.REFRESH = 0  # type: ignore[misc]  # re-read the store at once, not after a second
        # start: B joins the bundle -> renew at the next check, not at the scheduled renewal.
        rotate_root(ca, "start")
        publish()
        clock.advance(10.01)
        await _settle(lambda: wid.renewals >= 1)
        assert wid.renewals == 1 and wid.bundle_renewals == 1 and len(roots_held()) == 2
        assert len(sds.updates) == 2  # Envoy got the new bundle over SDS
        # The same published state again: no second renewal (no loop on a lagging replica).
        clock.advance(10.01)
        await _settle(lambda: wid.checks >= 3)
        assert wid.checks == 3 and wid.renewals == 1
        # activate: B signs -> our A-signed certificate is replaced by a B-signed one.
        rotate_root(ca, "activate")
        publish()
        clock.advance(10.01)
        await _settle(lambda: wid.renewals >= 2)
        assert wid.renewals == 2 and wid.current is not None
        assert wid.current.leaf.issuer.rfc4514_string() == ca.signer_subject()
        # finish: only B -> the agent drops A from what its Envoy trusts.
        rotate_root(ca, "finish")
        publish()
        clock.advance(10.01)
        await _settle(lambda: wid.renewals >= 3)
        assert wid.bundle_renewals == 3 and len(roots_held()) == 1
        # Unknown (control plane unreachable): nothing happens.
        wid.published = None
        clock.advance(10.01)
        await _settle(lambda: wid.checks >= 6)
        assert wid.checks == 6 and wid.renewals == 3 and wid.failures == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _recv(call: grpc.aio.StreamStreamCall) -> discovery_pb2.DiscoveryResponse:  # type: ignore[type-arg]
    return await asyncio.wait_for(call.read(), 10)


async def test_sds_serves_default_and_rootca_and_pushes_rotations(tmp_path: Path) -> None:
    path = sds_socket_path(tmp_path / ("x" * 120))  # too long for a Unix socket: falls back
    assert len(str(path)) <= 100
    server = SdsServer(path)
    await server.update(b"CHAIN1", b"KEY1", b"ROOTS1")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"unix:{path}") as ch:
            stub = sds_pb2_grpc.SecretDiscoveryServiceStub(ch)
            queue: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()

            async def requests():  # type: ignore[no-untyped-def]
                while (req := await queue.get()) is not None:
                    yield req

            call = stub.StreamSecrets(requests())
            await queue.put(discovery_pb2.DiscoveryRequest(resource_names=["default"], type_url=SECRET_TYPE))
            resp = await _recv(call)
            secret = secret_pb2.Secret()
            resp.resources[0].Unpack(secret)
            assert secret.name == "default" and secret.tls_certificate.certificate_chain.inline_bytes == b"CHAIN1"
            # ACK, then a rotation is pushed without being asked.
            await queue.put(discovery_pb2.DiscoveryRequest(resource_names=["default"], version_info=resp.version_info,
                                                           response_nonce=resp.nonce, type_url=SECRET_TYPE))  # fmt: skip
            await server.update(b"CHAIN2", b"KEY2", b"ROOTS2")
            pushed = await _recv(call)
            pushed.resources[0].Unpack(secret)
            assert secret.tls_certificate.certificate_chain.inline_bytes == b"CHAIN2" and pushed.version_info != resp.version_info
            # Switching to ROOTCA answers at once with the trust bundle.
            await queue.put(discovery_pb2.DiscoveryRequest(resource_names=["ROOTCA"], type_url=SECRET_TYPE))
            roots = await _recv(call)
            roots.resources[0].Unpack(secret)
            assert secret.name == "ROOTCA" and secret.validation_context.trusted_ca.inline_bytes == b"ROOTS2"
            await queue.put(None)
            call.cancel()
        assert server.pushes == 3 and server.nacks == 0
    finally:
        await server.stop()
    assert not path.exists()


def test_bootstrap_gets_the_sds_cluster_and_the_identity_cluster() -> None:
    boot = add_sds(build_bootstrap(Proxy(id="w1", service="reviews"), Settings()), Path("/run/x/sds.sock"))
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    pipe = clusters[SDS_CLUSTER]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]
    assert pipe == {"path": "/run/x/sds.sock"}
    tls = clusters["novamesh-identity"]["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["tls_certificate_sds_secret_configs"][0]["name"] == "default"
    assert tls["validation_context_sds_secret_config"]["name"] == "ROOTCA"


def test_mtls_xds_moves_the_ads_cluster_to_every_csr_port() -> None:
    settings = Settings(csr_port=15012, trust_domain="prod.example")
    boot = add_sds(build_bootstrap(Proxy(id="w1", service="reviews"), settings), Path("/s.sock"), settings)
    xds = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "xds-grpc")
    ports = {lb["endpoint"]["address"]["socket_address"]["port_value"] for g in xds["load_assignment"]["endpoints"] for lb in g["lb_endpoints"]}
    assert ports == {15012}
    tls = xds["transport_socket"]["typed_config"]
    assert tls["sni"] == "xds.novamesh-control-plane"  # the port router sends it to ADS, not the CSR service
    ctx = tls["common_tls_context"]
    assert ctx["tls_certificate_sds_secret_configs"][0]["name"] == "default"
    sans = ctx["combined_validation_context"]["default_validation_context"]["match_typed_subject_alt_names"]
    assert sans == [{"san_type": "URI", "matcher": {"exact": "spiffe://prod.example/ns/novamesh-system/sa/control-plane"}}]
    # HA: one endpoint per replica, the same list the CSR client fails over across.
    ha = Settings(csr_addresses="10.0.0.1:15012, 10.0.0.2:25012", xds_addresses="10.0.0.1:15010,10.0.0.2:25010")
    boot = add_sds(build_bootstrap(Proxy(id="w1", service="reviews"), ha), Path("/s.sock"), ha)
    xds = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "xds-grpc")
    addrs = [lb["endpoint"]["address"]["socket_address"] for g in xds["load_assignment"]["endpoints"] for lb in g["lb_endpoints"]]
    assert [(a["address"], a["port_value"]) for a in addrs] == [("10.0.0.1", 15012), ("10.0.0.2", 25012)]
    assert xds["type"] == "STATIC"
    # xds_tls off: the ADS cluster stays plaintext on xds_port.
    off = Settings(xds_tls=False)
    plain = add_sds(build_bootstrap(Proxy(id="w1", service="reviews"), off), Path("/s.sock"), off)
    assert "transport_socket" not in next(c for c in plain["static_resources"]["clusters"] if c["name"] == "xds-grpc")


async def test_agent_start_errors_say_what_to_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from novamesh.agent.identity import start_identity
    from novamesh.errors import NovameshError
    from novamesh.testing.mesh import free_port

    root = pki.self_signed_root(pki.generate_key(), "r", "o", time.time(), 3600)
    (tmp_path / "roots.pem").write_bytes(pki.cert_pem(root))
    (tmp_path / "junk.pem").write_text("not a certificate")
    monkeypatch.setenv("NOVAMESH_JOIN_TOKEN", "nmt_" + "a" * 43)
    closed = Settings(ca_bundle_file=str(tmp_path / "roots.pem"), csr_port=free_port(), xds_host="127.0.0.1")
    with pytest.raises(NovameshError, match="cannot reach the CSR service at 127.0.0.1"):
        await start_identity(closed, tmp_path, "default", "web")
    with pytest.raises(NovameshError, match="ca_bundle_file .*junk.pem"):
        await start_identity(Settings(ca_bundle_file=str(tmp_path / "junk.pem")), tmp_path, "default", "web")


class _RefusedIdentity(_LocalIdentity):
    """Renewals are refused (the CA no longer trusts our certificate); first certificates work."""

    tokens: list[str | None] = []

    async def _request(self, roots_pem: bytes, *, token: str | None) -> Certificate:
        self.tokens.append(token)
        if token is None:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAUTHENTICATED, grpc.aio.Metadata(), grpc.aio.Metadata(), "authentication failed")
        return await super()._request(roots_pem, token=token)


async def test_a_refused_certificate_makes_the_agent_join_again(store: SqliteStore, clock: ManualClock,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """A control plane rebuilt with another CA refuses renewals: the agent gets a new first
    certificate with a join token (as at start-up), at most once per rejoin_interval."""
    import novamesh.agent.identity as identity_mod

    async def roots(settings: Settings) -> bytes:
        return b"roots"

    async def token(settings: Settings, identity: pki.SpiffeId) -> str:
        return "nmt_fresh"

    monkeypatch.setattr(identity_mod, "_fetch_roots", roots)
    monkeypatch.setattr(identity_mod, "_token", token)
    settings = Settings(cert_ttl=100, cert_renew_jitter=0, cert_retry_interval=3, rejoin_interval=30, trust_bundle_check_interval=0)
    sds = _FakeSds()
    wid = _RefusedIdentity(settings, clock, ID, sds, rng=random.Random(3))
    wid.tokens = []
    wid.ca = StoreCA(store, clock)
    await wid.obtain(b"", "nmt_first")
    task = asyncio.create_task(wid.run())
    try:
        await _settle(None, 50)
        clock.advance(50.01)  # the scheduled renewal: refused -> join again with a new token
        await _settle(lambda: wid.rejoins >= 1)
        assert wid.rejoins == 1 and wid.tokens == ["nmt_first", None, "nmt_fresh"] and len(sds.updates) == 2
        clock.advance(50.01)  # refused again 50 s later: past rejoin_interval, joins again
        await _settle(lambda: wid.rejoins >= 2)
        assert wid.rejoins == 2
        wid.settings = Settings(cert_ttl=100, cert_renew_jitter=0, cert_retry_interval=3, rejoin_interval=1000, trust_bundle_check_interval=0)
        clock.advance(50.01)  # within rejoin_interval now: no third join, ordinary retries instead
        await _settle(lambda: wid.failures >= 1)
        assert wid.rejoins == 2 and wid.failures == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_only_a_broken_trust_counts_as_refused() -> None:
    from novamesh.agent.identity import _refused

    def err(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    assert _refused(err(grpc.StatusCode.UNAUTHENTICATED, "authentication failed"))
    assert _refused(err(grpc.StatusCode.UNAVAILABLE, "Tls handshake failed: CERTIFICATE_VERIFY_FAILED: unable to get local issuer"))
    assert not _refused(err(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; Connection refused"))
    assert not _refused(OSError("down"))
