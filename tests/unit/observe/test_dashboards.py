"""The shipped Grafana dashboards use only metric names novamesh exports."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import generate_latest

from novamesh.observe.aggregate import LocalIdentity, Peer, record_http, record_tcp
from novamesh.observe.controlplane_metrics import ControlPlaneMetrics
from novamesh.observe.envoy_config import LOG_INBOUND
from novamesh.observe.grafana import DASHBOARDS, load_dashboard, metric_names, queries
from novamesh.observe.workload_metrics import WorkloadMetrics
from envoy.data.accesslog.v3 import accesslog_pb2


class _Xds:
    pushes = {"CDS": 1}

    def connections(self) -> list[Any]:
        return []


def _exported() -> set[str]:
    """Every sample name our registries actually expose (one of each sample recorded)."""
    wm = WorkloadMetrics()
    me = LocalIdentity(Peer("a-v1", "ns", "a", "v1"), "a.ns.svc.cluster.local")
    record_http(wm, me, LOG_INBOUND, accesslog_pb2.HTTPAccessLogEntry())
    record_tcp(wm, me, LOG_INBOUND, accesslog_pb2.TCPAccessLogEntry())
    text = generate_latest(wm.registry).decode() + ControlPlaneMetrics(_Xds(), lambda: 1).exposition().decode()
    return {re.split(r"[{ ]", line)[0] for line in text.splitlines() if line and not line.startswith("#")}


EXPORTED = _exported()


def test_exported_names_cover_istio_standard_metrics() -> None:
    for name in ("istio_requests_total", "istio_request_duration_milliseconds_bucket", "istio_request_bytes_bucket",
                 "istio_response_bytes_bucket", "istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total",
                 "istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total", "pilot_xds_pushes",
                 "pilot_proxy_convergence_time_bucket"):
        assert name in EXPORTED


@pytest.mark.parametrize("name", DASHBOARDS)
def test_dashboard_queries_use_only_exported_metrics(name: str) -> None:
    dash = load_dashboard(name)
    assert dash["uid"].startswith("novamesh-")
    exprs = list(queries(dash))
    assert exprs, "a dashboard without queries"
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - EXPORTED
        assert not unknown, f"{name}: {expr!r} reads {sorted(unknown)}, which novamesh does not export"


def test_the_check_can_fail() -> None:
    assert metric_names('sum(rate(istio_requests{reporter="source"}[1m])) by (le)') == {"istio_requests"}
    assert "istio_requests" not in EXPORTED
    assert metric_names("label_values(istio_requests_total, destination_service)") == {"istio_requests_total"}
    with pytest.raises(ValueError):
        load_dashboard("nope")
