"""VirtualService HTTP route policies through real Envoy: retries, timeouts, faults, mirroring,
rewrite, redirect, direct responses, header manipulation and CORS.

One mesh per module: a client sidecar and a ``flaky`` echo service with versions v1 and v2.
Every VirtualService applied here carries a ``/_config`` route answering its own tag, so a test
waits for exactly its config to be live before it sends anything. Counters come from the
echo app (``/_echo/stats``, read through the workload's inbound listener) and from the client
Envoy's admin ``/stats``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from novamesh.testing.load import run_load
from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

FQDN = "flaky.default.svc.cluster.local"
V1 = f"outbound|9080|v1|{FQDN}"
ANY = f"outbound|9080||{FQDN}"
URL = "http://flaky:9080"

DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: flaky}
spec:
  host: flaky
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mesh"), settings={"lease_ttl": 4, "heartbeat_interval": 1})
    try:
        m.start_control_plane()
        m.echo("flaky", version="v1")
        m.echo("flaky", version="v2")
        m.client("client")
        m.apply(DR)
        yield m
    finally:
        m.close()


@pytest.fixture(scope="module")
def client(mesh: LocalMesh) -> WorkloadProcess:
    return next(w for w in mesh.workloads if w.service == "client")


@pytest.fixture(scope="module")
def versions(mesh: LocalMesh) -> dict[str, WorkloadProcess]:
    return {w.version: w for w in mesh.workloads if w.service == "flaky"}


@pytest.fixture(autouse=True)
def _reset_echo(versions: dict[str, WorkloadProcess]) -> Iterator[None]:
    """Every test starts and ends with well-behaved backends and zeroed counters."""
    for w in versions.values():
        _echo(w, "POST", "/_echo/config", {"delay": 0, "fail_fraction": 0})
        _echo(w, "POST", "/_echo/stats/reset")
    yield
    for w in versions.values():
        _echo(w, "POST", "/_echo/config", {"delay": 0, "fail_fraction": 0})


def _echo(w: WorkloadProcess, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A control request to the echo app, straight to its sidecar's inbound listener."""
    r = httpx.request(method, f"http://{w.address}:9080{path}", json=body, timeout=5, trust_env=False)
    r.raise_for_status()
    return dict(r.json())


def _requests_seen(w: WorkloadProcess) -> int:
    return int(_echo(w, "GET", "/_echo/stats")["requests"])


def _send(client: WorkloadProcess, path: str, method: str = "GET", **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{URL}{path}", proxy=client.proxy_url, timeout=10, trust_env=False, **kw)


def _apply(mesh: LocalMesh, client: WorkloadProcess, tag: str, http: str) -> None:
    """Apply a VirtualService for flaky with the given ``http`` routes (YAML list items,
    indented by two spaces) and wait until the client's Envoy serves it."""
    mesh.apply(f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: flaky}}
spec:
  hosts: [flaky]
  http:
  - match: [{{uri: {{exact: /_config}}}}]
    directResponse: {{status: 200, body: {{string: {tag}}}}}
{http}""")
    poll(lambda: _send(client, "/_config").text == tag, 20, f"config {tag} live on the client")


# --- retries and timeouts ------------------------------------------------------------------


def test_retries_hide_a_backend_failing_30_percent(mesh: LocalMesh, client: WorkloadProcess) -> None:
    flaky = {"x-echo-fail-fraction": "0.3"}  # the header travels with every try: each fails alone
    _apply(mesh, client, "no-retries", """
  - route: [{destination: {host: flaky, subset: v1}}]
    retries: {attempts: 0}
""")
    base = run_load(f"{URL}/", count=200, concurrency=2, proxy=client.proxy_url, headers=flaky)
    # Without retries: Binomial(200, 0.3), mean 60, sd 6.5; 60 +- 30 is 4.6 sd either side.
    assert 30 <= base.failed <= 90, base.summary()

    _apply(mesh, client, "retries", """
  - route: [{destination: {host: flaky, subset: v1}}]
    retries: {attempts: 5, retryOn: 5xx}
