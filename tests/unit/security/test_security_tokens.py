"""Join tokens: minting, hashing at rest, expiry, uses, malformed input."""

from __future__ import annotations

import hashlib

import pytest

from novamesh.errors import NovameshError, SecurityError
from novamesh.security.tokens import AuthFailed, TokenStore, parse_token
from novamesh.store.sqlite import SqliteStore
from novamesh.testing.clock import ManualClock


def _reason(exc: pytest.ExceptionInfo[AuthFailed]) -> str:
    assert str(exc.value) == "authentication failed"  # opaque to the caller
    return exc.value.reason


def test_token_lifecycle_uses_and_identity(store: SqliteStore, clock: ManualClock) -> None:
    tokens = TokenStore(store, clock, "prod.example")
    tok = tokens.create("payments", "api", ttl=60, uses=2)
    assert tok.identity.uri == "spiffe://prod.example/ns/payments/sa/api"
    # Only the hash is stored.
    assert store.get_secret("token/" + hashlib.sha256(tok.value.encode()).hexdigest()) is not None
    assert tok.value.encode() not in (store.get_secret("token/" + hashlib.sha256(tok.value.encode()).hexdigest()) or b"")
    assert tokens.consume(tok.value) == tok.identity
    assert tokens.consume(f"Bearer {tok.value}\n") == tok.identity
    with pytest.raises(AuthFailed) as exc:
        tokens.consume(tok.value)  # used up
    assert "used-up" in _reason(exc)


def test_expired_token_is_refused(store: SqliteStore, clock: ManualClock) -> None:
    tokens = TokenStore(store, clock, "cluster.local")
    tok = tokens.create("default", "web", ttl=30)
    clock.advance(30)
    with pytest.raises(AuthFailed) as exc:
        tokens.consume(tok.value)
    assert "expired" in _reason(exc)


@pytest.mark.parametrize("text", ["", "nmt_short", "nmt_" + "A" * 42 + "!", "x" * 500, "Bearer ", "nmt_" + "é" * 43])
def test_malformed_tokens_are_refused_opaquely(text: str) -> None:
    with pytest.raises(SecurityError, match="^authentication failed$"):
        parse_token(text)


def test_unknown_token_is_refused(store: SqliteStore, clock: ManualClock) -> None:
    with pytest.raises(AuthFailed) as exc:
        TokenStore(store, clock, "cluster.local").consume("nmt_" + "B" * 43)
    assert "unknown" in _reason(exc)


@pytest.mark.parametrize(
    ("ns", "sa", "ttl", "uses", "match"),
    [("Bad_NS", "x", 60, 1, "namespace"), ("ok", "", 60, 1, "service account"), ("ok", "x", 0, 1, "ttl"),
     ("ok", "x", 60, 0, "uses")],  # fmt: skip
)
def test_bad_token_requests_say_what_is_wrong(store: SqliteStore, clock: ManualClock, ns: str, sa: str, ttl: float, uses: int, match: str) -> None:
    with pytest.raises(NovameshError, match=match):
        TokenStore(store, clock, "cluster.local").create(ns, sa, ttl, uses)
