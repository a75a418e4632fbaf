"""AuthorizationPolicy on TCP ports and at a gateway, through real Envoy.

One mesh per module: a TCP echo app ``db`` (port 3307, ``tcp``), two client sidecars with their
own service accounts (``payments`` and ``web``) that reach ``db`` through their local TCP
listener (``<client address>:3307``, mesh mTLS to ``db``), an echo ``frontend`` and an ingress
gateway (label ``istio=ingressgateway``) routing ``shop.example.com`` to it.

Each test applies its policies and waits until the Envoy concerned serves exactly them (policy
names and RBAC filter names in its active listeners). A refused TCP connection is closed before
any byte reaches the app: the ``db`` Envoy's inbound cluster has sent the app nothing.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Iterator

import httpx
import pytest

from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

TCP_PORT = 3307
TO_APP_BYTES = "cluster.inbound|3307||.upstream_cx_tx_bytes_total"
ALLOW_DENIED = "tcp.allow.rbac.denied"

TCP_SERVER = ["-m", "novamesh.testing.tcpecho", "db:"]  # replies 'db:' + what it got

SHOP = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [shop.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/edge]
  http:
  - route: [{destination: {host: frontend}}]
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mesh"), settings={"lease_ttl": 4, "heartbeat_interval": 1})
    try:
        m.start_control_plane()
        m.run("db", ports=[f"{TCP_PORT}/tcp"], command=[sys.executable, *TCP_SERVER])
        m.client("payments", extra_args=["--service-account", "payments"])
        m.client("web", extra_args=["--service-account", "web"])
        m.echo("frontend")
        m.gateway("istio-ingressgateway", "--label", "istio=ingressgateway")
        m.apply(SHOP)
        yield m
    finally:
        m.close()


def _live(w: WorkloadProcess) -> tuple[frozenset[str], frozenset[str]] | None:
    """(policy names, RBAC filter names) in the listeners Envoy serves with now; None while a
    listener is warming or draining (old connections keep the old filters until it drained)."""
    dump = httpx.get(f"{w.admin_url}/config_dump", params={"resource": "dynamic_listeners"}, timeout=5, trust_env=False).json()
    configs = dump.get("configs", [])
    if any("warming_state" in c or "draining_state" in c for c in configs) or w.counter("listener_manager.total_filter_chains_draining"):
        return None
    text = json.dumps([c["active_state"] for c in configs if "active_state" in c])
    filters = set(re.findall(r'"(envoy\.filters\.(?:network|http)\.rbac\.[a-z]+)"', text))
    return frozenset(re.findall(r"policy\[([a-z0-9.-]+)\]", text)), frozenset(filters)


def _apply(mesh: LocalMesh, yaml_text: str, on: WorkloadProcess, policies: set[str], filters: set[str]) -> None:
    mesh.apply(yaml_text)
    want = (frozenset(policies), frozenset(filters))
    poll(lambda: _live(on) == want, 20, f"policies {sorted(policies)} with filters {sorted(filters)} live on {on.service}")


@pytest.fixture(autouse=True)
def _no_policies(mesh: LocalMesh) -> Iterator[None]:
    """Every test starts with no AuthorizationPolicy, live on the db and the gateway."""
    for p in mesh.api.get("/api/v1/resources", kind="AuthorizationPolicy"):
        md = p["metadata"]
        mesh.api.request("DELETE", f"/api/v1/resources/AuthorizationPolicy/{md['namespace']}/{md['name']}")
    for service in ("db", "istio-ingressgateway"):
        w = mesh.workload(service)
        poll(lambda: _live(w) == (frozenset(), frozenset()), 20, f"no RBAC filter on {service}")
    yield


def _exchange(caller: WorkloadProcess, payload: bytes = b"ping") -> str | None:
    """Send ``payload`` to db through ``caller``'s local TCP listener: the reply, or None when
    the connection is closed without one."""
    try:
        with socket.create_connection((caller.address, TCP_PORT), timeout=5) as sock:
            sock.sendall(payload)
            data = b""
            while not data.endswith(payload):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data.decode() or None
    except (ConnectionResetError, BrokenPipeError):
        return None


def _reachable(mesh: LocalMesh) -> None:
    for name in ("payments", "web"):
        caller = mesh.workload(name)
        poll(lambda: _exchange(caller) == "db:ping", 30, f"{name} reaches db over TCP")


def test_tcp_allow_by_principal(mesh: LocalMesh) -> None:
    _reachable(mesh)
    db, payments, web = mesh.workload("db"), mesh.workload("payments"), mesh.workload("web")
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-clients}
spec:
  selector: {matchLabels: {app: db}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/payments]}}]
    to: [{operation: {ports: ["3307"]}}]
""", db, {"db-clients"}, {"envoy.filters.network.rbac.allow"})
    assert _exchange(payments, b"SELECT 1") == "db:SELECT 1"  # the listed caller exchanges bytes
    sent, denied = db.counter(TO_APP_BYTES), db.counter(ALLOW_DENIED)
    for _ in range(3):
        assert _exchange(web, b"DROP TABLE") is None  # the unlisted caller's connection is closed
    assert db.counter(ALLOW_DENIED) == denied + 3
    assert db.counter(TO_APP_BYTES) == sent  # none of its bytes reached the app
    assert _exchange(payments) == "db:ping"


