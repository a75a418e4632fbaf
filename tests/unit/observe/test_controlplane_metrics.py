"""Control-plane metrics: names, counters read at scrape time, convergence timing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from novamesh.observe.controlplane_metrics import ControlPlaneMetrics, XdsHooks, all_acked


@dataclass
class FakeXds:
    pushes: dict[str, int] = field(default_factory=lambda: {"CDS": 3, "EDS": 2, "LDS": 1, "RDS": 1})
    conns: list[Any] = field(default_factory=lambda: [object(), object()])

    def connections(self) -> list[Any]:
        return self.conns


@dataclass
class St:
    subscribed: bool = True
    sent_version: str = "a"
    acked_version: str = "a"
    nack_version: str = ""


def _samples(m: ControlPlaneMetrics) -> dict[str, float]:
    out = {}
    for line in m.exposition().decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_istio_names_and_state() -> None:
    m = ControlPlaneMetrics(FakeXds(), lambda: 42)
    s = _samples(m)
    assert s['pilot_xds{version=""}'] == 2
    assert s['pilot_xds_pushes{type="cds"}'] == 3 and s['pilot_xds_pushes{type="rds"}'] == 1
    assert s["novamesh_config_revision"] == 42
    assert s['pilot_total_xds_rejects{type="lds"}'] == 0
    for zero in ("citadel_server_csr_count", "citadel_server_success_cert_issuance_count", "citadel_server_csr_sign_err_count",
                 "novamesh_csr_latency_seconds_count", "pilot_proxy_convergence_time_count"):
        assert s[zero] == 0, zero


def test_all_acked() -> None:
    assert all_acked([St(), St(subscribed=False, sent_version="b")])
    assert not all_acked([St(sent_version="b")])
    assert all_acked([St(sent_version="b", nack_version="b")])  # answered, if with a NACK
    assert all_acked([St(sent_version="")])  # nothing sent yet


def test_convergence_from_change_to_settled_ack() -> None:
    m = ControlPlaneMetrics(FakeXds(), lambda: 1)
    h = m.hooks
    h.changed(1, 100.0)
    h.changed(1, 101.0)  # a second change before convergence: still timed from the first
    h.settled(1, 101.5, acked=False, sent=False)  # pushed, ACKs outstanding
    h.settled(1, 102.5, acked=True, sent=True)
    s = _samples(m)
    assert s["pilot_proxy_convergence_time_count"] == 1
    assert s["pilot_proxy_convergence_time_sum"] == 2.5
    # A change that needed no push for this proxy is no convergence sample.
    h.changed(1, 200.0)
    h.settled(1, 200.1, acked=True, sent=False)
    h.settled(1, 300.0, acked=True, sent=True)
    assert _samples(m)["pilot_proxy_convergence_time_count"] == 1
    # A disconnect forgets the pending change.
    h.changed(2, 10.0)
    h.disconnected(2)
    h.settled(2, 11.0, acked=True, sent=True)
    assert _samples(m)["pilot_proxy_convergence_time_count"] == 1


def test_push_time_and_rejects() -> None:
    m = ControlPlaneMetrics(FakeXds(), lambda: 1)
    m.hooks.pushed("LDS", 0.002)
    m.hooks.rejected("LDS")
    m.hooks.rejected("LDS")
    s = _samples(m)
    assert s['pilot_xds_push_time_count{type="lds"}'] == 1
    assert s['pilot_total_xds_rejects{type="lds"}'] == 2
    assert s['pilot_total_xds_rejects{type="cds"}'] == 0


def test_base_hooks_do_nothing() -> None:
    h = XdsHooks()
    h.changed(1, 0.0)
    h.settled(1, 1.0, True, True)
    h.pushed("CDS", 0.1)
    h.rejected("CDS")
    h.disconnected(1)
