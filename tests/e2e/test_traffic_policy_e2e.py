"""DestinationRule trafficPolicy end to end: circuit breaking, outlier detection, consistent
hashing and load-balancer algorithms, through real Envoy sidecars and echo apps.

One mesh for the module: three replicas of ``backend`` (v1, v2, v3) and a client sidecar. Every
test applies the DestinationRule it needs; what Envoy did is read from the client sidecar's
admin API (stats, config_dump) and from the echo apps' own counters.
"""

from __future__ import annotations

import datetime
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from novamesh.testing.echo import EchoServer
from novamesh.testing.load import run_load
from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

HOST = "backend.default.svc.cluster.local"
URL = "http://backend:9080/"
CLUSTER = f"outbound|9080||{HOST}"
V1_CLUSTER = f"outbound|9080|v1|{HOST}"


def _dr(policy: str, subsets: str = "") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: backend}}
spec:
  host: backend
  trafficPolicy:
{policy}
{subsets}"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mesh"), settings={"lease_ttl": 4, "heartbeat_interval": 1})
    try:
        m.start_control_plane()
        for v in ("v1", "v2", "v3"):
            m.echo("backend", version=v)
        m.client("client")
        yield m
    finally:
        m.close()


@pytest.fixture(scope="module")
def client(mesh: LocalMesh) -> WorkloadProcess:
    c = next(w for w in mesh.workloads if w.service == "client")
    poll(lambda: set(run_load(URL, count=30, proxy=c.proxy_url).versions) == {"backend/v1", "backend/v2", "backend/v3"},
         30, "all backend replicas reachable")
    return c


def _app_url(mesh: LocalMesh, version: str) -> str:
    """The echo app of ``backend/<version>`` directly (not through the mesh): its HOST:PORT."""
    w = next(w for w in mesh.workloads_info() if w["service"] == "backend" and w["version"] == version)
    return f"http://{w['address']}:{w['ports'][0]['app_port']}"


