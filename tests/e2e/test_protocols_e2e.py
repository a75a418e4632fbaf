"""End to end through real Envoy: gRPC and TCP services, tcp routes, the Sidecar resource and the
outbound traffic policy.

One mesh per module: a gRPC "greeter" (v1, v2), a TCP echo "tcpecho" (v1, v2), HTTP echo apps
"echo-a" and "echo-b", a plain client sidecar and a "scoped" client that a Sidecar limits to
echo-a. Apps are tiny Python programs started by `novamesh run`; they listen on HOST:PORT from
their environment like any mesh app.
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import httpx
import pytest

from novamesh.testing.echo import EchoServer
from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

GRPC_SERVER = """
import os
from concurrent import futures
import grpc

def hello(request, context):
    return ("greeter/" + os.environ["NOVAMESH_VERSION"] + ":").encode() + request

handler = grpc.method_handlers_generic_handler("demo.Greeter", {"Hello": grpc.unary_unary_rpc_method_handler(hello)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(os.environ["HOST"] + ":" + os.environ["PORT"])
server.start()
server.wait_for_termination()
"""

# The client an app would write: a plain channel to the service name. grpcio reaches it through
# `http_proxy` (set for every app by `novamesh run`) with HTTP CONNECT.
GRPC_CLIENT = """
import json, sys
import grpc

with grpc.insecure_channel("greeter:50051") as channel:
    hello = channel.unary_unary("/demo.Greeter/Hello")
    print(json.dumps([hello(b"hi", timeout=5).decode() for _ in range(int(sys.argv[1]))]))
"""

TCP_SERVER = ["-m", "novamesh.testing.tcpecho", "tcpecho/{version}:"]  # replies 'tcpecho/{version}:' + what it got

TCP_DR_AND_SPLIT = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcpecho}
spec:
  host: tcpecho
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcpecho}
spec:
  hosts: [tcpecho]
  tcp:
  - match: [{port: 3307}]
    route:
    - {destination: {host: tcpecho, subset: v1}, weight: 80}
    - {destination: {host: tcpecho, subset: v2}, weight: 20}
"""

SCOPED_SIDECAR = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: scoped}
spec:
  workloadSelector: {labels: {app: scoped}}
  egress:
  - hosts: ["./echo-a"]
  - port: {number: 3307}
    hosts: ["./*"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""

ALLOW_ANY_ROOT = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: istio-system}
spec:
  outboundTrafficPolicy: {mode: ALLOW_ANY}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mesh"), settings={"lease_ttl": 4, "heartbeat_interval": 1})
    try:
        m.start_control_plane()
        for v in ("v1", "v2"):
            m.run("greeter", version=v, ports=["50051/grpc"], command=[sys.executable, "-c", GRPC_SERVER])
            m.run("tcpecho", version=v, ports=["3307/tcp"], command=[sys.executable, *TCP_SERVER])
        m.echo("echo-a")
        m.echo("echo-b")
        m.client("client")
        m.client("scoped")
        yield m
    finally:
        m.close()


def _workload(mesh: LocalMesh, service: str) -> WorkloadProcess:
    return next(w for w in mesh.workloads if w.service == service)


@pytest.fixture(scope="module")
def client(mesh: LocalMesh) -> WorkloadProcess:
    return _workload(mesh, "client")


def _get(client: WorkloadProcess, url: str) -> httpx.Response:
    return httpx.get(url, proxy=client.proxy_url, timeout=5, trust_env=False)


def _grpc_calls(client: WorkloadProcess, n: int) -> list[str]:
    env = {"http_proxy": client.proxy_url, "PATH": "/usr/bin:/bin"}  # what `novamesh run` gives an app
    proc = subprocess.run([sys.executable, "-c", GRPC_CLIENT, str(n)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return list(json.loads(proc.stdout))


def test_grpc_plain_channel_through_the_mesh_balances_per_call(mesh: LocalMesh, client: WorkloadProcess) -> None:
    poll(lambda: _grpc_calls(client, 1), 30, "a gRPC call through the mesh")
    replies = _grpc_calls(client, 20)
    # One channel is one HTTP/2 connection; both versions answering proves each call is routed
    # on its own (L7), not the connection once (L4).
    # (If calls were pinned per connection, both versions in 20 calls would be impossible; if
    # they were balanced at random, missing one has probability 2 * 0.5**20 = 2e-6.)
    assert {r.split(":")[0] for r in replies} == {"greeter/v1", "greeter/v2"}, replies
    assert all(r.endswith(":hi") for r in replies)
    # The calls went CONNECT -> outbound_loop -> the outbound HTTP route -> greeter's cluster.
    stats = client.counters("upstream_rq_total|upstream_cx_total")
    assert stats["cluster.outbound_loop.upstream_cx_total"] >= 2  # one tunnel per client process
    assert stats["cluster.outbound|50051||greeter.default.svc.cluster.local.upstream_rq_total"] >= 21


def _tcp_exchange(address: str, port: int, payload: bytes = b"ping") -> str:
    with socket.create_connection((address, port), timeout=5) as sock:
        sock.sendall(payload)
        data = b""
        while not data.endswith(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.decode()


def test_tcp_service_local_port_and_weighted_tcp_route(mesh: LocalMesh, client: WorkloadProcess) -> None:
    # The app reaches tcpecho:3307 at its own address, port 3307.
    poll(lambda: _tcp_exchange(client.address, 3307).endswith(":ping"), 30, "TCP through the client's outbound listener")
    seen = Counter(_tcp_exchange(client.address, 3307).split(":")[0] for _ in range(40))
    assert set(seen) == {"tcpecho/v1", "tcpecho/v2"}, seen
    mesh.apply(TCP_DR_AND_SPLIT)

    def listeners() -> str:
        return httpx.get(f"{client.admin_url}/config_dump", params={"resource": "dynamic_listeners"}, timeout=5, trust_env=False).text

    def split_applied() -> bool:
        return "outbound|3307|v2|tcpecho.default.svc.cluster.local" in listeners()

    poll(split_applied, 20, "weighted tcp route in the client's listener")
    n = 300
    split = Counter(_tcp_exchange(client.address, 3307).split(":")[0] for _ in range(n))
    assert set(split) <= {"tcpecho/v1", "tcpecho/v2"}
    # Binomial(300, 0.2): mean 60, sd 6.9; 4.5 sd either side keeps a false failure below 1e-5.
    assert 60 - 31 <= split["tcpecho/v2"] <= 60 + 31, split
    # sourceNamespace: a route for another namespace's clients is skipped, ours applies.
    mesh.apply(TCP_DR_AND_SPLIT.split("---")[0] + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcpecho}
spec:
  hosts: [tcpecho]
  tcp:
  - match: [{port: 3307, sourceNamespace: other}]
    route: [{destination: {host: tcpecho, subset: v1}}]
  - match: [{sourceNamespace: default}]
    route: [{destination: {host: tcpecho, subset: v2}}]
""")
    poll(lambda: "outbound|3307|v1|tcpecho" not in listeners(), 20, "the weighted route replaced")
    assert Counter(_tcp_exchange(client.address, 3307).split(":")[0] for _ in range(20)) == Counter({"tcpecho/v2": 20})


def test_tcp_service_through_connect(mesh: LocalMesh, client: WorkloadProcess) -> None:
    """Every TCP service port is also reachable with CONNECT on the outbound HTTP proxy."""
    with socket.create_connection((client.address, 15001), timeout=5) as sock:
        sock.sendall(b"CONNECT tcpecho:3307 HTTP/1.1\r\nHost: tcpecho:3307\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200"), head
        sock.sendall(b"hello")
        data = b""
        while not data.endswith(b"hello"):
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
    assert data.decode().split(":")[0] in {"tcpecho/v1", "tcpecho/v2"}


def test_sidecar_egress_scoping(mesh: LocalMesh, client: WorkloadProcess) -> None:
    scoped = _workload(mesh, "scoped")
    poll(lambda: _get(scoped, "http://echo-b:9080/").status_code == 200, 20, "echo-b reachable before scoping")
    mesh.apply(SCOPED_SIDECAR)

    def clusters(w: WorkloadProcess) -> str:
        return httpx.get(f"{w.admin_url}/clusters", timeout=5, trust_env=False).text

    poll(lambda: "echo-b.default" not in clusters(scoped), 20, "echo-b out of the scoped proxy's CDS")
    text = clusters(scoped)
    assert "outbound|9080||echo-a.default.svc.cluster.local" in text
    assert "greeter" not in text
    # The port-3307 egress entry admits tcpecho on that port (and nothing else on other ports).
    assert "outbound|3307||tcpecho.default.svc.cluster.local" in text
    assert _tcp_exchange(scoped.address, 3307).endswith(":ping")
    resp = _get(scoped, "http://echo-b:9080/")
    assert resp.status_code == 404
    assert "REGISTRY_ONLY" in resp.text and "Sidecar default/scoped" in resp.text
    assert _get(scoped, "http://echo-a:9080/").json()["service"] == "echo-a"
    # Other proxies are unaffected.
    assert "outbound|9080||echo-b.default.svc.cluster.local" in clusters(client)
    assert _get(client, "http://echo-b:9080/").json()["service"] == "echo-b"


def test_registry_only_blocks_and_allow_any_passes_unknown_hosts(mesh: LocalMesh, client: WorkloadProcess) -> None:
    with EchoServer("127.0.0.1", 0, service="outside", version="x") as outside:
        url = f"http://localhost:{outside.port}/hello"
        resp = _get(client, url)
        assert resp.status_code == 404 and "route not found" in resp.text
        mesh.apply(ALLOW_ANY_ROOT)
        poll(lambda: _get(client, url).status_code == 200, 20, "ALLOW_ANY passes the unknown host")
        body = _get(client, url).json()
        assert body["service"] == "outside" and body["path"] == "/hello"
        # The scoped proxy's own Sidecar says REGISTRY_ONLY, which wins over the root default.
        scoped = _workload(mesh, "scoped")
        blocked = _get(scoped, url)
        assert blocked.status_code == 404 and "REGISTRY_ONLY" in blocked.text
        mesh.cli("delete", "sidecar", "default", "-n", "istio-system")
        poll(lambda: _get(client, url).status_code == 404, 20, "back to REGISTRY_ONLY after deleting the Sidecar")


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "tls.crt", tmp / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert_path, key_path


class TlsNameServer:
    """A TLS server on 127.0.0.1 that answers every connection with its name and the SNI it saw."""

    def __init__(self, name: str, cert: Path, key: Path) -> None:
        self.name = name
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.sni_callback = self._remember_sni
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @staticmethod
    def _remember_sni(tls: ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
        tls.seen_sni = server_name  # type: ignore[attr-defined]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            try:
                conn.settimeout(5)
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(f"{self.name}|{getattr(tls, 'seen_sni', None)}".encode())
            except OSError:
                conn.close()

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


def _tls_hello(address: str, port: int, sni: str) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a throwaway self-signed test certificate
    with socket.create_connection((address, port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=sni) as tls:
        return tls.recv(4096).decode()


def test_tls_services_share_a_port_by_sni_and_tls_routes(mesh: LocalMesh, client: WorkloadProcess, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    with TlsNameServer("a", cert, key) as a, TlsNameServer("b", cert, key) as b:
        mesh.apply(f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure-a}}
spec:
  hosts: [secure-a.example.com]
  resolution: STATIC
  ports: [{{number: 8443, name: tls, protocol: TLS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {a.port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: secure-b}}
spec:
  hosts: [secure-b.example.com]
  resolution: STATIC
  ports: [{{number: 8443, name: tls, protocol: TLS}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tls: {b.port}}}}}]
""")
        # One local port, two services: the SNI picks the service; TLS passes through untouched.
        poll(lambda: _tls_hello(client.address, 8443, "secure-a.example.com") == "a|secure-a.example.com", 20, "TLS by SNI to a")
        assert _tls_hello(client.address, 8443, "secure-b.example.com") == "b|secure-b.example.com"
        with pytest.raises((OSError, ssl.SSLError)):
            _tls_hello(client.address, 8443, "unknown.example.com")  # no filter chain: closed
        mesh.apply("""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure-a}
spec:
  hosts: [secure-a.example.com]
  tls:
  - match: [{port: 8443, sniHosts: [secure-a.example.com]}]
    route: [{destination: {host: secure-b.example.com}}]
""")
        poll(lambda: _tls_hello(client.address, 8443, "secure-a.example.com") == "b|secure-a.example.com", 20, "tls route to b")


FLAKY_GRPC_SERVER = """
import os, random
from concurrent import futures
import grpc

def hello(request, context):
    if random.random() < 0.3:  # a backend that is briefly unavailable 30% of the time
        context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
    return b"ok:" + request

handler = grpc.method_handlers_generic_handler("demo.Greeter", {"Hello": grpc.unary_unary_rpc_method_handler(hello)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(os.environ["HOST"] + ":" + os.environ["PORT"])
server.start()
server.wait_for_termination()
"""

FLAKY_GRPC_CLIENT = """
import json, sys
import grpc

codes = {}
with grpc.insecure_channel("flakygrpc:50061") as channel:
    hello = channel.unary_unary("/demo.Greeter/Hello")
    for _ in range(int(sys.argv[1])):
        try:
            hello(b"hi", timeout=5)
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
        codes[code] = codes.get(code, 0) + 1
print(json.dumps(codes))
"""


def _flaky_calls(client: WorkloadProcess, n: int) -> dict[str, int]:
    env = {"http_proxy": client.proxy_url, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", FLAKY_GRPC_CLIENT, str(n)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(json.loads(proc.stdout))


def test_grpc_retried_on_unavailable(mesh: LocalMesh, client: WorkloadProcess) -> None:
    mesh.run("flakygrpc", ports=["50061/grpc"], command=[sys.executable, "-c", FLAKY_GRPC_SERVER])
    vs = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: flakygrpc}}
spec:
  hosts: [flakygrpc]
  http:
  - route: [{{destination: {{host: flakygrpc}}}}]
    retries: {retries}
"""
    mesh.apply(vs.format(retries="{attempts: 0}"))
    def reachable() -> bool:
        codes = _flaky_calls(client, 10)
        return codes.get("OK", 0) + codes.get("UNAVAILABLE", 0) == 10

    poll(reachable, 30, "flakygrpc reachable (only OK or UNAVAILABLE answers)")
    # No retries: UNAVAILABLE reaches the client. Binomial(200, 0.3): mean 60, sd 6.5.
    plain = _flaky_calls(client, 200)
    assert 60 - 30 <= plain.get("UNAVAILABLE", 0) <= 60 + 30, plain
    mesh.apply(vs.format(retries="{attempts: 4, retryOn: unavailable}"))
    retry_stat = "cluster.outbound|50061||flakygrpc.default.svc.cluster.local.upstream_rq_retry"
    before = client.counters("upstream_rq_retry").get(retry_stat, 0)
    poll(lambda: _flaky_calls(client, 20).get("OK") == 20, 30, "retries on UNAVAILABLE in effect")
    # With 4 retries a call fails only if 5 attempts all fail: 0.3**5 = 0.24%; over 200 calls
    # the expected count is 0.5, so more than 3 failures (P < 0.2%) means retries are broken.
    retried = _flaky_calls(client, 200)
    assert retried.get("OK", 0) >= 197, retried
    assert client.counters("upstream_rq_retry").get(retry_stat, 0) > before
