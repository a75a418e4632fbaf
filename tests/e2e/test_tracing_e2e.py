"""Distributed tracing through real Envoy: an OTLP/gRPC receiver inside the test collects the
spans of client → front → back (front is the echo app calling back with ``--call`` and
propagating the trace headers) and checks the parent/child chain, the custom tags and that the
Telemetry API's ``randomSamplingPercentage`` decides how many requests are traced.

Absence is proved with a marker, never with a sleep: after the requests that must not be traced,
sampling goes to 100% and one marker request is sent; once the marker's spans have arrived,
every span the earlier requests could have produced (same Envoys, exported in order) has too.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from novamesh.testing.mesh import LocalMesh, WorkloadProcess, free_port, poll

pytestmark = pytest.mark.e2e

CLIENT_KIND, SERVER_KIND = 3, 2  # opentelemetry.proto.trace.v1.Span.SpanKind


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    service: str
    kind: int
    tags: tuple[tuple[str, str], ...]

    def tag(self, name: str) -> str | None:
        return dict(self.tags).get(name)


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector (grpc.aio, on its own event loop in a thread it owns)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="otlp-receiver", daemon=True)

    async def Export(  # noqa: N802 - the gRPC method name
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        got = []
        for rs in request.resource_spans:
            service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), "")
            # xds-protos ships an older copy of the OTLP protos in the same `opentelemetry`
            # package; whichever wheel pip unpacks last wins. Field 2 of ResourceSpans is the
            # same on the wire in both: `scope_spans` (new) or `instrumentation_library_spans`.
            scopes = rs.scope_spans if hasattr(rs, "scope_spans") else rs.instrumentation_library_spans
            for ss in scopes:
                for s in ss.spans:
                    tags = tuple(sorted((a.key, a.value.string_value) for a in s.attributes))
                    got.append(Span(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), service, s.kind, tags))
        with self._lock:
            self.spans += got
        return trace_service_pb2.ExportTraceServiceResponse()

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, server)
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._stop = asyncio.Event()
        self._started.set()
        await self._stop.wait()
        await server.stop(grace=1)

    def start(self) -> None:
        self._thread.start()
        assert self._started.wait(10), "OTLP receiver did not start"

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def snapshot(self) -> list[Span]:
        with self._lock:
            return list(self.spans)

    def trace_of(self, user: str) -> list[Span]:
        """Every span of the trace whose client span carries ``x-user: user``."""
        spans = self.snapshot()
        roots = {s.trace_id for s in spans if s.tag("user") == user}
        return [s for s in spans if s.trace_id in roots]


def _telemetry(sampling: float) -> str:
    return f"""
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec:
  tracing:
  - providers: [{{name: otel}}]
    randomSamplingPercentage: {sampling}
    customTags:
      user: {{header: {{name: x-user, defaultValue: none}}}}
      team: {{literal: {{value: tracing-e2e}}}}
"""


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("mesh"), settings={
        "lease_ttl": 4, "heartbeat_interval": 1, "tracing_otlp_address": f"127.0.0.1:{receiver.port}",
    })
    try:
        m.start_control_plane()
        m.echo("back")
        m.run("front", ports=[9080], command=[sys.executable, "-m", "novamesh.testing.echo", "--call", "http://back:9080/leaf"])
        m.client("client")
        for w in m.workloads:  # export every span at once instead of batching for 5 s
            httpx.post(f"{w.admin_url}/runtime_modify?tracing.opentelemetry.min_flush_spans=1", timeout=5, trust_env=False)
        yield m
    finally:
        m.close()


@pytest.fixture(scope="module")
def client(mesh: LocalMesh) -> WorkloadProcess:
    return next(w for w in mesh.workloads if w.service == "client")


def _samplings(w: WorkloadProcess) -> set[float]:
    """The ``random_sampling`` values of the tracing config on ``w``'s listeners, from its Envoy."""
    dump = httpx.get(f"{w.admin_url}/config_dump?resource=dynamic_listeners", timeout=5, trust_env=False).json()
    found: set[float] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("tracing"), dict):
                # Protobuf JSON leaves zeros out: {} is 0%; no random_sampling at all is 100%.
                found.add(float(node["tracing"].get("random_sampling", {"value": 100}).get("value", 0)))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dump)
    return found