def _echo(mesh: LocalMesh, version: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    r = httpx.request(method, _app_url(mesh, version) + path, json=body, timeout=5, trust_env=False)
    r.raise_for_status()
    return r.json()


def _admin(client: WorkloadProcess, path: str) -> str:
    return httpx.get(f"{client.admin_url}/{path}", timeout=5, trust_env=False).text


def _dump(client: WorkloadProcess, resource: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{client.admin_url}/config_dump", params={"resource": resource}, timeout=5, trust_env=False)
    return list(r.json().get("configs", []))


def _cluster(client: WorkloadProcess, name: str) -> dict[str, Any]:
    for c in _dump(client, "dynamic_active_clusters"):
        if c["cluster"]["name"] == name:
            return dict(c["cluster"])
    return {}


def _route_action(client: WorkloadProcess) -> dict[str, Any]:
    """The route action of the backend virtual host's first route in the client's route table."""
    for rc in _dump(client, "dynamic_route_configs"):
        for vh in rc["route_config"].get("virtual_hosts", []):
            if vh["name"] == f"{HOST}:9080":
                return dict(vh["routes"][0].get("route", {}))
    return {}


def _lb_is(client: WorkloadProcess, algorithm: str) -> Callable[[], bool]:
    return lambda: _cluster(client, CLUSTER).get("lb_policy") == algorithm


def test_lb_algorithms_reach_envoy(mesh: LocalMesh, client: WorkloadProcess) -> None:
    for algorithm in ("LEAST_REQUEST", "RANDOM"):
        mesh.apply(_dr(f"    loadBalancer: {{simple: {algorithm}}}"))
        poll(_lb_is(client, algorithm), 20, f"{algorithm} in the client's cluster")
        res = run_load(URL, count=60, proxy=client.proxy_url)
        assert res.failed == 0, res.summary()
        assert set(res.versions) == {"backend/v1", "backend/v2", "backend/v3"}, res.summary()


def test_every_setting_lands_in_envoy(mesh: LocalMesh, client: WorkloadProcess) -> None:
    """Envoy accepts (ACKs) and holds what each field maps to, subset override included."""
    mesh.apply(_dr("""\
    loadBalancer:
      consistentHash: {httpCookie: {name: sticky, path: /, ttl: 60s}, ringHash: {minimumRingSize: 256}}
    connectionPool:
      tcp: {maxConnections: 50, connectTimeout: 1500ms, tcpKeepalive: {probes: 4, time: 30s, interval: 5s}}
      http: {http1MaxPendingRequests: 40, http2MaxRequests: 60, maxRequestsPerConnection: 100, maxRetries: 5, idleTimeout: 20s}
    outlierDetection: {consecutive5xxErrors: 5, consecutiveGatewayErrors: 2, interval: 3s, baseEjectionTime: 4s,
                       maxEjectionPercent: 50, minHealthPercent: 10}""", """\
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 9080}
        connectionPool: {tcp: {maxConnections: 7}}"""))
    poll(lambda: _cluster(client, CLUSTER).get("lb_policy") == "RING_HASH", 20, "policy in Envoy")
    c = _cluster(client, CLUSTER)
    assert c["ring_hash_lb_config"]["minimum_ring_size"] == "256"
    assert c["connect_timeout"] == "1.500s"
    assert c["circuit_breakers"]["thresholds"][0] == {
        "max_connections": 50, "max_pending_requests": 40, "max_requests": 60, "max_retries": 5}
    assert c["upstream_connection_options"]["tcp_keepalive"] == {"keepalive_probes": 4, "keepalive_time": 30, "keepalive_interval": 5}
    opts = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert opts["common_http_protocol_options"] == {"idle_timeout": "20s", "max_requests_per_connection": 100}
    od = c["outlier_detection"]
    assert (od["consecutive_5xx"], od["consecutive_gateway_failure"], od["enforcing_consecutive_gateway_failure"]) == (5, 2, 100)
    assert (od["interval"], od["base_ejection_time"], od["max_ejection_percent"]) == ("3s", "4s", 50)
    assert c["common_lb_config"]["healthy_panic_threshold"] == {"value": 10}
    v1 = poll(lambda: _cluster(client, V1_CLUSTER), 20, "subset cluster")
    assert v1["lb_policy"] == "MAGLEV" and v1["maglev_lb_config"]["table_size"] == "65537"
    assert v1["circuit_breakers"] == c["circuit_breakers"]  # not overridden by the subset: inherited
    # A port-level entry replaces the level's settings: only its pool, Envoy defaults otherwise.
    v2 = poll(lambda: _cluster(client, f"outbound|9080|v2|{HOST}"), 20, "subset v2 cluster")
    assert v2["circuit_breakers"]["thresholds"] == [{"max_connections": 7}]
    assert "lb_policy" not in v2 and "outlier_detection" not in v2  # ROUND_ROBIN is the JSON default
    route = poll(lambda: _route_action(client).get("hash_policy"), 20, "hash policy on the default route")
    assert route == [{"cookie": {"name": "sticky", "path": "/", "ttl": "60s"}}]
    assert _cluster(client, CLUSTER)["name"] == CLUSTER


def test_consistent_hash_keeps_a_header_value_on_one_endpoint(mesh: LocalMesh, client: WorkloadProcess) -> None:
    mesh.apply(_dr("    loadBalancer: {consistentHash: {httpHeaderName: x-user}}"))
    poll(lambda: _route_action(client).get("hash_policy") == [{"header": {"header_name": "x-user"}}], 20, "hash policy")
    poll(lambda: _cluster(client, CLUSTER).get("lb_policy") == "RING_HASH", 20, "ring hash cluster")
    placement: dict[str, str] = {}
    for i in range(24):
        res = run_load(URL, count=8, concurrency=2, proxy=client.proxy_url, headers={"x-user": f"user-{i}"})
        assert res.failed == 0, res.summary()
        assert len(res.versions) == 1, f"user-{i} was spread: {res.summary()}"  # sticky
        placement[f"user-{i}"] = next(iter(res.versions))
    # 24 keys on 3 endpoints: all on one endpoint has probability ~3 * (1/3)^24 (about 1e-11) for an
    # even ring; Envoy's default ring (1024 entries for 3 hosts) is close enough to even.
    assert len(set(placement.values())) >= 2, placement
    again = run_load(URL, count=8, proxy=client.proxy_url, headers={"x-user": "user-0"})
    assert again.versions == Counter({placement["user-0"]: 8})


def test_consistent_hash_by_query_parameter_and_cookie(mesh: LocalMesh, client: WorkloadProcess) -> None:
    mesh.apply(_dr("    loadBalancer: {consistentHash: {httpQueryParameterName: user, minimumRingSize: 64}}"))
    poll(lambda: _route_action(client).get("hash_policy") == [{"query_parameter": {"name": "user"}}], 20, "query hash")
    poll(lambda: _cluster(client, CLUSTER).get("ring_hash_lb_config", {}).get("minimum_ring_size") == "64", 20, "ring")
    seen = set()
    for i in range(12):
        res = run_load(f"{URL}?user=u{i}", count=6, concurrency=2, proxy=client.proxy_url)
        assert res.failed == 0 and len(res.versions) == 1, res.summary()
        seen |= set(res.versions)
    assert len(seen) >= 2, seen  # 12 keys on 3 hosts all on one: ~3 * (1/3)^12, about 6e-6

    mesh.apply(_dr("    loadBalancer: {consistentHash: {httpCookie: {name: sticky, path: /, ttl: 0s}}}"))
    poll(lambda: _route_action(client).get("hash_policy", [{}])[0].get("cookie", {}).get("name") == "sticky", 20, "cookie")
    # No cookie yet: Envoy picks a host and sets a session cookie (ttl 0s) naming the hash.
    first = httpx.get(URL, proxy=client.proxy_url, timeout=5, trust_env=False)
    assert first.status_code == 200 and "sticky" in first.cookies, first.headers
    with httpx.Client(proxy=client.proxy_url, trust_env=False, timeout=5, cookies={"sticky": first.cookies["sticky"]}) as c:
        versions = Counter(c.get(URL).headers["x-echo-service"] for _ in range(12))
    assert versions == Counter({first.headers["x-echo-service"]: 12})


def test_outlier_detection_ejects_a_failing_endpoint_and_returns_it(mesh: LocalMesh, client: WorkloadProcess) -> None:
    mesh.apply(_dr("""\
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 50}"""))
    poll(lambda: "outlier_detection" in _cluster(client, CLUSTER), 20, "outlier detection in the client's cluster")
    active = f"cluster.{CLUSTER}.outlier_detection.ejections_active"
    enforced = f"cluster.{CLUSTER}.outlier_detection.ejections_enforced_total"
    # 500, not 503: a default retry policy may retry 503s on another host and hide them.
    _echo(mesh, "v1", "POST", "/_echo/config", {"fail_fraction": 1, "fail_status": 500})
    try:
        def ejected() -> bool:
            run_load(URL, count=12, concurrency=2, proxy=client.proxy_url)
            return client.counter(active) == 1

        poll(ejected, 30, "v1 ejected by the client's sidecar")

        def batch_while_ejected() -> Counter[str] | None:
            # A batch counts only if v1 stayed ejected through it, with no re-ejection in between
            # (which would need new failures): then every answer must come from v2 or v3.
            before = client.counter(enforced)
            if client.counter(active) != 1:
                run_load(URL, count=12, concurrency=2, proxy=client.proxy_url)  # let it be ejected again
                return None
            res = run_load(URL, count=20, concurrency=2, proxy=client.proxy_url)
            if client.counter(active) != 1 or client.counter(enforced) != before:
                return None
            assert res.failed == 0 and "backend/v1" not in res.versions, res.summary()
            return res.versions

        seen = poll(batch_while_ejected, 60, "a batch sent while v1 was ejected")
        assert set(seen) <= {"backend/v2", "backend/v3"} and sum(seen.values()) == 20
    finally:
        _echo(mesh, "v1", "POST", "/_echo/config", {"fail_fraction": 0, "fail_status": 503})
    # Healthy again: the host returns once its ejection time (2s x times ejected) is over.
    poll(lambda: client.counter(active) == 0, 60, "v1 returned after baseEjectionTime")
    poll(lambda: "backend/v1" in run_load(URL, count=15, proxy=client.proxy_url).versions, 20, "v1 serving again")


def test_circuit_breaker_rejects_overflow_with_503_uo(mesh: LocalMesh, client: WorkloadProcess) -> None:
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
  - route:
    - destination: {host: backend, subset: v1}
"""
    mesh.apply(_dr("""\
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1, http2MaxRequests: 1}""", """\
  subsets:
  - {name: v1, labels: {version: v1}}""") + "\n---" + vs)
    try:
        def limited() -> bool:
            thresholds = _cluster(client, V1_CLUSTER).get("circuit_breakers", {}).get("thresholds", [{}])[0]
            return bool(thresholds.get("max_connections") == 1 and _route_action(client).get("cluster") == V1_CLUSTER)

        poll(limited, 20, "circuit breaker on the v1 cluster and the route to it")
        _echo(mesh, "v1", "POST", "/_echo/stats/reset")
        overflow = f"cluster.{V1_CLUSTER}.upstream_rq_pending_overflow"
        before = client.counter(overflow)
        # 16 concurrent requests that each hold the connection for 0.5s: one is served, one may
        # wait as pending, the rest overflow at once.
        res = run_load(URL, count=16, concurrency=16, proxy=client.proxy_url, headers={"x-echo-delay": "0.5"},
                       timeout=30, max_bodies=0)
        assert res.statuses[200] >= 1, res.summary()
        assert res.statuses[503] >= 1, res.summary()
        assert res.statuses[200] + res.statuses[503] == 16, res.summary()
        assert client.counter(overflow) - before == res.statuses[503]
        # The backend never had more requests in flight than maxConnections allows.
        assert _echo(mesh, "v1", "GET", "/_echo/stats")["max_in_flight"] == 1
        # Once the burst is over, requests pass again.
        assert httpx.get(URL, proxy=client.proxy_url, timeout=5, trust_env=False).status_code == 200
        # The rejection is Envoy's own (flag UO: overflow, marked x-envoy-overloaded). One slow request holds the only connection (in flight at the app), a second waits as the
        # one pending request allowed; the third overflows at once.
        pending = f"cluster.{V1_CLUSTER}.upstream_rq_pending_active"
        with httpx.Client(proxy=client.proxy_url, trust_env=False, timeout=30) as one, httpx.Client(
            proxy=client.proxy_url, trust_env=False, timeout=30
        ) as two:
            slow = [threading.Thread(target=c.get, args=(URL,), kwargs={"headers": {"x-echo-delay": "2"}}) for c in (one, two)]
            slow[0].start()
            poll(lambda: _echo(mesh, "v1", "GET", "/_echo/stats")["in_flight"] == 1, 10, "the first slow request in flight")
            slow[1].start()
            poll(lambda: client.counter(pending) == 1, 10, "the second slow request pending")
            rejected = httpx.get(URL, proxy=client.proxy_url, timeout=5, trust_env=False)
            for t in slow:
                t.join()
        assert rejected.status_code == 503, rejected.text
        assert rejected.headers.get("x-envoy-overloaded") == "true"
        assert "overflow" in rejected.text
    finally:
        mesh.api.request("DELETE", "/api/v1/resources/VirtualService/default/backend")
        poll(lambda: _route_action(client).get("cluster") == CLUSTER, 20, "default route back")


# --- TLS origination to a service outside the mesh --------------------------------------------

SECURE_HOST = "api.secure.example"
SECURE_CLUSTER = f"outbound|80||{SECURE_HOST}"
SNI_SEEN: list[str] = []


def _pki(root: Path) -> dict[str, str]:
    """A CA, a server certificate for SECURE_HOST and a client certificate, as PEM files."""
    key_pem = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    now = datetime.datetime.now(datetime.UTC)

    def issue(cn: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, san: str | None) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        issuer_name, issuer_key = issuer or (name, key)
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256()), key

    ca, ca_key = issue("novamesh test CA", None, None)
    files: dict[str, str] = {}
    for label, cert, key in (
        ("ca", ca, ca_key),
        ("server", *issue(SECURE_HOST, (ca.subject, ca_key), SECURE_HOST)),
        ("client", *issue("client.example", (ca.subject, ca_key), "client.example")),
    ):
        (root / f"{label}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (root / f"{label}.key").write_bytes(key.private_bytes(*key_pem))
        files[label] = str(root / f"{label}.pem")
        files[f"{label}_key"] = str(root / f"{label}.key")
    return files


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _pki(tmp_path_factory.mktemp("pki"))


def _tls_server(pki: dict[str, str], require_client_cert: bool) -> EchoServer:
    server = EchoServer("127.0.0.1", 0, service="secure", version="mtls" if require_client_cert else "tls")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.sni_callback = lambda sock, name, _ctx: SNI_SEEN.append(name or "")
    ctx.load_cert_chain(pki["server"], pki["server_key"])
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki["ca"])
    server.server.socket = ctx.wrap_socket(server.server.socket, server_side=True)
    return server.start()


def _secure(mesh: LocalMesh, port: int, tls: str) -> None:
    mesh.apply(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure}}
spec:
  hosts: [{SECURE_HOST}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure}}
spec:
  host: {SECURE_HOST}
  trafficPolicy:
    tls: {tls}
""")


