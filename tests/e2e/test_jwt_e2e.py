"""RequestAuthentication (JWT) through real Envoy, enforced by AuthorizationPolicy.

The test is its own identity provider: it makes an RSA key, serves the JWKS over HTTP on
loopback (Envoy fetches it through the ``jwks|<host>|<port>`` cluster) and signs RS256 tokens
with a tiny signer built on ``cryptography``. Istio's semantics: a missing token is let through
by RequestAuthentication and refused (403) by a policy requiring a request principal; a bad
signature, an expired token or a wrong audience is refused with 401; a valid token passes and
its claims (``groups``, nested ``realm.role``) decide ``when`` conditions.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

ISSUER = "https://issuer.test"
URL = "http://backend.default:9080"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    """A minimal RS256 JWT signer with its JWKS."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, str]:
        numbers = self.key.public_key().public_numbers()
        return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
                "n": _b64(numbers.n.to_bytes(256, "big")), "e": _b64(numbers.e.to_bytes(3, "big"))}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "sub": "alice", "aud": "backend", "iat": now, "exp": now + 600, **claims}
        head = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": self.kid}).encode())
        body = _b64(json.dumps(payload).encode())
        sig = self.key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{head}.{body}.{_b64(sig)}"


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer("k1")


@pytest.fixture(scope="module")
def jwks_url(signer: Signer) -> Iterator[str]:
    body = json.dumps({"keys": [signer.jwk()]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="jwks", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        thread.join(10)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, jwks_url: str) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mesh"), settings={"lease_ttl": 4, "heartbeat_interval": 1})
    try:
        m.start_control_plane()
        m.echo("backend")
        m.client("client")
        m.apply(f"""
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt}}
spec:
  selector: {{matchLabels: {{app: backend}}}}
  jwtRules:
  - issuer: {ISSUER}
    jwksUri: {jwks_url}
    audiences: [backend]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-jwt}}
spec:
  selector: {{matchLabels: {{app: backend}}}}
  rules:
  - from: [{{source: {{requestPrincipals: ["{ISSUER}/*"]}}}}]
    to: [{{operation: {{notPaths: [/admin*, /ops*]}}}}]
  - from: [{{source: {{requestPrincipals: ["{ISSUER}/alice"]}}}}]
    to: [{{operation: {{paths: [/admin*]}}}}]
    when: [{{key: "request.auth.claims[groups]", values: [admins]}}]
  - to: [{{operation: {{paths: [/ops*]}}}}]
    when: [{{key: "request.auth.claims[realm][role]", values: [ops]}}]
""")
        backend = next(w for w in m.workloads if w.service == "backend")
        poll(lambda: _settled(backend), 30, "jwt_authn and RBAC live on the backend")
        yield m
    finally:
        m.close()


def _settled(w: WorkloadProcess) -> bool:
    """The backend serves the JWT and RBAC filters and no connection keeps older filters."""
    dump = httpx.get(f"{w.admin_url}/config_dump", params={"resource": "dynamic_listeners"}, timeout=5, trust_env=False).json()
    configs = dump.get("configs", [])
    if any("warming_state" in c or "draining_state" in c for c in configs):
        return False
    stats = httpx.get(f"{w.admin_url}/stats", params={"filter": "^listener_manager.total_filter_chains_draining$"}, timeout=5, trust_env=False).text
    if not re.search(r": 0$", stats.strip()) and stats.strip():
        return False
    text = json.dumps(configs)
    return "envoy.filters.http.jwt_authn" in text and "policy[require-jwt]" in text


@pytest.fixture(scope="module")
def client(mesh: LocalMesh) -> WorkloadProcess:
    return next(w for w in mesh.workloads if w.service == "client")


def _get(client: WorkloadProcess, path: str = "/", token: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.get(f"{URL}{path}", headers=headers, proxy=client.proxy_url, timeout=10, trust_env=False)


def test_missing_token_is_refused_by_the_policy_with_403(client: WorkloadProcess) -> None:
    r = _get(client)
    assert r.status_code == 403 and r.text == "RBAC: access denied"


def test_valid_token_passes(client: WorkloadProcess, signer: Signer) -> None:
    r = _get(client, "/hello", signer.token())
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/hello"


@pytest.mark.parametrize("case", ["bad-signature", "expired", "wrong-audience", "garbage"])
def test_invalid_token_gets_401(client: WorkloadProcess, signer: Signer, case: str) -> None:
    if case == "bad-signature":
        token = Signer("k1").token()  # same kid, another key
    elif case == "expired":
        token = signer.token(exp=int(time.time()) - 120, iat=int(time.time()) - 720)
    elif case == "wrong-audience":
        token = signer.token(aud="someone-else")
    else:
        token = "not.a.jwt"
    r = _get(client, "/hello", token)
    assert r.status_code == 401, (case, r.status_code, r.text)


def test_claims_decide_when_conditions(client: WorkloadProcess, signer: Signer) -> None:
    assert _get(client, "/admin", signer.token(groups=["admins", "users"])).status_code == 200
    assert _get(client, "/admin", signer.token(groups=["users"])).status_code == 403
    assert _get(client, "/admin", signer.token(groups="admins")).status_code == 200  # a string claim too
    assert _get(client, "/admin", signer.token(sub="bob", groups=["admins"])).status_code == 403  # not alice
    assert _get(client, "/ops", signer.token(realm={"role": "ops"})).status_code == 200  # nested claim
    assert _get(client, "/ops", signer.token(realm={"role": "dev"})).status_code == 403
    assert _get(client, "/ops").status_code == 403  # no token, no claim
