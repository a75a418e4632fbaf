"""Mesh-wide standards (MeshConfig) through real Envoy.

One small mesh: an echo service ``slow`` with no config of its own and a client sidecar. The
MeshConfig sets a short default timeout, a retry policy, a default connection pool and outlier
detection; the tests check that a service without config gets them (504 + the
``upstream_rq_timeout`` counter; the retries the backend counts; the cluster in the client
Envoy's ``/config_dump``), that the service's own VirtualService / DestinationRule override them,
and that the MeshConfig's ``outboundTrafficPolicy`` lets an unknown host through. Each change is waited for by polling the client
Envoy's config, never by sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from novamesh.testing.echo import EchoServer
from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

FQDN = "slow.default.svc.cluster.local"
CLUSTER = f"outbound|9080||{FQDN}"
URL = "http://slow:9080"

MESH_CONFIG = """
apiVersion: novamesh.io/v1alpha1
kind: MeshConfig
metadata: {name: default, namespace: istio-system}
spec:
  defaultHttpTimeout: 0.5s
  defaultHttpRetryPolicy: {attempts: 3, retryOn: "503"}
  defaultTrafficPolicy:
    connectionPool:
      http: {http1MaxPendingRequests: 77}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mesh"), settings={"lease_ttl": 4, "heartbeat_interval": 1})
    try:
        m.start_control_plane()
        m.echo("slow")
        m.client("client")
        m.apply(MESH_CONFIG, file="mesh.yaml")
        yield m
    finally:
        m.close()


@pytest.fixture(scope="module")
def client(mesh: LocalMesh) -> WorkloadProcess:
    return next(w for w in mesh.workloads if w.service == "client")


@pytest.fixture(scope="module")
def backend(mesh: LocalMesh) -> WorkloadProcess:
    return next(w for w in mesh.workloads if w.service == "slow")


def _echo(w: WorkloadProcess, method: str, path: str) -> dict[str, Any]:
    """A control request to the echo app, straight to its sidecar's inbound listener."""
    r = httpx.request(method, f"http://{w.address}:9080{path}", timeout=5, trust_env=False)
    r.raise_for_status()
    return dict(r.json())


def _retry_attempts(client: WorkloadProcess) -> int | None:
    """num_retries on the first route of slow's virtual host (None: not there yet)."""
    for rc in _dump(client, "dynamic_route_configs"):
        for vh in rc["route_config"].get("virtual_hosts", []):
            if vh["name"] == f"{FQDN}:9080":
                return int(vh["routes"][0].get("route", {}).get("retry_policy", {}).get("num_retries", 0))
    return None