def _wait_live(mesh: LocalMesh, expected: dict[str, float]) -> None:
    """Until every workload's Envoy runs with the sampling ``expected`` for its service (the
    control plane reports SYNCED for the old version until the push starts)."""
    for w in mesh.workloads:
        want = {expected.get(w.service, expected["*"])}
        poll(lambda: _samplings(w) == want, 20, f"{w.service} tracing at {want}")


def _set_sampling(mesh: LocalMesh, sampling: float) -> None:
    mesh.apply(_telemetry(sampling))
    _wait_live(mesh, {"*": sampling})


def _call(client: WorkloadProcess, user: str) -> None:
    r = httpx.get("http://front:9080/", headers={"x-user": user}, proxy=client.proxy_url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["calls"][0]["status"] == 200, r.json()


def _complete(receiver: Receiver, user: str) -> list[Span]:
    spans = receiver.trace_of(user)
    return spans if len(spans) >= 4 else []


def _marker(mesh: LocalMesh, client: WorkloadProcess, receiver: Receiver, name: str) -> list[Span]:
    _set_sampling(mesh, 100)
    _call(client, name)
    return list(poll(lambda: _complete(receiver, name), 30, f"the 4 spans of marker {name}"))


def test_client_front_back_chain(mesh: LocalMesh, client: WorkloadProcess, receiver: Receiver) -> None:
    _set_sampling(mesh, 100)
    _call(client, "chain-1")
    spans = poll(lambda: _complete(receiver, "chain-1"), 30, "4 spans of one trace")
    assert len(spans) == 4, spans
    assert len({s.trace_id for s in spans}) == 1
    by = {(s.service, s.kind): s for s in spans}
    assert set(by) == {("client.default", CLIENT_KIND), ("front.default", SERVER_KIND),
                       ("front.default", CLIENT_KIND), ("back.default", SERVER_KIND)}, spans
    root = by["client.default", CLIENT_KIND]
    front_in, front_out = by["front.default", SERVER_KIND], by["front.default", CLIENT_KIND]
    back_in = by["back.default", SERVER_KIND]
    assert root.parent_id == ""
    assert front_in.parent_id == root.span_id
    assert front_out.parent_id == front_in.span_id
    assert back_in.parent_id == front_out.span_id
    # Custom tags: a literal on every span, the x-user header (propagated by the app) too.
    assert all(s.tag("team") == "tracing-e2e" and s.tag("user") == "chain-1" for s in spans), spans


def test_zero_percent_traces_nothing(mesh: LocalMesh, client: WorkloadProcess, receiver: Receiver) -> None:
    _set_sampling(mesh, 0)
    for i in range(10):
        _call(client, f"zero-{i}")
    _marker(mesh, client, receiver, "marker-zero")
    assert not [s for s in receiver.snapshot() if (s.tag("user") or "").startswith("zero-")]


def test_sampling_follows_the_percentage(mesh: LocalMesh, client: WorkloadProcess, receiver: Receiver) -> None:
    n = 40
    _set_sampling(mesh, 50)
    for i in range(n):
        _call(client, f"half-{i}")
    _marker(mesh, client, receiver, "marker-half")
    spans = [s for s in receiver.snapshot() if (s.tag("user") or "").startswith("half-")]
    traced = {s.tag("user") for s in spans if s.service == "client.default"}
    # Binomial(40, 0.5): outside [5, 35] has probability below 1e-7.
    assert 5 <= len(traced) <= 35, len(traced)
    # Downstream hops follow the caller's decision: every traced request is traced end to end.
    for user in traced:
        assert sum(1 for s in spans if s.tag("user") == user) == 4, [s for s in spans if s.tag("user") == user]
    assert {s.tag("user") for s in spans} == traced


def test_workload_telemetry_overrides_the_mesh(mesh: LocalMesh, client: WorkloadProcess, receiver: Receiver) -> None:
    """Mesh-wide 0%, but a Telemetry selecting the client says 100%: its requests are traced."""
    _set_sampling(mesh, 0)
    mesh.apply("""
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: client-always, namespace: default}
spec:
  selector: {matchLabels: {app: client}}
  tracing: [{randomSamplingPercentage: 100}]
""")
    _wait_live(mesh, {"*": 0, "client": 100})
    _call(client, "workload-1")
    spans = poll(lambda: _complete(receiver, "workload-1"), 30, "the client's trace despite 0% mesh-wide")
    assert {s.service for s in spans} == {"client.default", "front.default", "back.default"}
