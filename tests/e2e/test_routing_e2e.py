"""End to end through real processes: control plane, agents, Envoy sidecars, echo apps.

One mesh per module: frontend v1, reviews v1/v2/v3, ratings v1 and a client sidecar. Requests
are sent through the client's sidecar (its outbound listener is an HTTP proxy), and the echo app
tells us which workload answered.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from novamesh.testing.load import Traffic, run_load
from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"""

SPLIT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason-to-v2
    match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
  - name: canary
    route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
"""

ALL_V3 = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mesh"), settings={"lease_ttl": 4, "heartbeat_interval": 1})
    try:
        m.start_control_plane()
        m.echo("frontend")
        for v in ("v1", "v2", "v3"):
            m.echo("reviews", version=v)
        m.echo("ratings")
        m.client("client")
        yield m
    finally:
        m.close()


@pytest.fixture(scope="module")
def client(mesh: LocalMesh) -> WorkloadProcess:
    return next(w for w in mesh.workloads if w.service == "client")


def _get(client: WorkloadProcess, url: str, **kw: object) -> httpx.Response:
    return httpx.get(url, proxy=client.proxy_url, timeout=5, trust_env=False, **kw)  # type: ignore[arg-type]


def _versions(client: WorkloadProcess, url: str, n: int, headers: dict[str, str] | None = None) -> Counter[str]:
    res = run_load(url, count=n, concurrency=4, proxy=client.proxy_url, headers=headers)
    assert res.failed == 0, res.statuses
    return res.versions


def test_default_route_round_robins_over_all_versions(mesh: LocalMesh, client: WorkloadProcess) -> None:
    poll(lambda: _get(client, "http://reviews:9080/").status_code == 200, 20, "reviews reachable")
    seen = _versions(client, "http://reviews:9080/", 60)
    assert set(seen) == {"reviews/v1", "reviews/v2", "reviews/v3"}
    body = _get(client, "http://frontend:9080/some/path?x=1").json()
    assert body["service"] == "frontend" and body["path"] == "/some/path?x=1"


def test_unknown_host_gets_clear_404(mesh: LocalMesh, client: WorkloadProcess) -> None:
    resp = _get(client, "http://no-such-service:9080/")
    assert resp.status_code == 404
    assert "route not found" in resp.text


def test_canary_split_and_header_route(mesh: LocalMesh, client: WorkloadProcess) -> None:
    mesh.apply(DR + "---\n" + SPLIT)
    poll(lambda: set(_versions(client, "http://reviews:9080/", 40)) <= {"reviews/v1", "reviews/v2"}, 20, "split applied")
    n = 600
    seen = _versions(client, "http://reviews:9080/", n)
    assert set(seen) <= {"reviews/v1", "reviews/v2"}
    # Binomial(600, 0.2): sd = 9.8; 4.5 sd either side keeps a false failure below 1e-5.
    assert 120 - 44 <= seen["reviews/v2"] <= 120 + 44, seen
    jason = _versions(client, "http://reviews:9080/", 50, headers={"end-user": "jason"})
    assert jason == Counter({"reviews/v2": 50})
    other = _versions(client, "http://reviews:9080/", 50, headers={"end-user": "maria"})
    assert "reviews/v3" not in other


def test_change_under_traffic_has_zero_failures(mesh: LocalMesh, client: WorkloadProcess) -> None:
    mesh.apply(DR + "---\n" + SPLIT)
    with Traffic("http://reviews:9080/", proxy=client.proxy_url, rate=50) as traffic:
        poll(lambda: traffic.count >= 50, 20, "traffic flowing")
        mesh.apply(DR + "---\n" + ALL_V3)
        poll(lambda: _get(client, "http://reviews:9080/").headers.get("x-echo-service") == "reviews/v3", 10, "change effective")
        start = traffic.count
        poll(lambda: traffic.count >= start + 50, 20, "more traffic after the change")
    assert traffic.failures() == []
    assert _versions(client, "http://reviews:9080/", 30) == Counter({"reviews/v3": 30})


def _all_v3(mesh: LocalMesh, client: WorkloadProcess) -> None:
    mesh.apply(DR + "---\n" + ALL_V3)
    poll(lambda: _versions(client, "http://reviews:9080/", 10) == Counter({"reviews/v3": 10}), 20, "all traffic on v3")


def test_rejected_apply_changes_nothing(mesh: LocalMesh, client: WorkloadProcess) -> None:
    _all_v3(mesh, client)
    before = mesh.api.get("/api/v1/resources")
    rev = mesh.api.get("/healthz")["revision"]
    bad = ALL_V3.replace("subset: v3", "subset: v9")  # a subset no DestinationRule defines
    proc = mesh.cli("apply", "-f", "-", input=bad)
    assert proc.returncode == 1
    assert "v9" in proc.stderr and "spec.http[0].route[0].destination.subset" in proc.stderr
    assert mesh.api.get("/api/v1/resources") == before
    assert mesh.api.get("/healthz")["revision"] == rev
    assert _versions(client, "http://reviews:9080/", 20) == Counter({"reviews/v3": 20})


# The NACK test lives in tests/e2e/test_guarded_apply_e2e.py: with guarded apply on (the
# default) that config is refused before it reaches Envoy, so it needs a mesh with the guard off.


def test_stopping_and_killing_workloads_removes_endpoints(mesh: LocalMesh, client: WorkloadProcess) -> None:
    mesh.apply(DR + "---\n" + ALL_V3)
    a = mesh.echo("cache", version="v1")
    b = mesh.echo("cache", version="v2")
    poll(lambda: set(_versions(client, "http://cache:9080/", 20)) == {"cache/v1", "cache/v2"}, 20, "both cache replicas serve")
    with Traffic("http://cache:9080/", proxy=client.proxy_url, rate=40) as traffic:
        poll(lambda: traffic.count >= 40, 20, "traffic flowing")
        assert a.stop(signal.SIGTERM) == 0
        start = traffic.count
        poll(lambda: traffic.count >= start + 40, 20, "traffic after the stop")
    assert traffic.failures() == [], traffic.failures()[:5]
    assert _versions(client, "http://cache:9080/", 20) == Counter({"cache/v2": 20})
    assert all(w["id"] != a.info["id"] for w in mesh.workloads_info())

    b.kill()  # SIGKILL: no deregistration; the lease (4s here) must expire
    poll(lambda: all(w["id"] != b.info["id"] for w in mesh.workloads_info()), 20, "lease expiry of the killed workload")
    # The service is still known (service_retention), so callers get 503 no healthy upstream,
    # not 404 no such host, once its last endpoint is gone.
    def no_endpoints() -> bool:
        r = _get(client, "http://cache:9080/")
        return r.status_code == 503 and "no healthy upstream" in r.text

    poll(no_endpoints, 20, "503 no healthy upstream for cache")


def test_control_plane_restart_keeps_traffic_and_resyncs(mesh: LocalMesh, client: WorkloadProcess) -> None:
    mesh.apply(DR + "---\n" + ALL_V3)
    with Traffic("http://reviews:9080/", proxy=client.proxy_url, rate=40) as traffic:
        poll(lambda: traffic.count >= 40, 20, "traffic flowing")
        mesh.stop_control_plane()
        down_at = traffic.count
        # Down longer than the 4 s lease: the restart must not expire every workload at once.
        poll(lambda: traffic.count >= down_at + 40 * 6, 40, "6 s of traffic while the control plane is down")
        mesh.start_control_plane()
        n_proxies = len([w for w in mesh.workloads if w.proc.poll() is None])
        poll(lambda: len(mesh.proxies()) >= n_proxies, 30, "every proxy reconnected")
        mesh.wait_synced()
        mesh.apply(DR + "---\n" + SPLIT.replace("subset: v2}\n      weight: 20", "subset: v2}\n      weight: 0").replace("weight: 80", "weight: 100"))
        poll(lambda: set(_versions(client, "http://reviews:9080/", 20)) == {"reviews/v1"}, 20, "change after restart effective")
    assert traffic.failures() == [], traffic.failures()[:5]


def test_service_entry_external_dns_and_static(mesh: LocalMesh, client: WorkloadProcess, tmp_path: Path) -> None:
    from novamesh.testing.echo import EchoServer

    with EchoServer("127.0.0.1", 0, service="external", version="dns") as dns_ep, EchoServer("127.0.0.1", 0, service="external", version="static") as static_ep:
        mesh.apply(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api-dns}}
spec:
  hosts: [api.partner.example]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: localhost, ports: {{http: {dns_ep.port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api-static}}
spec:
  hosts: [legacy.partner.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {static_ep.port}}}}}]
""")
        poll(lambda: _get(client, "http://api.partner.example/x").status_code == 200, 20, "DNS service entry")
        assert _get(client, "http://api.partner.example/x").json()["version"] == "dns"
        poll(lambda: _get(client, "http://legacy.partner.example:8080/").status_code == 200, 20, "STATIC service entry")
        assert _get(client, "http://legacy.partner.example:8080/").json()["version"] == "static"


