"""Guarded apply, NACK reporting and automatic rollback, through real Envoy sidecars.

One small mesh (reviews v1 and v3, a client sidecar). The control plane is restarted between
tests with the settings each one needs (the store keeps the config across restarts):

1. guarded apply on (the default): a regex Envoy refuses is refused at apply time, with Envoy's
   reason, and nothing is stored;
2. guarded apply off: the same config reaches Envoy, which NACKs it; proxy-status reports the
   NACK and Envoy keeps serving the last good routes;
3. guarded apply off and auto_rollback_on_nack on: the NACK makes the control plane roll the
   revision back by itself, and every proxy is SYNCED again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from novamesh.testing.load import run_load
from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v3, labels: {version: v3}}]
"""
ALL_V3 = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v3}
"""
# Valid RE2, but over Envoy's default regex program-size limit (100): only Envoy can say no.
GREEDY = ALL_V3.replace("  - route:", "  - match:\n    - uri: {regex: '/(a|b){300}'}\n    route:", 1) + (
    "  - route:\n    - destination: {host: reviews, subset: v1}\n"
)

BASE = {"lease_ttl": 4, "heartbeat_interval": 1}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("guard"), settings=BASE)
    try:
        m.start_control_plane()
        m.echo("reviews", version="v1")
        m.echo("reviews", version="v3")
        m.client("client")
        yield m
    finally:
        m.close()


@pytest.fixture(scope="module")
def client(mesh: LocalMesh) -> WorkloadProcess:
    return next(w for w in mesh.workloads if w.service == "client")


def _restart(mesh: LocalMesh, **settings: Any) -> None:
    """Restart the control plane with ``settings`` and wait until every proxy is back in sync."""
    for k, v in settings.items():
        mesh.env[f"NOVAMESH_{k.upper()}"] = str(v).lower() if isinstance(v, bool) else str(v)
    mesh.stop_control_plane()
    mesh.start_control_plane()
    poll(lambda: len(mesh.proxies()) >= len(mesh.workloads), 30, "every proxy reconnected")
    mesh.wait_synced()


def _versions(client: WorkloadProcess, n: int = 20) -> Counter[str]:
    res = run_load("http://reviews:9080/", count=n, concurrency=4, proxy=client.proxy_url)
    assert res.failed == 0, res.statuses
    return res.versions


def _all_v3(mesh: LocalMesh, client: WorkloadProcess) -> None:
    mesh.apply(DR + "---\n" + ALL_V3)
    poll(lambda: _versions(client) == Counter({"reviews/v3": 20}), 20, "all traffic on v3")
    mesh.wait_synced()


def _nacked(mesh: LocalMesh) -> str:
    for p in mesh.proxies():
        if p["service"] == "client" and p["types"]["RDS"]["status"] == "NACK":
            return str(p["types"]["RDS"]["error"])
    return ""


def test_guarded_apply_refuses_what_envoy_would_reject(mesh: LocalMesh, client: WorkloadProcess) -> None:
    _all_v3(mesh, client)
    (mesh.root / "greedy.yaml").write_text(GREEDY)
    before = mesh.api.get("/api/v1/resources")
    top = mesh.cli("history", "--limit", "1").stdout

    dry = mesh.cli("apply", "-f", str(mesh.root / "greedy.yaml"), "--dry-run")
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert "(dry run)" in dry.stdout and "+        regex: /(a|b){300}" in dry.stdout  # the diff
    assert "NM0001" in dry.stdout  # analysis: these routes have no timeout
    assert "would be REFUSED" in dry.stderr and "program size" in dry.stderr

    proc = mesh.cli("apply", "-f", str(mesh.root / "greedy.yaml"))
    assert proc.returncode == 1
    assert "guarded apply refused" in proc.stderr
    assert "program size" in proc.stderr  # Envoy's own reason
    assert "VirtualService default/reviews" in proc.stderr and "spec.http[0]" in proc.stderr
    assert mesh.api.get("/api/v1/resources") == before  # nothing stored
    assert mesh.cli("history", "--limit", "1").stdout == top
    assert not _nacked(mesh)  # and nothing reached Envoy
    assert _versions(client) == Counter({"reviews/v3": 20})


def test_nack_is_reported_and_last_good_config_kept(mesh: LocalMesh, client: WorkloadProcess) -> None:
    _restart(mesh, guarded_apply=False)
    _all_v3(mesh, client)
    mesh.apply(GREEDY)
    error = poll(lambda: _nacked(mesh), 20, "client proxy to NACK the routes")
    assert "program size" in error
    status = mesh.cli("proxy-status")
    assert "NACK" in status.stdout and "program size" in status.stdout
    # Envoy keeps the last good routes: everything still goes to v3.
    assert _versions(client) == Counter({"reviews/v3": 20})
    mesh.apply(DR + "---\n" + ALL_V3)
    mesh.wait_synced()


def test_auto_rollback_on_nack(mesh: LocalMesh, client: WorkloadProcess) -> None:
    _restart(mesh, guarded_apply=False, auto_rollback_on_nack=True)
    _all_v3(mesh, client)
    good_rev = mesh.api.get("/healthz")["revision"]
    bad_rev = mesh.apply(GREEDY)["revision"]
    assert bad_rev == good_rev + 1

    def rolled_back() -> dict[str, Any] | None:
        revs = mesh.api.get("/api/v1/revisions", limit=1)
        return revs[0] if revs and revs[0]["revision"] > bad_rev else None

    rb = poll(rolled_back, 30, "the automatic rollback revision")
    assert rb["author"] == "novamesh"
    assert rb["message"].startswith("automatic rollback: ") and "rejected RDS" in rb["message"]
    assert "program size" in rb["message"]
    history = mesh.cli("history", "--limit", "3").stdout
    assert "automatic rollback" in history
    assert mesh.api.get("/api/v1/diff", rev_from=good_rev, rev_to=rb["revision"])["diff"] == ""
    mesh.wait_synced()  # every proxy took the rolled-back config
    assert _versions(client) == Counter({"reviews/v3": 20})
    # Once per revision: nothing rolls back the rollback.
    assert mesh.api.get("/api/v1/revisions", limit=1)[0]["revision"] == rb["revision"]
    assert "AUTOMATIC ROLLBACK" in mesh.cp_log()