def _dump(client: WorkloadProcess, resource: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{client.admin_url}/config_dump", params={"resource": resource}, timeout=5, trust_env=False)
    return list(r.json().get("configs", []))


def _cluster(client: WorkloadProcess) -> dict[str, Any]:
    for c in _dump(client, "dynamic_active_clusters"):
        if c["cluster"]["name"] == CLUSTER:
            return dict(c["cluster"])
    return {}


def _route_timeout(client: WorkloadProcess) -> float | None:
    """Seconds of the timeout on the first route of slow's virtual host (None: not there yet)."""
    for rc in _dump(client, "dynamic_route_configs"):
        for vh in rc["route_config"].get("virtual_hosts", []):
            if vh["name"] == f"{FQDN}:9080":
                timeout = vh["routes"][0].get("route", {}).get("timeout")
                return float(timeout.rstrip("s")) if timeout is not None else 0.0
    return None


def _send(client: WorkloadProcess, delay: float) -> httpx.Response:
    return httpx.get(f"{URL}/", headers={"x-echo-delay": str(delay)}, proxy=client.proxy_url, timeout=15, trust_env=False)


def test_mesh_default_timeout_applies_and_the_services_virtual_service_overrides_it(
    mesh: LocalMesh, client: WorkloadProcess
) -> None:
    poll(lambda: _route_timeout(client) == 0.5, 20, "mesh default timeout 0.5s on slow's default route")
    before = client.counter(f"cluster.{CLUSTER}.upstream_rq_timeout")
    r = _send(client, 2)
    assert r.status_code == 504 and "upstream request timeout" in r.text
    assert client.counter(f"cluster.{CLUSTER}.upstream_rq_timeout") == before + 1  # response flag UT
    assert _send(client, 0).status_code == 200  # a fast request is unaffected

    mesh.apply("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: slow}
spec:
  hosts: [slow]
  http:
  - route: [{destination: {host: slow}}]
    timeout: 10s
""")
    poll(lambda: _route_timeout(client) == 10.0, 20, "the VirtualService's 10s timeout live on the client")
    r = _send(client, 1)
    assert r.status_code == 200 and r.headers.get("x-echo-service", "").startswith("slow")
    assert client.counter(f"cluster.{CLUSTER}.upstream_rq_timeout") == before + 1  # no new timeout


def test_mesh_pool_and_outlier_defaults_reach_envoy_and_a_destination_rule_overrides_them(
    mesh: LocalMesh, client: WorkloadProcess
) -> None:
    poll(lambda: _cluster(client).get("outlier_detection", {}).get("consecutive_5xx") == 5, 20,
         "mesh default outlier detection on slow's cluster")
    cluster = _cluster(client)
    assert cluster["circuit_breakers"]["thresholds"][0]["max_pending_requests"] == 77
    assert cluster["outlier_detection"]["max_ejection_percent"] == 50
    assert cluster["outlier_detection"]["base_ejection_time"] == "30s"

    mesh.apply("""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: slow}
spec:
  host: slow
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 2, baseEjectionTime: 3s}
""")
    poll(lambda: _cluster(client).get("outlier_detection", {}).get("consecutive_5xx") == 2, 20,
         "the DestinationRule's outlier detection on slow's cluster")
    cluster = _cluster(client)
    # outlierDetection is replaced as a whole (no mesh maxEjectionPercent); the mesh pool stays
    assert cluster["outlier_detection"]["base_ejection_time"] == "3s"
    assert "max_ejection_percent" not in cluster["outlier_detection"]
    assert cluster["circuit_breakers"]["thresholds"][0]["max_pending_requests"] == 77


def test_get_mesh_config_shows_effective_values_and_their_sources(mesh: LocalMesh) -> None:
    done = mesh.cli("get", "mesh-config", "-o", "json")
    assert done.returncode == 0, done.stderr
    rows = {r["field"]: r for r in json.loads(done.stdout)["fields"]}
    assert rows["defaultHttpTimeout"]["value"] == "0.5s"
    assert rows["defaultHttpTimeout"]["source"] == "MeshConfig istio-system/default"
    assert rows["defaultHttpRetryPolicy.attempts"]["value"] == 3
    assert rows["defaultHttpRetryPolicy.perTryTimeout"]["source"].startswith("Istio default")
    assert rows["defaultTrafficPolicy.connectionPool.tcp.maxConnections"]["source"] == "Envoy default"
    table = mesh.cli("get", "meshconfig")
    assert table.returncode == 0 and "MeshConfig istio-system/default" in table.stdout
    assert "http1MaxPendingRequests" in table.stdout and "Envoy default" in table.stdout
    bad = mesh.cli("apply", "-f", "-", input=MESH_CONFIG.replace("0.5s", "-1s"))
    assert bad.returncode != 0 and "spec.defaultHttpTimeout" in bad.stderr
    after = json.loads(mesh.cli("get", "mesh-config", "-o", "json").stdout)
    assert {r["field"]: r for r in after["fields"]}["defaultHttpTimeout"]["value"] == "0.5s"  # nothing changed


def test_mesh_default_retry_policy_applies_to_routes_without_retries(
    mesh: LocalMesh, client: WorkloadProcess, backend: WorkloadProcess
) -> None:
    poll(lambda: _retry_attempts(client) == 3, 20, "mesh default retry policy (3 attempts) on slow's route")
    _echo(backend, "POST", "/_echo/stats/reset")
    r = httpx.get(f"{URL}/", headers={"x-echo-fail-fraction": "1"}, proxy=client.proxy_url, timeout=15, trust_env=False)
    assert r.status_code == 503
    assert _echo(backend, "GET", "/_echo/stats")["requests"] == 4  # 1 try + the mesh's 3 retries (Istio's: 2)
    _echo(backend, "POST", "/_echo/stats/reset")
    r = httpx.get(f"{URL}/", headers={"x-echo-fail-fraction": "1", "x-echo-fail-status": "500"}, proxy=client.proxy_url,
                  timeout=15, trust_env=False)
    assert r.status_code == 500 and _echo(backend, "GET", "/_echo/stats")["requests"] == 1  # 500 is not in retryOn


def test_mesh_outbound_traffic_policy_lets_unknown_hosts_through(mesh: LocalMesh, client: WorkloadProcess) -> None:
    with EchoServer("127.0.0.1", 0, service="outside", version="x") as outside:
        url = f"http://localhost:{outside.port}/hello"
        get = lambda: httpx.get(url, proxy=client.proxy_url, timeout=5, trust_env=False)  # noqa: E731
        blocked = get()
        assert blocked.status_code == 404 and "route not found" in blocked.text
        mesh.apply(MESH_CONFIG + "  outboundTrafficPolicy: {mode: ALLOW_ANY}\n", file="mesh.yaml")
        try:
            poll(lambda: get().status_code == 200, 20, "ALLOW_ANY from the MeshConfig passes the unknown host")
            assert get().json()["service"] == "outside"
        finally:
            mesh.apply(MESH_CONFIG, file="mesh.yaml")
        poll(lambda: get().status_code == 404, 20, "back to REGISTRY_ONLY without the MeshConfig's policy")