""")
    retries_before = client.counter(f"cluster.{V1}.upstream_rq_retry")
    # A request fails only if all 6 tries fail: 0.3^6 = 0.00073, so over 300 requests the
    # failures are Binomial(300, 0.00073), mean 0.22; 3 failures (99% success) or fewer has
    # probability > 0.9999. Concurrency 2 stays under Envoy's default of 3 concurrent retries.
    res = run_load(f"{URL}/", count=300, concurrency=2, proxy=client.proxy_url, headers=flaky)
    assert res.total == 300 and res.failed <= 3, res.summary()
    # About 0.3 * 300 / 0.7 = 129 retries expected; at least one is certain.
    assert client.counter(f"cluster.{V1}.upstream_rq_retry") - retries_before >= 30


def test_attempts_are_capped(mesh: LocalMesh, client: WorkloadProcess, versions: dict[str, WorkloadProcess]) -> None:
    _apply(mesh, client, "capped", """
  - route: [{destination: {host: flaky, subset: v1}}]
    retries: {attempts: 3, retryOn: "503"}
""")
    _echo(versions["v1"], "POST", "/_echo/stats/reset")
    statuses = [_send(client, "/", headers={"x-echo-fail-fraction": "1"}).status_code for _ in range(10)]
    assert statuses == [503] * 10
    # Every client request is tried once and retried 3 times: exactly 4 requests each.
    assert _requests_seen(versions["v1"]) == 40


def test_default_retry_policy_retries_503_twice(mesh: LocalMesh, client: WorkloadProcess, versions: dict[str, WorkloadProcess]) -> None:
    """No ``retries`` on the route: Istio's default (2 retries, on 503 among others) applies."""
    _apply(mesh, client, "default-retries", """
  - route: [{destination: {host: flaky, subset: v1}}]
""")
    _echo(versions["v1"], "POST", "/_echo/stats/reset")
    assert _send(client, "/", headers={"x-echo-fail-fraction": "1"}).status_code == 503
    assert _requests_seen(versions["v1"]) == 3
    _echo(versions["v1"], "POST", "/_echo/stats/reset")
    assert _send(client, "/", headers={"x-echo-fail-fraction": "1", "x-echo-fail-status": "500"}).status_code == 500
    assert _requests_seen(versions["v1"]) == 1  # 500 is not in the default policy


def test_route_timeout_answers_504(mesh: LocalMesh, client: WorkloadProcess) -> None:
    _apply(mesh, client, "timeout", """
  - route: [{destination: {host: flaky, subset: v1}}]
    timeout: 0.5s
""")
    before = client.counter(f"cluster.{V1}.upstream_rq_timeout")
    r = _send(client, "/", headers={"x-echo-delay": "3"})
    assert r.status_code == 504 and "upstream request timeout" in r.text
    assert client.counter(f"cluster.{V1}.upstream_rq_timeout") == before + 1  # the UT response flag
    assert _send(client, "/").status_code == 200  # a fast request is unaffected


def test_per_try_timeout_retries_on_another_host(mesh: LocalMesh, client: WorkloadProcess, versions: dict[str, WorkloadProcess]) -> None:
    _apply(mesh, client, "per-try", """
  - route: [{destination: {host: flaky}}]
    timeout: 10s
    retries: {attempts: 2, perTryTimeout: 0.3s, retryOn: 5xx}
""")
    _echo(versions["v1"], "POST", "/_echo/config", {"delay": 3})  # v1 hangs, v2 is fast
    per_try_before = client.counter(f"cluster.{ANY}.upstream_rq_per_try_timeout")
    retry_before = client.counter(f"cluster.{ANY}.upstream_rq_retry")
    answers = [_send(client, "/") for _ in range(10)]
    assert [(r.status_code, r.headers.get("x-echo-service")) for r in answers] == [(200, "flaky/v2")] * 10
    # Round robin sends about half of the first tries to v1; each of those times out after
    # 0.3s and is retried on the other host (previous-hosts predicate), which answers.
    timed_out = client.counter(f"cluster.{ANY}.upstream_rq_per_try_timeout") - per_try_before
    assert timed_out >= 1
    assert client.counter(f"cluster.{ANY}.upstream_rq_retry") - retry_before == timed_out


