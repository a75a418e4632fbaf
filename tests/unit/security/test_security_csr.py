"""The CSR service in-process over real gRPC + TLS: token and renewal paths, every refusal."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc
import pytest

from novamesh.security import pki
from novamesh.security.ca import StoreCA
from novamesh.security.csr import METHOD, SERVER_NAME, CertificateService, CsrServer, request_certificate, sign_proof
from novamesh.security.tokens import AuthFailed
from novamesh.security.tokens import TokenStore
from novamesh.store.sqlite import SqliteStore
from novamesh.testing.clock import ManualClock

TD = "cluster.local"


@pytest.fixture
async def server(store: SqliteStore, clock: ManualClock) -> AsyncIterator[CsrServer]:
    ca = StoreCA(store, clock)
    service = CertificateService(ca, TokenStore(store, clock, TD), clock, trust_domain=TD, cert_ttl=3600)
    srv = CsrServer(service, "127.0.0.1", 0, server_cert_ttl=3600)
    await srv.start()
    yield srv
    await srv.stop()


def _roots(srv: CsrServer) -> bytes:
    return pki.cert_pem(srv.service.ca.trust_bundle())


def _target(srv: CsrServer) -> str:
    return f"127.0.0.1:{srv.port}"


def _csr(identity: str = "spiffe://cluster.local/ns/default/sa/reviews") -> tuple[pki.PrivateKey, bytes]:
    key = pki.generate_key()
    return key, pki.make_csr(key, pki.SpiffeId.parse(identity))


async def _raw(srv: CsrServer, body: bytes, token: str | None = None) -> grpc.StatusCode:
    creds = grpc.ssl_channel_credentials(root_certificates=_roots(srv))
    async with grpc.aio.secure_channel(_target(srv), creds, options=[("grpc.ssl_target_name_override", SERVER_NAME)]) as ch:
        md = [("authorization", f"Bearer {token}")] if token else []
        try:
            await ch.unary_unary(METHOD)(body, metadata=md, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_first_certificate_with_token_then_renewal_with_current_certificate(server: CsrServer, clock: ManualClock) -> None:
    tok = server.service.tokens.create("default", "reviews", ttl=60)
    key, csr = _csr()
    chain, roots = await request_certificate(_target(server), _roots(server), csr, token=tok.value)
    certs = pki.load_certs(chain)
    pki.verify_chain(certs, pki.load_certs(roots), clock.time())
    assert pki.spiffe_of(certs[0]).uri == "spiffe://cluster.local/ns/default/sa/reviews"
    assert certs[0].public_key().public_bytes(*_SPKI) == key.public_key().public_bytes(*_SPKI)
    # Renewal: a new key, proven with the current certificate and key; no token.
    key2, csr2 = _csr()
    chain2, _ = await request_certificate(_target(server), _roots(server), csr2, current=(chain, key))
    renewed = pki.load_certs(chain2)[0]
    assert pki.spiffe_of(renewed) == pki.spiffe_of(certs[0]) and renewed.serial_number != certs[0].serial_number
    assert server.served == 2


async def test_csr_asking_for_another_identity_gets_the_tokens_identity(server: CsrServer) -> None:
    tok = server.service.tokens.create("default", "reviews", ttl=60)
    _, csr = _csr("spiffe://cluster.local/ns/kube-system/sa/admin")
    chain, _ = await request_certificate(_target(server), _roots(server), csr, token=tok.value)
    cert = pki.load_certs(chain)[0]
    from cryptography import x509

    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(g.value) for g in sans] == ["spiffe://cluster.local/ns/default/sa/reviews"]


async def test_wrong_expired_and_reused_tokens_are_refused_and_the_service_keeps_serving(
    server: CsrServer, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    _, csr = _csr()
    body = json.dumps({"csr": csr.decode()}).encode()
    assert await _raw(server, body, token="nmt_" + "x" * 43) == grpc.StatusCode.UNAUTHENTICATED
    used = server.service.tokens.create("default", "reviews", ttl=60)
    assert await _raw(server, body, token=used.value) == grpc.StatusCode.OK
    assert await _raw(server, body, token=used.value) == grpc.StatusCode.UNAUTHENTICATED
    expired = server.service.tokens.create("default", "reviews", ttl=5)
    clock.advance(6)
    assert await _raw(server, body, token=expired.value) == grpc.StatusCode.UNAUTHENTICATED
    assert await _raw(server, body) == grpc.StatusCode.UNAUTHENTICATED  # no credential at all
    assert "unknown or used-up token" in caplog.text and "expired token" in caplog.text and "no credential" in caplog.text
    # Still serving:
    fresh = server.service.tokens.create("default", "reviews", ttl=60)
    assert await _raw(server, body, token=fresh.value) == grpc.StatusCode.OK


async def test_garbage_requests_are_invalid_and_do_not_burn_the_token(server: CsrServer) -> None:
    tok = server.service.tokens.create("default", "reviews", ttl=60)
    for body in (b"\xff\x00garbage", b"[]", b'{"csr": 5}', json.dumps({"csr": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}).encode(),
                 b'{"csr": "x", "validity_duration": -1}'):  # fmt: skip
        assert await _raw(server, body, token=tok.value) == grpc.StatusCode.INVALID_ARGUMENT
    _, csr = _csr()
    assert await _raw(server, json.dumps({"csr": csr.decode()}).encode(), token=tok.value) == grpc.StatusCode.OK


async def test_renewal_with_a_forged_proof_or_foreign_certificate_is_refused(server: CsrServer, clock: ManualClock) -> None:
    tok = server.service.tokens.create("default", "reviews", ttl=60)
    key, csr = _csr()
    chain, _ = await request_certificate(_target(server), _roots(server), csr, token=tok.value)
    _, csr2 = _csr()
    wrong_key = pki.generate_key()  # holds the certificate but not its key
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await request_certificate(_target(server), _roots(server), csr2, current=(chain, wrong_key))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED and exc.value.details() == "authentication failed"
    foreign_key = pki.generate_key()
    foreign_root = pki.self_signed_root(foreign_key, "evil", "x", clock.time(), 3600)
    forged = pki.sign(issuer_cert=foreign_root, issuer_key=foreign_key, public_key=key.public_key(),
                      uris=["spiffe://cluster.local/ns/default/sa/admin"], now=clock.time(), ttl=600)  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await request_certificate(_target(server), _roots(server), csr2, current=(pki.cert_pem(forged), key))
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # An expired certificate cannot renew itself (checked on the transport-free core: TLS
    # itself would refuse the server's own certificate in a faked future).
    body = json.dumps({"csr": csr2.decode(), "current_chain": chain.decode(), "proof": sign_proof(key, csr2)}).encode()
    server.service.create(body, None)  # valid now
    clock.advance(3601)
    with pytest.raises(AuthFailed) as failed:
        server.service.create(body, None)
    assert "not valid" in failed.value.reason


from cryptography.hazmat.primitives import serialization  # noqa: E402

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


async def test_agent_fails_over_to_the_next_replica_csr_service(server: CsrServer, clock: ManualClock, tmp_path: object) -> None:
    """HA: an unreachable CSR replica is skipped; the one that answered is tried first next time."""
    from novamesh.agent.identity import WorkloadIdentity
    from novamesh.settings import Settings
    from novamesh.testing.mesh import free_port

    dead = f"127.0.0.1:{free_port()}"
    settings = Settings(csr_addresses=f"{dead},{_target(server)}", cert_ttl=3600)
    identity = WorkloadIdentity(settings, clock, pki.SpiffeId.parse("spiffe://cluster.local/ns/default/sa/reviews"), sds=None)  # type: ignore[arg-type]
    assert identity.targets == [dead, _target(server)]
    tok = server.service.tokens.create("default", "reviews", ttl=60)
    cert = await identity._request(_roots(server), token=tok.value)
    assert str(pki.spiffe_of(cert.leaf)) == "spiffe://cluster.local/ns/default/sa/reviews"
    assert identity.target == _target(server)
