"""Fuzz: CSR requests and tokens from hostile bytes never crash the service or pass."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from novamesh.errors import SecurityError
from novamesh.security import pki
from novamesh.security.ca import StoreCA
from novamesh.security.csr import CertificateService
from novamesh.security.tokens import TokenStore, parse_token
from novamesh.store.sqlite import SqliteStore
from novamesh.testing.clock import ManualClock

_PEM = st.sampled_from(["-----BEGIN CERTIFICATE REQUEST-----\n", "-----END CERTIFICATE REQUEST-----\n", "MIIB", "\n", "=="])
_CSRISH = st.lists(st.one_of(_PEM, st.text(max_size=40)), max_size=8).map("".join)
_BODIES = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda c, v: json.dumps({"csr": c, "validity_duration": v}).encode(), _CSRISH,
              st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=5), st.none())),  # fmt: skip
    st.builds(lambda c, p: json.dumps({"csr": c, "current_chain": c, "proof": p}).encode(), _CSRISH, st.text(max_size=20)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_BODIES, token=st.one_of(st.none(), st.text(max_size=80)))
def test_csr_service_refuses_malformed_requests_cleanly(store: SqliteStore, clock: ManualClock, body: bytes, token: str | None) -> None:
    service = CertificateService(StoreCA(store, clock), TokenStore(store, clock, "cluster.local"), clock,
                                 trust_domain="cluster.local", cert_ttl=3600)  # fmt: skip
    try:
        service.create(body, token)
    except (pki.BadInput, SecurityError):
        return
    raise AssertionError(f"accepted {body!r} with token {token!r}")


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=120))
def test_token_parsing_refuses_anything_malformed(text: str) -> None:
    try:
        value = parse_token(text)
    except SecurityError as exc:
        assert str(exc) == "authentication failed"
        return
    assert value.startswith("nmt_") and len(value) == 47