def test_per_try_timeout_with_default_retry_on_is_accepted_with_a_warning_and_not_retried(
        mesh: LocalMesh, client: WorkloadProcess, versions: dict[str, WorkloadProcess], tmp_path: Path) -> None:
    """Istio's docs snippet (no retryOn) is accepted as Istio accepts it; the dry run shows the
    NM0004 warning, and Envoy behaves as it says: the timed-out try is not retried (504)."""
    http = """
  - route: [{destination: {host: flaky, subset: v1}}]
    timeout: 10s
    retries: {attempts: 3, perTryTimeout: 0.3s}
"""
    path = tmp_path / "vs.yaml"
    path.write_text(f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: flaky}}\n"
                    f"spec:\n  hosts: [flaky]\n  http:{http}")
    dry = mesh.cli("apply", "--dry-run", "-f", str(path))
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Warning [NM0004]" in dry.stdout and "gateway-error" in dry.stdout, dry.stdout
    _apply(mesh, client, "per-try-default", http)
    _echo(versions["v1"], "POST", "/_echo/config", {"delay": 3})
    per_try_before = client.counter(f"cluster.{V1}.upstream_rq_per_try_timeout")
    retry_before = client.counter(f"cluster.{V1}.upstream_rq_retry")
    r = _send(client, "/")
    assert r.status_code == 504 and "upstream request timeout" in r.text
    assert client.counter(f"cluster.{V1}.upstream_rq_per_try_timeout") == per_try_before + 1
    assert client.counter(f"cluster.{V1}.upstream_rq_retry") == retry_before  # never retried


# --- fault injection -------------------------------------------------------------------------


def test_fault_delay_and_abort_at_the_configured_percentage(mesh: LocalMesh, client: WorkloadProcess) -> None:
    _apply(mesh, client, "fault", """
  - route: [{destination: {host: flaky, subset: v1}}]
    fault:
      delay: {fixedDelay: 10ms, percentage: {value: 20}}
      abort: {httpStatus: 418, percentage: {value: 30}}
""")
    delays = client.counter("http.outbound_http.fault.delays_injected")
    aborts = client.counter("http.outbound_http.fault.aborts_injected")
    n = 300
    res = run_load(f"{URL}/", count=n, concurrency=4, proxy=client.proxy_url)
    assert set(res.statuses) <= {200, 418}, res.summary()
    # Aborts: Binomial(300, 0.3), mean 90, sd 7.9; delays: Binomial(300, 0.2), mean 60, sd 6.9.
    # Bands of 4.5 sd keep a false failure below 1e-5 each.
    assert 90 - 36 <= res.statuses[418] <= 90 + 36, res.summary()
    assert client.counter("http.outbound_http.fault.aborts_injected") - aborts == res.statuses[418]
    assert 60 - 31 <= client.counter("http.outbound_http.fault.delays_injected") - delays <= 60 + 31
    assert res.versions["flaky/v1"] == res.statuses[200]  # only the others reached the backend


# --- mirroring ----------------------------------------------------------------------------------


def test_mirror_gets_copies_and_client_sees_only_primary(mesh: LocalMesh, client: WorkloadProcess, versions: dict[str, WorkloadProcess]) -> None:
    _apply(mesh, client, "mirror", """
  - route: [{destination: {host: flaky, subset: v1}}]
    mirror: {host: flaky, subset: v2}
""")
    _echo(versions["v2"], "POST", "/_echo/config", {"fail_fraction": 1})  # the mirror's answers are dropped
    for w in versions.values():
        _echo(w, "POST", "/_echo/stats/reset")
    res = run_load(f"{URL}/", count=20, concurrency=2, proxy=client.proxy_url)
    assert res.statuses == {200: 20} and res.versions == {"flaky/v1": 20}, res.summary()
    assert _requests_seen(versions["v1"]) == 20
    # Copies are sent asynchronously: wait for all of them.
    poll(lambda: _requests_seen(versions["v2"]) == 20, 10, "20 mirrored requests on v2")