def _tls_context(client: WorkloadProcess) -> dict[str, Any]:
    socket = _cluster(client, SECURE_CLUSTER).get("transport_socket", {})
    return dict(socket.get("typed_config", {}))


def _secure_get(client: WorkloadProcess) -> httpx.Response:
    return httpx.get(f"http://{SECURE_HOST}/hello", proxy=client.proxy_url, timeout=5, trust_env=False)


def test_tls_simple_verifies_the_server(mesh: LocalMesh, client: WorkloadProcess, pki: dict[str, str]) -> None:
    server = _tls_server(pki, require_client_cert=False)
    stat = f"cluster.{SECURE_CLUSTER}.ssl"
    try:
        # CA and SAN match: the app talks plain HTTP to its sidecar, which speaks TLS upstream.
        _secure(mesh, server.port, f"{{mode: SIMPLE, caCertificates: {pki['ca']}, subjectAltNames: [{SECURE_HOST}]}}")
        poll(lambda: _secure_get(client).status_code == 200, 20, "TLS origination to the external server")
        body = _secure_get(client).json()
        assert body["version"] == "tls" and body["path"] == "/hello"
        assert SNI_SEEN[-1] == SECURE_HOST  # SNI defaults to the destination host
        assert client.counter(f"{stat}.handshake") >= 1

        # A SAN the server certificate does not have: the handshake is refused.
        _secure(mesh, server.port, f"{{mode: SIMPLE, caCertificates: {pki['ca']}, subjectAltNames: [other.example]}}")
        poll(lambda: "other.example" in str(_tls_context(client)), 20, "SAN change in Envoy")
        before = client.counter(f"{stat}.fail_verify_san")
        assert _secure_get(client).status_code == 503
        assert client.counter(f"{stat}.fail_verify_san") > before

        # No caCertificates: verified against the system bundle, which does not trust our CA.
        _secure(mesh, server.port, "{mode: SIMPLE}")
        poll(lambda: "ca-certificates.crt" in str(_tls_context(client)), 20, "system CA bundle in Envoy")
        before = client.counter(f"{stat}.fail_verify_error")
        assert _secure_get(client).status_code == 503
        assert client.counter(f"{stat}.fail_verify_error") > before

        # insecureSkipVerify: TLS without verification; an explicit sni is sent as written.
        _secure(mesh, server.port, "{mode: SIMPLE, insecureSkipVerify: true, sni: name.example}")
        poll(lambda: _tls_context(client) and "validation_context" not in _tls_context(client).get("common_tls_context", {}),
             20, "no validation in Envoy")
        assert _secure_get(client).status_code == 200
        assert SNI_SEEN[-1] == "name.example"
    finally:
        server.stop()


