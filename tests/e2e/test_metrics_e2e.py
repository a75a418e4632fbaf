"""Workload and control-plane metrics through real Envoy, scraped by a real Prometheus.

One mesh per module: ``client`` (a sidecar with no app) → ``front`` (echo, calls ``back``) →
``back`` (echo), a TCP echo ``tcpecho``, and an ingress gateway (``shop.example.com`` → back). A VirtualService aborts requests to ``front`` carrying ``x-fault: abort`` with
503 at the client's sidecar (response flag FI). Traffic is sent in two phases with the same
success ratio (4:1 ok:500), the first before Prometheus starts, so every series exists from
Prometheus' first scrape and Flagger's rate-ratio query is exactly that ratio.
"""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from novamesh.testing.mesh import LocalMesh, WorkloadProcess, free_port, poll

pytestmark = pytest.mark.e2e

FRONT = "front.default.svc.cluster.local"
BACK = "back.default.svc.cluster.local"

FAULT_VS = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front}
spec:
  hosts: [front]
  http:
  - match: [{headers: {x-fault: {exact: abort}}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
    route: [{destination: {host: front}}]
  - route: [{destination: {host: front}}]
"""

TCP_SERVER = ["-m", "novamesh.testing.tcpecho", "tcpecho:"]  # replies 'tcpecho:' + what it got

GATEWAY = "istio-ingressgateway"
GATEWAY_CONFIG = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
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
  gateways: [istio-system/ingress]
  http:
  - route: [{destination: {host: back}}]
"""

SUCCESS_RATE = (
    'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="default",'
    'destination_workload=~"front-v1",response_code!~"5.*"}[1m])) / '
    'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="default",'
    'destination_workload=~"front-v1"}[1m]))'
)
DURATION_P99 = (
    'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",'
    'destination_workload=~"front-v1"}[1m])) by (le))'
)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mesh"))
    try:
        m.start_control_plane()
        m.echo("back")
        m.run("front", ports=[9080], command=[sys.executable, "-m", "novamesh.testing.echo", "--call", "http://back:9080/"])
        m.run("tcpecho", ports=["3307/tcp"], command=[sys.executable, *TCP_SERVER])
        m.client("client")
        m.gateway(GATEWAY, "--label", "istio=ingressgateway")
        m.apply(FAULT_VS + "---" + GATEWAY_CONFIG)
        m.wait_synced()
        yield m
    finally:
        m.close()


def _send(mesh: LocalMesh, ok: int, failed: int, aborted: int, delay: float = 0.0) -> list[httpx.Response]:
    out = []
    with httpx.Client(proxy=mesh.workload("client").proxy_url, trust_env=False, timeout=10) as c:
        for _ in range(ok):
            out.append(c.get("http://front:9080/ok", headers={"x-echo-delay": str(delay)}))
        for _ in range(failed):
            out.append(c.get("http://front:9080/fail", headers={"x-echo-status": "500"}))
        for _ in range(aborted):
            out.append(c.get("http://front:9080/abort", headers={"x-fault": "abort"}))
    return out


def _scrape(w: WorkloadProcess) -> str:
    return httpx.get(f"http://{w.address}:15020/stats/prometheus", trust_env=False, timeout=5).text


def _requests(text: str, **labels: str) -> float:
    """Sum of istio_requests_total samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("istio_requests_total{"):
            continue
        body, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in body for k, v in labels.items()):
            total += float(value)
    return total


@pytest.fixture(scope="module")
def phase1(mesh: LocalMesh) -> list[httpx.Response]:
    """4 ok, 1 app 500, 1 fault abort; waits until every sidecar reported them."""
    responses = _send(mesh, 4, 1, 1)
    poll(lambda: _requests(_scrape(mesh.workload("back")), reporter="destination") == 5, 20, "back's metrics")
    poll(lambda: _requests(_scrape(mesh.workload("client")), reporter="source") == 6, 20, "client's metrics")
    poll(lambda: _requests(_scrape(mesh.workload("front")), reporter="destination") == 5, 20, "front's metrics")
    return responses


def test_statuses_seen_by_the_client(phase1: list[httpx.Response]) -> None:
    assert [r.status_code for r in phase1] == [200] * 4 + [500, 503]
    # The peer-identity headers never reach an app nor the caller.
    body = phase1[0].json()
    assert not [h for h in body["headers"] if h.startswith("x-novamesh")]
    assert not [h for h in body["calls"][0]["body"]["headers"] if h.startswith("x-novamesh")]
    assert not [h for h in phase1[0].headers if h.startswith("x-novamesh")]


def test_each_sidecar_reports_istio_labels(mesh: LocalMesh, phase1: list[httpx.Response]) -> None:
    client, front, back = (_scrape(mesh.workload(s)) for s in ("client", "front", "back"))
    src = {"reporter": "source", "source_workload": "client-v1", "source_app": "client", "source_workload_namespace": "default",
           "destination_service": FRONT, "destination_service_name": "front", "destination_service_namespace": "default"}
    assert _requests(client, **src, destination_workload="front-v1", destination_version="v1", response_code="200", response_flags="-") == 4
    assert _requests(client, **src, destination_workload="front-v1", response_code="500", response_flags="-") == 1
    # The fault abort never reached front: the client's sidecar answered 503 with flag FI.
    assert _requests(client, **src, destination_workload="unknown", response_code="503", response_flags="FI") == 1
    # Over mTLS the source reporter also knows both principals; the abort had no upstream connection.
    sa = "spiffe://cluster.local/ns/default/sa/default"
    assert _requests(client, **src, source_principal=sa, destination_principal=sa, response_flags="-") == 5
    assert _requests(client, **src, destination_principal="unknown", response_flags="FI") == 1
    dst = {"reporter": "destination", "source_workload": "client-v1", "destination_workload": "front-v1",
           "destination_app": "front", "destination_service": FRONT}
    # The policy follows the connection: mutual_tls exactly when the caller's certificate (principal) is known.
    for line in front.splitlines():
        if line.startswith("istio_requests_total{") and 'reporter="destination"' in line:
            assert ('connection_security_policy="mutual_tls"' in line) == ('source_principal="unknown"' not in line), line
    assert _requests(front, **dst, response_code="200") == 4
    assert _requests(front, **dst, response_code="500") == 1
    assert _requests(front, response_code="503") == 0
    # front's own calls: it is the source reporter towards back, back the destination reporter.
    hop = {"source_workload": "front-v1", "destination_workload": "back-v1", "destination_service": BACK, "response_code": "200"}
    assert _requests(front, reporter="source", **hop) == 5
    assert _requests(back, reporter="destination", **hop) == 5
    assert _requests(back, reporter="source") == 0
    for metric in ("istio_request_duration_milliseconds_bucket", "istio_request_bytes_bucket", "istio_response_bytes_bucket"):
        assert metric + "{" in front


def test_envoy_stats_stay_available(mesh: LocalMesh) -> None:
    text = httpx.get(f"http://{mesh.workload('front').address}:15020/stats/envoy", trust_env=False, timeout=5).text
    assert "envoy_cluster_upstream_rq" in text


def _tcp_exchange(address: str, payload: bytes = b"ping") -> bytes:
    with socket.create_connection((address, 3307), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while not data.endswith(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _sample(text: str, metric: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(metric + "{"))


def _envoy_tcp_connections(w: WorkloadProcess) -> int:
    """Connections tcpecho's Envoy proxied on its inbound TCP listener (Envoy's own counter)."""
    text = httpx.get(f"{w.admin_url}/stats", params={"filter": r"^tcp\.inbound\|3307\|\|\.downstream_cx_total$"},
                     trust_env=False, timeout=5).text
    return int(text.split(":")[1]) if ":" in text else 0


def test_tcp_metrics(mesh: LocalMesh) -> None:
    client, tcpecho = mesh.workload("client"), mesh.workload("tcpecho")
    poll(lambda: _tcp_exchange(client.address) == b"tcpecho:ping", 30, "TCP through the client's sidecar")
    closed = "istio_tcp_connections_closed_total"
    # Baseline: every connection Envoy proxied so far (the probes above) is in the metrics.
    def settled() -> str | None:
        text = _scrape(tcpecho)
        return text if _sample(text, closed) == _envoy_tcp_connections(tcpecho) else None

    before = poll(settled, 20, "the probe connections in tcpecho's metrics")
    for _ in range(3):
        assert _tcp_exchange(client.address) == b"tcpecho:ping"
    poll(lambda: _sample(_scrape(tcpecho), closed) == _sample(before, closed) + 3, 20, "tcpecho's TCP metrics")
    after = _scrape(tcpecho)
    assert _envoy_tcp_connections(tcpecho) == _sample(after, closed)
    assert _sample(after, "istio_tcp_connections_opened_total") == _sample(after, closed)
    # Bytes as the destination sidecar counts them: 4 in ("ping") and 12 out per connection.
    assert _sample(after, "istio_tcp_received_bytes_total") - _sample(before, "istio_tcp_received_bytes_total") == 12
    assert _sample(after, "istio_tcp_sent_bytes_total") - _sample(before, "istio_tcp_sent_bytes_total") == 36
    line = next(x for x in after.splitlines() if x.startswith(closed + "{"))
    for label in ('reporter="destination"', 'destination_workload="tcpecho-v1"', 'request_protocol="tcp"',
                  'destination_service="tcpecho.default.svc.cluster.local"'):
        assert label in line


def _tcp_series(text: str, metric: str, **labels: str) -> float:
    """Sum of ``metric`` samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            body, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in body for k, v in labels.items()):
                total += float(value)
    return total


