"""Path normalization against policy bypasses, through real Envoy.

A corpus of raw requests (encoded slashes and backslashes, ``//``, ``/./``, ``/../``, ``%2E%2E``,
fragments (stripped before the policy evaluates the path), ``%00`` (400), mixed-case hosts, hosts with a port) is sent straight to the backend's
inbound listener, as an attacker would, under a DENY-by-paths policy and under the equivalent
ALLOW-by-notPaths policy. Nothing denied reaches the app (the backend Envoy's inbound cluster
counter does not move), and what reaches it is the normalized path the policy evaluated.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

INBOUND_RQ = "cluster.inbound|9080||.upstream_rq_total"

DENY = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: guard}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin, /admin/*]}}]
  - to: [{operation: {hosts: [admin.example.com]}}]
"""

ALLOW = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: guard}
spec:
  rules:
  - to: [{operation: {notPaths: [/admin, /admin/*], notHosts: [admin.example.com]}}]
"""

# (raw path, Host header, expected status, path the backend receives when allowed)
CORPUS: list[tuple[str, str, int, str]] = [
    ("/admin", "backend", 403, ""),
    ("/admin/users", "backend", 403, ""),
    ("/admin%2Fusers", "backend", 403, ""),
    ("/admin%2fusers", "backend", 403, ""),
    ("/admin%5Cusers", "backend", 403, ""),
    ("/admin%5cusers", "backend", 403, ""),
    ("//admin//users", "backend", 403, ""),
    ("/./admin/./users", "backend", 403, ""),
    ("/public/../admin/users", "backend", 403, ""),
    ("/public/%2E%2E/admin", "backend", 403, ""),
    ("/public/%2e%2e%2fadmin", "backend", 403, ""),
    # a fragment is stripped (Envoy runtime http_reject_path_with_fragment=false), then the
    # policy evaluates what is left: a denied path stays denied, an allowed one arrives bare
    ("/admin#fragment", "backend", 403, ""),
    ("/admin%2Fusers#x", "backend", 403, ""),
    ("/public#frag", "backend", 200, "/public"),
    ("/public?q=1#frag", "backend", 200, "/public?q=1"),
    ("/admin/users%00", "backend", 400, ""),
    ("/public%00", "backend", 400, ""),
    ("/public", "ADMIN.Example.COM", 403, ""),
    ("/public", "admin.example.com:9080", 403, ""),
    ("/public", "backend", 200, "/public"),
    ("/public#/../admin", "backend", 200, "/public"),
    ("//public//a", "backend", 200, "/public/a"),
    ("/x/./y/../public", "backend", 200, "/x/public"),
    ("/public%2Fa", "backend", 200, "/public/a"),
    ("/administrator", "backend", 200, "/administrator"),
]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mesh"), settings={"lease_ttl": 4, "heartbeat_interval": 1})
    try:
        m.start_control_plane()
        m.echo("backend")
        yield m
    finally:
        m.close()


def _raw(w: WorkloadProcess, path: str, host: str) -> tuple[int, bytes]:
    """Send exactly ``path`` (no client-side normalization) and return (status, body)."""
    with socket.create_connection((w.address, 9080), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("policy", [DENY, ALLOW], ids=["deny-by-paths", "allow-by-notPaths"])
def test_nothing_denied_reaches_the_backend(mesh: LocalMesh, policy: str) -> None:
    backend = mesh.workloads[0]
    mesh.apply(policy)
    action = "rbac.deny" if "DENY" in policy else "rbac.allow"
    poll(lambda: action in httpx.get(f"{backend.admin_url}/config_dump", params={"resource": "dynamic_listeners"},
                                      timeout=5, trust_env=False).text, 20, f"{action} live on the backend")
    failures = []
    for path, host, status, received in CORPUS:
        before = backend.counter(INBOUND_RQ)
        got, body = _raw(backend, path, host)
        reached = backend.counter(INBOUND_RQ) - before
        if got != status:
            failures.append(f"{path} (Host {host}): status {got}, expected {status}: {body[:120]!r}")
        elif status != 200 and reached:
            failures.append(f"{path} (Host {host}): {status} but the backend saw the request")
        elif status == 200 and json.loads(body)["path"] != received:
            failures.append(f"{path}: backend received {json.loads(body)['path']!r}, expected {received!r}")
    assert not failures, "\n".join(failures)


def test_envoy_runs_with_fragment_stripping(mesh: LocalMesh) -> None:
    """The running Envoy carries the bootstrap's override (the corpus above proves Envoy acts on it)."""
    runtime = httpx.get(f"{mesh.workloads[0].admin_url}/runtime", timeout=5, trust_env=False).json()
    entry = runtime["entries"]["envoy.reloadable_features.http_reject_path_with_fragment"]
    assert entry["final_value"] == "false"
