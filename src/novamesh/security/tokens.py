"""Join tokens: how a workload proves who it is for its first certificate.

A token is ``nmt_<43 url-safe characters>`` (256 random bits). The store keeps only its SHA-256
(secret ``token/<hex>``) with the identity it grants, its expiry and its remaining uses, so a
leaked store does not leak usable tokens. :meth:`TokenStore.consume` is the only way a token is
used: it checks, decrements and deletes used-up tokens in one step (the CSR service runs in one
event loop, so two requests cannot interleave inside it).

Errors: :meth:`TokenStore.consume` raises :class:`AuthFailed` (a :class:`~novamesh.errors.SecurityError`) with an opaque
message for every failure; its ``reason`` says why (for the log only).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass

from ..clock import Clock
from ..errors import NovameshError, SecurityError
from ..store.base import ConfigStore
from .pki import BadInput, SpiffeId

__all__ = ["Token", "TokenStore", "AuthFailed", "parse_token", "auth_failed"]

_TOKEN_RE = re.compile(r"nmt_[A-Za-z0-9_-]{43}")
_PREFIX = "token/"
MAX_TTL = 30 * 86400.0
MAX_USES = 10_000


class AuthFailed(SecurityError):
    """Authentication failed: ``str()`` is opaque, :attr:`reason` (for the log) says why."""

    def __init__(self, reason: str) -> None:
        super().__init__("authentication failed")
        self.reason = reason


def auth_failed(reason: str) -> AuthFailed:
    """The opaque error every authentication failure raises; ``reason`` is for the log."""
    return AuthFailed(reason)


def parse_token(text: str) -> str:
    """The token in ``text`` (surrounding whitespace and a ``Bearer`` prefix allowed);
    raises the opaque SecurityError for anything else."""
    if not isinstance(text, str) or len(text) > 200:
        raise auth_failed("malformed token")
    value = text.strip()
    if value.lower().startswith("bearer "):
        value = value[7:].strip()
    if not _TOKEN_RE.fullmatch(value):
        raise auth_failed("malformed token")
    return value


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Token:
    """A freshly minted token (the only time its value is known)."""

    value: str
    identity: SpiffeId
    expires_at: float
    uses: int


class TokenStore:
    """Mints and consumes join tokens kept (hashed) in ``store``."""

    def __init__(self, store: ConfigStore, clock: Clock, trust_domain: str) -> None:
        self.store = store
        self.clock = clock
        self.trust_domain = trust_domain

    def create(self, namespace: str, service_account: str, ttl: float = 3600.0, uses: int = 1) -> Token:
        """Mint a token granting ``spiffe://<td>/ns/<namespace>/sa/<service_account>``. Raises
        NovameshError for a bad namespace, service account, ttl or uses."""
        try:
            identity = SpiffeId(self.trust_domain, namespace, service_account)
        except BadInput as exc:
            raise NovameshError(f"{exc} (check --namespace / --service-account)") from exc
        if not 0 < ttl <= MAX_TTL:
            raise NovameshError(f"token ttl must be between 1s and {MAX_TTL:.0f}s, got {ttl}")
        if not 0 < uses <= MAX_USES:
            raise NovameshError(f"token uses must be between 1 and {MAX_USES}, got {uses}")
        value = "nmt_" + secrets.token_urlsafe(32)
        expires = self.clock.time() + ttl
        record = {"ns": namespace, "sa": service_account, "expires_at": expires, "uses": uses}
        self.store.put_secret(_PREFIX + _digest(value), json.dumps(record).encode())
        return Token(value, identity, expires, uses)

    def consume(self, text: str) -> SpiffeId:
        """Use the token once; the identity it grants. Opaque SecurityError when it is
        malformed, unknown, expired or used up."""
        token = parse_token(text)
        name = _PREFIX + _digest(token)
        raw = self.store.get_secret(name)
        if raw is None:
            raise auth_failed("unknown or used-up token")
        record = json.loads(raw)
        if self.clock.time() >= float(record["expires_at"]):
            self.store.put_secret(name, None)
            raise auth_failed(f"expired token for ns={record['ns']} sa={record['sa']}")
        uses = int(record["uses"]) - 1
        self.store.put_secret(name, None if uses <= 0 else json.dumps({**record, "uses": uses}).encode())
        return SpiffeId(self.trust_domain, record["ns"], record["sa"])