def _scrape_when(w: WorkloadProcess, check: Callable[[str], bool], message: str) -> str:
    """Poll ``w``'s metrics until ``check`` holds for them; returns that scrape."""

    def ready() -> str | None:
        text = _scrape(w)
        return text if check(text) else None

    return str(poll(ready, 20, message))


def test_tcp_source_reporter_counts_opened_while_open(mesh: LocalMesh) -> None:
    client, tcpecho = mesh.workload("client"), mesh.workload("tcpecho")
    poll(lambda: _tcp_exchange(client.address) == b"tcpecho:ping", 30, "TCP through the client's sidecar")
    src = {"reporter": "source", "source_workload": "client-v1", "request_protocol": "tcp",
           "destination_service": "tcpecho.default.svc.cluster.local", "destination_service_name": "tcpecho",
           "destination_service_namespace": "default"}
    opened, closed = "istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total"

    def settled() -> str | None:  # every connection the client's Envoy proxied is reported, opened and closed
        proxied = httpx.get(f"{client.admin_url}/stats", params={"filter": r"^tcp\.outbound\|3307\|\|tcpecho\..*\.downstream_cx_total$"},
                            trust_env=False, timeout=5).text
        text = _scrape(client)
        n = _tcp_series(text, closed, **src)
        return text if ":" in proxied and n == int(proxied.split(":")[1]) and _tcp_series(text, opened, **src) == n else None

    before = poll(settled, 20, "earlier connections in the client's source metrics")
    with socket.create_connection((client.address, 3307), timeout=5) as sock:
        sock.sendall(b"ping")
        data = b""
        while not data.endswith(b"ping"):
            chunk = sock.recv(65536)
            assert chunk, "tcpecho closed the connection"
            data += chunk
        assert data == b"tcpecho:ping"
        # Still open: counted opened (by both reporters), not closed.
        during = _scrape_when(client, lambda t: _tcp_series(t, opened, **src) == _tcp_series(before, opened, **src) + 1,
                              "the open connection counted opened by the client's sidecar")
        assert _tcp_series(during, closed, **src) == _tcp_series(before, closed, **src)
        poll(lambda: _tcp_series(_scrape(tcpecho), opened, reporter="destination") > _tcp_series(_scrape(tcpecho), closed, reporter="destination"),
             20, "the open connection counted opened by tcpecho's sidecar")
    after = _scrape_when(client, lambda t: _tcp_series(t, closed, **src) == _tcp_series(before, closed, **src) + 1,
                         "the closed connection in the client's source metrics")
    assert _tcp_series(after, opened, **src) == _tcp_series(before, opened, **src) + 1  # not counted twice
    # Bytes as the client's sidecar counts them: 4 from the app ("ping"), 12 back to it.
    received = "istio_tcp_received_bytes_total"
    sent = "istio_tcp_sent_bytes_total"
    assert _tcp_series(after, received, **src) - _tcp_series(before, received, **src) == 4
    assert _tcp_series(after, sent, **src) - _tcp_series(before, sent, **src) == 12
    # The client's sidecar names the destination workload from the endpoint's EDS metadata (no
    # response header can carry it on TCP), and the principals from the mTLS connection.
    sa = "spiffe://cluster.local/ns/default/sa/default"
    named = {"destination_workload": "tcpecho-v1", "destination_workload_namespace": "default", "destination_app": "tcpecho",
             "destination_version": "v1", "destination_principal": sa, "source_principal": sa}
    for metric in (opened, closed, received, sent):
        assert _tcp_series(after, metric, **src) > 0, metric
        assert _tcp_series(after, metric, **src, **named) == _tcp_series(after, metric, **src), metric
        assert _tcp_series(after, metric, **src, destination_workload="unknown") == 0, metric