def test_tls_mutual_presents_the_client_certificate(mesh: LocalMesh, client: WorkloadProcess, pki: dict[str, str]) -> None:
    server = _tls_server(pki, require_client_cert=True)
    try:
        # SIMPLE first: the server demands a client certificate, so the handshake fails.
        _secure(mesh, server.port, f"{{mode: SIMPLE, caCertificates: {pki['ca']}}}")
        def simple_to_this_server() -> bool:
            common = _tls_context(client).get("common_tls_context", {})
            return (pki["ca"] in str(common) and "tls_certificates" not in common
                    and f"{SECURE_CLUSTER}::127.0.0.1:{server.port}::" in _admin(client, "clusters"))

        poll(simple_to_this_server, 20, "SIMPLE config and the mTLS server's endpoint in Envoy")
        assert _secure_get(client).status_code == 503
        _secure(mesh, server.port, f"{{mode: MUTUAL, caCertificates: {pki['ca']}, clientCertificate: {pki['client']}, "
                                   f"privateKey: {pki['client_key']}}}")
        poll(lambda: _secure_get(client).status_code == 200, 20, "MUTUAL accepted by the mTLS server")
        assert _secure_get(client).json()["version"] == "mtls"
    finally:
        server.stop()
        mesh.api.request("DELETE", "/api/v1/resources/DestinationRule/default/secure")
        mesh.api.request("DELETE", "/api/v1/resources/ServiceEntry/default/secure")