def test_mirrors_with_percentage(mesh: LocalMesh, client: WorkloadProcess, versions: dict[str, WorkloadProcess]) -> None:
    _apply(mesh, client, "mirrors", """
  - route: [{destination: {host: flaky, subset: v1}}]
    mirrors:
    - destination: {host: flaky, subset: v2}
      percentage: {value: 50}
""")
    v2_cluster = f"outbound|9080|v2|{FQDN}"
    sent_before = client.counter(f"cluster.{v2_cluster}.upstream_rq_total")
    for w in versions.values():
        _echo(w, "POST", "/_echo/stats/reset")
    res = run_load(f"{URL}/", count=200, concurrency=2, proxy=client.proxy_url)
    assert res.versions == {"flaky/v1": 200}, res.summary()
    # Every copy the client's Envoy sent must arrive; then count them.
    poll(lambda: _requests_seen(versions["v2"]) == client.counter(f"cluster.{v2_cluster}.upstream_rq_total") - sent_before,
         10, "mirrored copies delivered")
    # Binomial(200, 0.5): mean 100, sd 7.1; 100 +- 32 is 4.5 sd either side.
    assert 100 - 32 <= _requests_seen(versions["v2"]) <= 100 + 32


# --- rewrite, redirect, direct response, headers, CORS -----------------------------------------

EDGE = """
  - match: [{uri: {prefix: /api}}]
    rewrite: {uri: /, authority: rewritten.example}
    route: [{destination: {host: flaky, subset: v1}}]
  - match: [{uri: {prefix: /v9/}}]
    rewrite: {uriRegexRewrite: {match: "^/v9/([a-z]+)/(.*)$", rewrite: "/\\\\2/\\\\1"}}
    route: [{destination: {host: flaky, subset: v1}}]
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: new.example, redirectCode: 302}
  - match: [{uri: {prefix: /maintenance}}]
    directResponse: {status: 503, body: {string: "down for maintenance"}}
    headers: {response: {set: {retry-after: "60"}}}
  - match: [{uri: {prefix: /hdr}}]
    headers:
      request: {set: {x-env: prod, host: hdr.example}, add: {x-extra: one}, remove: [x-debug]}
      response: {add: {x-served-by: mesh}, remove: [x-echo-service]}
    route:
    - destination: {host: flaky, subset: v2}
      headers: {request: {set: {x-dest: v2}}}
  - match: [{uri: {exact: /bytes}}]
    directResponse: {status: 200, body: {bytes: aGVsbG8gYnl0ZXM=}}
  - match: [{uri: {prefix: /secure}}]
    redirect: {scheme: https, port: 8443}
  - match: [{uri: {prefix: /derive}}]
    redirect: {authority: new.example, derivePort: FROM_REQUEST_PORT, redirectCode: 307}
  - match: [{uri: {prefix: /split}}]
    route:
    - destination: {host: flaky, subset: v1}
      weight: 50
      headers: {request: {set: {x-dest: v1}}, response: {set: {x-picked: v1}}}
    - destination: {host: flaky, subset: v2}
      weight: 50
      headers: {request: {set: {x-dest: v2}}, response: {set: {x-picked: v2}}}
  - match: [{uri: {prefix: /grpc}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: flaky, subset: v1}}]
  - match: [{uri: {prefix: /cors}}]
    corsPolicy:
      allowOrigins: [{exact: "https://app.example.com"}, {regex: "https://.*\\\\.partner\\\\.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-token]
      exposeHeaders: [x-echo-service]
      allowCredentials: true
      maxAge: 10m
    route: [{destination: {host: flaky, subset: v1}}]
"""


@pytest.fixture()
def edge(mesh: LocalMesh, client: WorkloadProcess) -> WorkloadProcess:
    _apply(mesh, client, "edge", EDGE)
    return client