MATCHES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - name: exact-and-method            # conditions in one block are ANDed
    match:
    - uri: {exact: /exact}
      method: {exact: POST}
    route: [{destination: {host: reviews, subset: v1}}]
  - name: prefix-or-query             # blocks are ORed
    match:
    - uri: {prefix: /api/}
    - queryParams: {variant: {exact: "2"}}
    route: [{destination: {host: reviews, subset: v2}}]
  - name: regex-ignore-case
    match:
    - uri: {regex: "/items/[0-9]+"}
      ignoreUriCase: true
    route: [{destination: {host: reviews, subset: v3}}]
  - name: without-header
    match:
    - uri: {prefix: /legacy}
      withoutHeaders: {x-new-client: {}}
    route: [{destination: {host: reviews, subset: v1}}]
  - name: header-regex-and-prefix
    match:
    - headers:
        x-team: {prefix: pay}
        x-build: {regex: "[0-9]+"}
    route: [{destination: {host: reviews, subset: v3}}]
"""


def test_match_conditions_through_envoy(mesh: LocalMesh, client: WorkloadProcess) -> None:
    mesh.apply(DR + "---\n" + MATCHES)

    def answer(path: str, method: str = "GET", headers: dict[str, str] | None = None) -> str:
        r = httpx.request(method, f"http://reviews:9080{path}", proxy=client.proxy_url, headers=headers, timeout=5, trust_env=False)
        return r.headers.get("x-echo-service", str(r.status_code))

    # Wait for something only the new config does (earlier tests left other routes behind).
    poll(lambda: answer("/exact", "GET") == "404" and answer("/ITEMS/42") == "reviews/v3", 20, "match config applied")
    assert answer("/exact", "POST") == "reviews/v1"
    assert answer("/exact", "GET") == "404"  # method condition ANDed with the uri
    assert answer("/api/things") == "reviews/v2"
    assert answer("/other?variant=2") == "reviews/v2"
    assert answer("/other?variant=3") == "404"
    assert answer("/ITEMS/42") == "reviews/v3"
    assert answer("/items/x") == "404"
    assert answer("/legacy/a") == "reviews/v1"
    assert answer("/legacy/a", headers={"x-new-client": "1"}) == "404"
    assert answer("/z", headers={"x-team": "payments", "x-build": "123"}) == "reviews/v3"
    assert answer("/z", headers={"x-team": "payments", "x-build": "abc"}) == "404"