# -- ingress gateway --------------------------------------------------------------------------


def _via_gateway(mesh: LocalMesh, headers: dict[str, str] | None = None) -> httpx.Response:
    gw = mesh.workload(GATEWAY)
    return httpx.get(f"http://{gw.address}:8080/shop", headers={"host": "shop.example.com", **(headers or {})},
                     timeout=5, trust_env=False)


def test_gateway_reports_as_source_and_identity_cannot_be_forged(mesh: LocalMesh) -> None:
    gw, back = mesh.workload(GATEWAY), mesh.workload("back")
    poll(lambda: _via_gateway(mesh).status_code == 200, 30, "the gateway routes shop.example.com to back")
    from_gw = {"reporter": "destination", "source_workload": GATEWAY, "source_workload_namespace": "istio-system"}
    src = {"reporter": "source", "source_workload": GATEWAY, "source_workload_namespace": "istio-system",
           "destination_service": BACK, "destination_workload": "back-v1", "response_code": "200"}
    base_back = _scrape_when(back, lambda t: _requests(t, **from_gw) >= 1, "back's series from the gateway")
    base_gw = _scrape_when(gw, lambda t: _requests(t, **src) >= 1, "the gateway's source series")

    forged = {"x-novamesh-source": "evil-v1,evil,evil,v1"}
    responses = [_via_gateway(mesh, forged) for _ in range(3)]
    assert [r.status_code for r in responses] == [200] * 3
    for r in responses:
        assert "x-novamesh-peer" not in r.headers  # the serving workload stays hidden
        # The app behind saw the gateway's identity header? No: the back sidecar removed it.
        assert "x-novamesh-source" not in r.json()["headers"]
    poll(lambda: _requests(_scrape(back), **from_gw) == _requests(base_back, **from_gw) + 3, 20, "back counted the gateway as source")
    poll(lambda: _requests(_scrape(gw), **src) == _requests(base_gw, **src) + 3, 20, "the gateway reported as source")
    assert _requests(_scrape(back), source_workload="evil-v1") == 0
    assert _requests(_scrape(gw), source_workload="evil-v1") == 0


