"""Istio's standard workload metrics (names, labels, buckets) on a private registry.

Names and labels are Istio's, so dashboards, alerts and canary templates written for Istio
(Grafana's Istio dashboards, Kiali, Flagger, Argo Rollouts) read them unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)

__all__ = [
    "HTTP_LABELS",
    "TCP_LABELS",
    "DURATION_BUCKETS",
    "BYTES_BUCKETS",
    "WORKLOAD_METRIC_NAMES",
    "WorkloadMetrics",
]

_PEER_LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
)
HTTP_LABELS: tuple[str, ...] = (
    *_PEER_LABELS,
    "response_code",
    "response_flags",
    "grpc_response_status",
    "connection_security_policy",
)
"""Labels of the HTTP/gRPC metrics, in Istio's order."""
TCP_LABELS: tuple[str, ...] = (*_PEER_LABELS, "response_flags", "connection_security_policy")
"""Labels of the TCP metrics."""

DURATION_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000)
"""Istio's default buckets of ``istio_request_duration_milliseconds``."""
BYTES_BUCKETS = tuple(float(10**i) for i in range(10))
"""Istio's default byte-size buckets (1 B to 1 GB, powers of ten)."""

WORKLOAD_METRIC_NAMES: frozenset[str] = frozenset(
    {
        "istio_requests_total",
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
    }
)
"""Exported metric families (histograms add ``_bucket``, ``_sum`` and ``_count``)."""


class WorkloadMetrics:
    """The ``istio_*`` metrics of one workload, on their own registry."""

    def __init__(self) -> None:
        # Istio exposes no ``*_created`` series; they would double the series per label set.
        # (A process-wide switch of prometheus_client; idempotent.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("istio_requests", "Requests seen by the reporting sidecar.", HTTP_LABELS, registry=r)
        self.duration = Histogram(
            "istio_request_duration_milliseconds", "Request duration in milliseconds.", HTTP_LABELS,
            buckets=DURATION_BUCKETS, registry=r,
        )
        self.request_bytes = Histogram(
            "istio_request_bytes", "Request body size in bytes.", HTTP_LABELS, buckets=BYTES_BUCKETS, registry=r
        )
        self.response_bytes = Histogram(
            "istio_response_bytes", "Response body size in bytes.", HTTP_LABELS, buckets=BYTES_BUCKETS, registry=r
        )
        self.tcp_sent = Counter("istio_tcp_sent_bytes", "Bytes sent to the downstream of TCP connections.", TCP_LABELS, registry=r)
        self.tcp_received = Counter("istio_tcp_received_bytes", "Bytes received from the downstream of TCP connections.", TCP_LABELS, registry=r)
        self.tcp_opened = Counter("istio_tcp_connections_opened", "TCP connections opened.", TCP_LABELS, registry=r)
        self.tcp_closed = Counter("istio_tcp_connections_closed", "TCP connections closed.", TCP_LABELS, registry=r)
        # Label values → metric children: prometheus_client's labels() re-validates and
        # re-stringifies every value on each call, the largest cost per entry otherwise.
        # Bounded as the registry's own series are: one entry per label set seen.
        self._http: dict[tuple[str, ...], tuple[Any, Any, Any, Any]] = {}
        self._tcp: dict[tuple[str, ...], tuple[Any, Any, Any, Any]] = {}

    def record_request(
        self, labels: Mapping[str, str], duration_ms: float, request_bytes: int, response_bytes: int
    ) -> None:
        """Count one HTTP/gRPC request; ``labels`` has every name of :data:`HTTP_LABELS`."""
        self.record_request_values(tuple(labels[k] for k in HTTP_LABELS), duration_ms, request_bytes, response_bytes)

    def record_request_values(self, values: tuple[str, ...], duration_ms: float, request_bytes: int, response_bytes: int) -> None:
        """:meth:`record_request` with the label values in :data:`HTTP_LABELS` order (the hot
        path: the four children of a label set are looked up once and then cached)."""
        children = self._http.get(values)
        if children is None:
            children = self._http[values] = (
                self.requests.labels(*values),
                self.duration.labels(*values),
                self.request_bytes.labels(*values),
                self.response_bytes.labels(*values),
            )
        children[0].inc()
        children[1].observe(duration_ms)
        children[2].observe(request_bytes)
        children[3].observe(response_bytes)

    def record_tcp(self, labels: Mapping[str, str], *, sent: int, received: int, opened: int, closed: int) -> None:
        """Add one TCP access-log entry's bytes and connection events."""
        self.record_tcp_values(tuple(labels[k] for k in TCP_LABELS), sent=sent, received=received, opened=opened, closed=closed)

    def record_tcp_values(self, values: tuple[str, ...], *, sent: int, received: int, opened: int, closed: int) -> None:
        """:meth:`record_tcp` with the label values in :data:`TCP_LABELS` order."""
        children = self._tcp.get(values)
        if children is None:
            children = self._tcp[values] = (
                self.tcp_sent.labels(*values),
                self.tcp_received.labels(*values),
                self.tcp_opened.labels(*values),
                self.tcp_closed.labels(*values),
            )
        # Every series of a label set appears at once (zeros included), as Istio's do.
        children[0].inc(sent)
        children[1].inc(received)
        children[2].inc(opened)
        children[3].inc(closed)