def test_tcp_deny_by_port(mesh: LocalMesh) -> None:
    _reachable(mesh)
    db, payments = mesh.workload("db"), mesh.workload("payments")
    policy = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-db-port}
spec:
  selector: {matchLabels: {app: db}}
  action: DENY
  rules:
  - to: [{operation: {ports: ["PORT"]}}]
"""
    _apply(mesh, policy.replace("PORT", "3308"), db, {"no-db-port"}, {"envoy.filters.network.rbac.deny"})
    assert _exchange(payments) == "db:ping"  # another port: not denied
    _apply(mesh, policy.replace("PORT", "3307"), db, {"no-db-port"}, {"envoy.filters.network.rbac.deny"})
    poll(lambda: _exchange(payments) is None, 20, "port 3307 denied")  # same policy name: wait for the new port
    sent = db.counter(TO_APP_BYTES)
    assert _exchange(mesh.workload("web")) is None
    assert db.counter(TO_APP_BYTES) == sent


def test_http_only_fields_on_tcp(mesh: LocalMesh) -> None:
    """Istio: an ALLOW rule with an HTTP-only field is dropped (here the only one: every TCP
    connection is refused, though its port matches); in a DENY rule only the HTTP-only field is
    dropped (``methods: [GET]`` alone then denies every TCP connection)."""
    _reachable(mesh)
    db, payments = mesh.workload("db"), mesh.workload("payments")
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only}
spec:
  selector: {matchLabels: {app: db}}
  rules:
  - to: [{operation: {methods: [GET], ports: ["3307"]}}]
""", db, set(), {"envoy.filters.network.rbac.allow"})  # the TCP ALLOW filter has no policy left
    sent = db.counter(TO_APP_BYTES)
    assert _exchange(payments) is None
    assert db.counter(TO_APP_BYTES) == sent
    mesh.api.request("DELETE", "/api/v1/resources/AuthorizationPolicy/default/get-only")
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all}
spec:
  selector: {matchLabels: {app: db}}
  rules: [{}]
""", db, {"allow-all"}, {"envoy.filters.network.rbac.allow"})
    assert _exchange(payments) == "db:ping"
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-get}
spec:
  selector: {matchLabels: {app: db}}
  action: DENY
  rules:
  - to: [{operation: {methods: [GET]}}]
""", db, {"allow-all", "deny-get"}, {"envoy.filters.network.rbac.allow", "envoy.filters.network.rbac.deny"})
    assert _exchange(payments) is None
    assert _exchange(mesh.workload("web")) is None


def _edge(gw: WorkloadProcess, path: str, **headers: str) -> httpx.Response:
    return httpx.get(f"http://{gw.address}:8080{path}", headers={"host": "shop.example.com", **headers}, timeout=5, trust_env=False)


def _denied(r: httpx.Response) -> bool:
    return r.status_code == 403 and r.text == "RBAC: access denied"


def test_gateway_deny_by_path_and_allow_by_ip_blocks(mesh: LocalMesh) -> None:
    gw = mesh.workload("istio-ingressgateway")
    poll(lambda: _edge(gw, "/").status_code == 200, 30, "the gateway routes shop.example.com")
    gw_filters = {"envoy.filters.http.rbac.deny"}
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge-admin, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules:
  - to: [{operation: {paths: [/admin, /admin/*]}}]
""", gw, {"edge-admin"}, gw_filters)
    assert _denied(_edge(gw, "/admin/users"))
    assert _denied(_edge(gw, "//admin/users"))  # normalized (slashes merged) before the policy
    ok = _edge(gw, "/shop")
    assert ok.status_code == 200 and ok.json()["service"] == "frontend"
    # ALLOW by address: the gateway trusts no x-forwarded-for hop, so remoteIpBlocks is the peer
    # too and a forged header does not get a caller in
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge-partners, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  rules:
  - from: [{source: {ipBlocks: [10.0.0.0/8]}}, {source: {remoteIpBlocks: [203.0.113.0/24]}}]
""", gw, {"edge-admin", "edge-partners"}, gw_filters | {"envoy.filters.http.rbac.allow"})
    assert _denied(_edge(gw, "/shop"))
    assert _denied(_edge(gw, "/shop", **{"x-forwarded-for": "203.0.113.7"}))
    _apply(mesh, """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge-partners, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  rules:
  - from: [{source: {ipBlocks: [10.0.0.0/8, 127.0.0.0/8]}}]
""", gw, {"edge-admin", "edge-partners"}, gw_filters | {"envoy.filters.http.rbac.allow"})
    poll(lambda: _edge(gw, "/shop").status_code == 200, 20, "loopback callers allowed at the edge")
    assert _denied(_edge(gw, "/admin"))  # DENY still wins
    # a policy of another namespace never applies to the gateway in istio-system
    mesh.apply("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: not-for-edge, namespace: default}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
""")
    mesh.wait_synced()
    live = poll(lambda: _live(gw), 20, "no listener of the gateway warming or draining")
    assert live == (frozenset({"edge-admin", "edge-partners"}), frozenset(gw_filters | {"envoy.filters.http.rbac.allow"}))
    assert _edge(gw, "/shop").status_code == 200