# -- Prometheus -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prometheus(mesh: LocalMesh, phase1: list[httpx.Response], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus is not installed (.ci/run installs it)")
    root = Path(tmp_path_factory.mktemp("prometheus"))
    gen = mesh.cli("prometheus-config", "--interval", "1s")
    assert gen.returncode == 0, gen.stderr
    (root / "prometheus.yml").write_text(gen.stdout)
    port = free_port()
    log = open(root / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: httpx.get(f"{url}/-/ready", timeout=1, trust_env=False).status_code == 200, 60,
             f"prometheus ready; log {root / 'prometheus.log'}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _query(url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"query": expr}
    if at is not None:
        params["time"] = at
    data = httpx.get(f"{url}/api/v1/query", params=params, timeout=5, trust_env=False).json()
    assert data["status"] == "success", data
    return list(data["data"]["result"])


def _scalar(url: str, expr: str, at: float | None = None) -> float | None:
    result = _query(url, expr, at)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_every_target(mesh: LocalMesh, prometheus: str) -> None:
    def all_up() -> bool:
        up = _query(prometheus, "up")
        return len(up) == 1 + len(mesh.workloads) and all(r["value"][1] == "1" for r in up)

    poll(all_up, 30, "Prometheus scraping the control plane, the four sidecars and the gateway")
    jobs = {r["metric"]["job"] for r in _query(prometheus, "up")}
    assert jobs == {"novamesh-control-plane", "novamesh-workloads"}


def test_flagger_and_dashboard_queries(mesh: LocalMesh, prometheus: str) -> None:
    # Every series of phase 1 is in Prometheus before phase 2 starts.
    poll(lambda: _scalar(prometheus, 'sum(istio_requests_total{reporter="destination",destination_workload="front-v1"})') == 5,
         30, "phase 1 in Prometheus")
    _send(mesh, 16, 4, 3, delay=0.3)  # same 4:1 ratio; the ok requests take at least 300 ms

    def phase2_seen() -> float | None:
        r = _query(prometheus, 'sum(istio_requests_total{reporter="destination",destination_workload="front-v1"})')
        return float(r[0]["value"][0]) if r and r[0]["value"][1] == "25" else None

    at = poll(phase2_seen, 30, "phase 2 in Prometheus")
    rate = _scalar(prometheus, SUCCESS_RATE, at)
    assert rate is not None and math.isclose(rate, 0.8, rel_tol=1e-9), rate
    p99 = _scalar(prometheus, DURATION_P99, at)
    assert p99 is not None and p99 > 250, p99  # the 300 ms requests dominate the window
    # Other sidecars' scrapes land at other times: wait for their totals, then check the labels.
    fi = 'sum(istio_requests_total{reporter="source",response_flags="FI"}) by (source_workload, destination_service, response_code)'
    poll(lambda: _scalar(prometheus, f"sum({fi})") == 4, 30, "the client's phase 2 in Prometheus")
    assert [(r["metric"], r["value"][1]) for r in _query(prometheus, fi)] == [
        ({"source_workload": "client-v1", "destination_service": FRONT, "response_code": "503"}, "4")
    ]
    # (The gateway test's requests to back are left out.)
    by_source = (f'sum(istio_requests_total{{reporter="destination",destination_service="{BACK}",'
                 f'source_workload!="{GATEWAY}"}}) by (source_workload)')
    poll(lambda: _scalar(prometheus, f"sum({by_source})") == 25, 30, "back's phase 2 in Prometheus")
    assert [(r["metric"]["source_workload"], r["value"][1]) for r in _query(prometheus, by_source)] == [("front-v1", "25")]
    assert _scalar(prometheus, "sum(pilot_xds)", at) == len(mesh.workloads)  # sidecars and the gateway


# -- control plane ----------------------------------------------------------------------------
def _cp_metrics(mesh: LocalMesh) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(f"{mesh.url}/metrics", timeout=5, trust_env=False).text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_control_plane_metrics_after_apply(mesh: LocalMesh) -> None:
    before = _cp_metrics(mesh)
    assert before["pilot_xds{version=\"\"}"] == len(mesh.workloads)  # sidecars and the gateway
    # The change is to a mesh VirtualService: every sidecar gets a push, the gateway none.
    sidecars = len([w for w in mesh.workloads if w.service != GATEWAY])
    mesh.apply(FAULT_VS.replace("x-fault", "x-fault2"))
    mesh.wait_synced()

    def converged() -> dict[str, float] | None:
        now = _cp_metrics(mesh)
        return now if now["pilot_proxy_convergence_time_count"] >= before["pilot_proxy_convergence_time_count"] + sidecars else None

    after = poll(converged, 20, "a convergence sample per proxy")
    assert after['pilot_xds_pushes{type="rds"}'] >= before['pilot_xds_pushes{type="rds"}'] + sidecars
    assert after["novamesh_config_revision"] == before["novamesh_config_revision"] + 1
    assert after['pilot_total_xds_rejects{type="lds"}'] == 0
    assert after["citadel_server_csr_count"] == 0  # defined; zero until the CA exists
