"""`novamesh analyze --live` against a running mesh: findings that need the registry, and local
files laid over the live config "as if applied" — without changing anything."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from novamesh.cli.analyze_cmds import EXIT_FOUND_ISSUES
from novamesh.testing.mesh import LocalMesh

pytestmark = pytest.mark.e2e

LIVE_CONFIG = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 5}}
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - timeout: 5s
    route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: nobody}
spec:
  workloadSelector: {labels: {app: nothing}}
  egress: [{hosts: ["./*"]}]
"""

FIX = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 5}}
  subsets: [{name: v1, labels: {version: v1}}]
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(tmp_path_factory.mktemp("analyze"))
    try:
        m.start_control_plane()
        m.echo("reviews", version="v1")
        yield m
    finally:
        m.close()


def _findings(stdout: str) -> set[tuple[str, str]]:
    return {(m["code"], m["origin"]) for m in json.loads(stdout)}


def test_live_analysis_uses_the_registry_and_files_overlay(mesh: LocalMesh) -> None:
    mesh.apply(LIVE_CONFIG)
    revision = mesh.api.get("/healthz")["revision"]

    live = mesh.cli("analyze", "--live", "-o", "json")
    assert live.returncode == EXIT_FOUND_ISSUES, live.stderr
    found = _findings(live.stdout)
    assert ("IST0173", "DestinationRule default/reviews") in found  # subset v2 selects no workload
    assert ("IST0127", "Sidecar default/nobody") in found  # selector matches no workload
    assert not [f for f in found if f[0] == "IST0101"]  # reviews is a registered service

    # Offline, the same config has no registry: the live-only findings cannot appear.
    (mesh.root / "live.yaml").write_text(LIVE_CONFIG)
    offline = mesh.cli("analyze", "-f", str(mesh.root / "live.yaml"), "-o", "json")
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert not {c for c, _ in _findings(offline.stdout)} & {"IST0173", "IST0127"}

    # The fix laid over the live mesh as if applied: the error is gone, the warning stays.
    (mesh.root / "fix.yaml").write_text(FIX)
    overlay = mesh.cli("analyze", "--live", "-f", str(mesh.root / "fix.yaml"), "-o", "json")
    assert overlay.returncode == 0, overlay.stdout + overlay.stderr
    found = _findings(overlay.stdout)
    assert ("IST0127", "Sidecar default/nobody") in found
    assert not [f for f in found if f[0] == "IST0173"]

    # Analysis never changes the mesh.
    assert mesh.api.get("/healthz")["revision"] == revision
    assert len(mesh.api.get("/api/v1/resources/DestinationRule/default/reviews")["spec"]["subsets"]) == 2
