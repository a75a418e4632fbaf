"""Control-plane metrics, served on 15014 ``/metrics`` (names of Istio's pilot/citadel metrics
where one exists, so Istio's control-plane dashboard queries work).

Counters the xDS server already keeps (pushes, connections) are read at scrape time by a
collector; timings are recorded through :class:`MetricsHooks`, which the xDS server calls.

Certificate metrics (``citadel_server_*``, ``novamesh_csr_latency_seconds``) are defined now and
stay zero until the CA exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "XdsHooks",
    "MetricsHooks",
    "ControlPlaneMetrics",
    "CONTROL_PLANE_METRIC_NAMES",
    "all_acked",
]

CONVERGENCE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)
PUSH_TIME_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5)

CONTROL_PLANE_METRIC_NAMES: frozenset[str] = frozenset(
    {
        "pilot_xds",
        "pilot_xds_pushes",
        "pilot_xds_push_time",
        "pilot_proxy_convergence_time",
        "pilot_total_xds_rejects",
        "pilot_xds_write_timeout",
        "novamesh_config_revision",
        "citadel_server_csr_count",
        "citadel_server_success_cert_issuance_count",
        "citadel_server_csr_sign_err_count",
        "novamesh_csr_latency_seconds",
    }
)
"""Exported families (counters add ``_total``, histograms ``_bucket``/``_sum``/``_count``)."""

_TYPES = ("cds", "eds", "lds", "rds")


class _TypeState(Protocol):
    subscribed: bool
    sent_version: str
    acked_version: str
    nack_version: str


def all_acked(types: Iterable[_TypeState]) -> bool:
    """Every subscribed type's last response was answered (ACK or NACK): nothing in flight."""
    return all(
        not t.subscribed or not t.sent_version or t.acked_version == t.sent_version or t.nack_version == t.sent_version
        for t in types
    )


class XdsHooks:
    """What the xDS server reports; this base class ignores everything (no metrics)."""

    def changed(self, conn_id: int, now: float) -> None:
        """A new snapshot was installed while connection ``conn_id`` was open."""

    def settled(self, conn_id: int, now: float, acked: bool, sent: bool) -> None:
        """The connection has nothing in flight (``sent``: the settling answer was an ACK of a
        response; ``acked``: every response is answered)."""

    def pushed(self, type_short: str, seconds: float) -> None:
        """One response of ``type_short`` (CDS/EDS/LDS/RDS) was written in ``seconds``."""

    def rejected(self, type_short: str) -> None:
        """A proxy NACKed a response of ``type_short``."""

    def disconnected(self, conn_id: int) -> None:
        """Connection ``conn_id`` ended."""


class MetricsHooks(XdsHooks):
    """Records the xDS server's reports into ``metrics``, timing convergence per connection:
    from the first snapshot change not yet reflected until the proxy has ACKed everything."""

    def __init__(self, metrics: ControlPlaneMetrics) -> None:
        self.metrics = metrics
        self._pending: dict[int, float] = {}

    def changed(self, conn_id: int, now: float) -> None:
        self._pending.setdefault(conn_id, now)

    def settled(self, conn_id: int, now: float, acked: bool, sent: bool) -> None:
        if not acked:
            return
        started = self._pending.pop(conn_id, None)
        if started is not None and sent:  # a change that needed no push is not a convergence
            self.metrics.convergence.observe(max(0.0, now - started))

    def pushed(self, type_short: str, seconds: float) -> None:
        self.metrics.push_time.labels(type_short.lower()).observe(seconds)

    def rejected(self, type_short: str) -> None:
        t = type_short.lower()
        self.metrics.rejects[t] = self.metrics.rejects.get(t, 0) + 1

    def disconnected(self, conn_id: int) -> None:
        self._pending.pop(conn_id, None)


class _XdsView(Protocol):
    pushes: dict[str, int]

    def connections(self) -> list[Any]: ...


def _counter(name: str, doc: str, labels: tuple[str, ...], values: dict[tuple[str, ...], float]) -> Metric:
    """A counter family with Istio's exact sample name (Istio's counters carry no ``_total``)."""
    m = Metric(name, doc, "counter")
    for key, value in sorted(values.items()):
        m.add_sample(name, dict(zip(labels, key)), value)
    return m


class _StateCollector(Collector):
    def __init__(self, metrics: ControlPlaneMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        conns = GaugeMetricFamily("pilot_xds", "Proxies connected to this control plane over xDS.", labels=["version"])
        conns.add_metric([""], len(m.xds.connections()))
        yield conns
        pushes: dict[tuple[str, ...], float] = {(t,): 0.0 for t in _TYPES}
        pushes.update({(t.lower(),): float(n) for t, n in m.xds.pushes.items()})
        yield _counter("pilot_xds_pushes", "xDS responses sent, by type.", ("type",), pushes)
        yield _counter("pilot_total_xds_rejects", "xDS responses proxies rejected (NACK), by type.", ("type",),
                       {(t,): float(m.rejects.get(t, 0)) for t in _TYPES})
        yield _counter("pilot_xds_write_timeout", "xDS responses that could not be written in time.", (), {(): float(m.write_timeouts)})
        rev = GaugeMetricFamily("novamesh_config_revision", "Config store revision this replica serves.")
        rev.add_metric([], m.revision())
        yield rev
        # Certificates: defined now, zero until the CA exists.
        yield _counter("citadel_server_csr_count", "Certificate signing requests received.", (), {(): float(m.csr_count)})
        yield _counter("citadel_server_success_cert_issuance_count", "Certificates issued.", (), {(): float(m.certs_issued)})
        yield _counter("citadel_server_csr_sign_err_count", "Certificate signing requests refused.", (), {(): float(m.csr_refused)})


class ControlPlaneMetrics:
    """The control plane's registry: state read at scrape time plus recorded timings."""

    def __init__(self, xds: _XdsView, revision: Callable[[], int]) -> None:
        self.xds = xds
        self.revision = revision
        self.rejects: dict[str, int] = {}
        self.write_timeouts = 0
        self.csr_count = 0
        self.certs_issued = 0
        self.csr_refused = 0
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series, as in Istio (process-wide)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        r.register(_StateCollector(self))
        self.push_time = Histogram(
            "pilot_xds_push_time", "Seconds to build and write one xDS response, by type.", ["type"],
            buckets=PUSH_TIME_BUCKETS, registry=r,
        )
        for t in _TYPES:  # every series exists from the start, so rate() works before the first push
            self.push_time.labels(t)
        self.convergence = Histogram(
            "pilot_proxy_convergence_time",
            "Seconds from a config change until a proxy has acknowledged all the config it needed.",
            buckets=CONVERGENCE_BUCKETS, registry=r,
        )
        self.csr_latency = Histogram(
            "novamesh_csr_latency_seconds", "Seconds from receiving a CSR to answering it (zero until the CA exists).",
            registry=r,
        )
        self.hooks = MetricsHooks(self)

    def exposition(self) -> bytes:
        """The Prometheus text exposition of every control-plane metric."""
        return generate_latest(self.registry)