def test_rewrite_uri_and_authority(edge: WorkloadProcess) -> None:
    body = _send(edge, "/api/items?x=1").json()
    assert body["path"] == "/items?x=1"  # not //items: the prefix's slash is swallowed
    assert body["host"] == "rewritten.example"
    assert _send(edge, "/v9/books/42").json()["path"] == "/42/books"


def test_redirect(edge: WorkloadProcess) -> None:
    r = _send(edge, "/old/page")
    assert r.status_code == 302
    assert r.headers["location"] == "http://new.example/new"


def test_redirect_scheme_and_port(edge: WorkloadProcess) -> None:
    r = _send(edge, "/secure/x?q=1")
    assert r.status_code == 301 and r.headers["location"] == "https://flaky:8443/secure/x?q=1"
    r = _send(edge, "/derive")
    assert r.status_code == 307 and r.headers["location"] == "http://new.example:9080/derive"


def test_direct_response(edge: WorkloadProcess, versions: dict[str, WorkloadProcess]) -> None:
    r = _send(edge, "/maintenance")
    assert (r.status_code, r.text, r.headers["retry-after"]) == (503, "down for maintenance", "60")
    assert _send(edge, "/bytes").content == b"hello bytes"
    assert _requests_seen(versions["v1"]) == 0 and _requests_seen(versions["v2"]) == 0


def test_header_manipulation(edge: WorkloadProcess) -> None:
    r = _send(edge, "/hdr", headers={"x-debug": "1", "x-env": "dev", "x-extra": "zero"})
    seen = r.json()["headers"]
    assert seen["x-env"] == "prod" and seen["x-dest"] == "v2" and "x-debug" not in seen
    assert seen["host"] == "hdr.example"  # `set: {host: ...}` rewrites the authority
    assert seen["x-extra"] == "zero,one" or seen["x-extra"] == "zero, one"
    assert r.headers["x-served-by"] == "mesh" and "x-echo-service" not in r.headers
    assert r.json()["service"] == "flaky"


def test_destination_headers_follow_the_chosen_destination(edge: WorkloadProcess) -> None:
    answers = [_send(edge, "/split") for _ in range(20)]
    pairs = {(r.json()["version"], r.json()["headers"]["x-dest"], r.headers["x-picked"]) for r in answers}
    assert pairs <= {("v1", "v1", "v1"), ("v2", "v2", "v2")}, pairs
    assert len(pairs) == 2  # 50/50 over 20 requests: one-sided with probability 2 * 0.5^20


def test_fault_abort_with_grpc_status(edge: WorkloadProcess, versions: dict[str, WorkloadProcess]) -> None:
    r = _send(edge, "/grpc", "POST", headers={"content-type": "application/grpc", "te": "trailers"}, content=b"")
    assert r.status_code == 200 and r.headers["grpc-status"] == "14"  # UNAVAILABLE, trailers-only
    assert _requests_seen(versions["v1"]) == 0


def test_cors_preflight(edge: WorkloadProcess) -> None:
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "x-token"}
    ok = _send(edge, "/cors", "OPTIONS", headers={"origin": "https://app.example.com", **preflight})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
    assert ok.headers["access-control-allow-methods"] == "GET,POST"
    assert ok.headers["access-control-max-age"] == "600"
    assert ok.headers["access-control-allow-headers"] == "x-token"
    assert ok.headers["access-control-allow-credentials"] == "true"
    assert "x-echo-service" not in ok.headers  # answered by Envoy, not the backend
    partner = _send(edge, "/cors", "OPTIONS", headers={"origin": "https://shop.partner.example", **preflight})
    assert partner.headers["access-control-allow-origin"] == "https://shop.partner.example"
    evil = _send(edge, "/cors", "OPTIONS", headers={"origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in evil.headers
    simple = _send(edge, "/cors", headers={"origin": "https://app.example.com"})
    assert simple.status_code == 200 and simple.headers["access-control-allow-origin"] == "https://app.example.com"
    assert simple.headers["access-control-expose-headers"] == "x-echo-service"
