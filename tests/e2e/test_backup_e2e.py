"""Backup → wipe → restore through the CLI against a real control plane, with one echo workload
whose traffic still flows (through the restored routing) afterwards."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from novamesh.controlplane.backup import read_backup_file, verify_backup
from novamesh.controlplane.backup_schedule import list_backups
from novamesh.testing.load import run_load
from novamesh.testing.mesh import LocalMesh, WorkloadProcess, poll

pytestmark = pytest.mark.e2e

CONFIG = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"""
EXTRA = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    m = LocalMesh(
        tmp_path_factory.mktemp("backup"),
        settings={"lease_ttl": 4, "heartbeat_interval": 1, "backup_interval": 1, "backup_retention": 2},
    )
    try:
        m.start_control_plane()
        m.echo("reviews", version="v1")
        m.client("client")
        yield m
    finally:
        m.close()


def _flows(client: WorkloadProcess) -> bool:
    res = run_load("http://reviews:9080/", count=10, proxy=client.proxy_url)
    return res.versions == Counter({"reviews/v1": 10})


def _resources(mesh: LocalMesh) -> list[dict[str, object]]:
    return list(mesh.api.get("/api/v1/resources"))


def _routes_v1(mesh: LocalMesh) -> bool:
    """The client's sidecar has the restored route to subset v1 (not just default routing)."""
    client = next(w for w in mesh.workloads if w.service == "client")
    return "outbound|9080|v1|reviews" in json.dumps(mesh.api.get(f"/api/v1/proxies/{client.id}/config"))


def test_backup_wipe_restore_through_the_cli(mesh: LocalMesh, tmp_path: Path) -> None:
    client = next(w for w in mesh.workloads if w.service == "client")
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "extra.yaml").write_text(EXTRA)
    (tmp_path / "pw").write_text("correct horse battery\n")
    pw = ["--passphrase-file", str(tmp_path / "pw")]
    assert mesh.cli("apply", "-f", str(tmp_path / "config.yaml")).returncode == 0
    assert mesh.cli("apply", "-f", str(tmp_path / "extra.yaml")).returncode == 0
    poll(lambda: _flows(client), 30, "traffic through the routed mesh")
    before = _resources(mesh)
    assert len(before) == 3
    scheduled = mesh.root / "data" / "backups"  # the control plane's own scheduled backups
    newest = poll(lambda: [p for p in list_backups(scheduled) if "-r000002-" in p.name], 30, "a scheduled backup of revision 2")
    assert verify_backup(read_backup_file(newest[0])).manifests == before

    made = mesh.cli("backup", "-o", str(tmp_path / "b.json"), "--no-ca", *pw)  # the CA's part: test_backup_ca_e2e.py
    assert made.returncode == 0, made.stderr
    assert "revision 2" in made.stdout and "3 resource(s)" in made.stdout
    doc = json.loads((tmp_path / "b.json").read_text())
    assert doc["metadata"]["source"] == mesh.url and doc["integrity"]["hmac_sha256"]

    # wipe: the control plane restarts on a new, empty data dir; the agents register again
    mesh.stop_control_plane()
    mesh.env["NOVAMESH_DATA_DIR"] = str(mesh.root / "data-wiped")
    mesh.start_control_plane()
    assert _resources(mesh) == [] and mesh.api.get("/healthz")["revision"] == 0
    poll(lambda: len([w for w in mesh.workloads_info() if w["ready"]]) == 2, 30, "workloads registered again")
    # The new control plane made a root of its own (this backup has no CA part): each agent notices
    # that the CA no longer trusts its certificate and joins again, so its sidecar can reach xDS.
    poll(lambda: all("joined again with a new certificate" in w.log() for w in mesh.workloads), 60, "agents joined the new CA")

    # a tampered copy (one resource edited, old checksum kept) is refused and changes nothing
    doc["resources"][0]["spec"]["host"] = "ratings"
    (tmp_path / "tampered.json").write_text(json.dumps(doc))
    refused = mesh.cli("restore", str(tmp_path / "tampered.json"), *pw)
    assert refused.returncode == 1 and "checksum mismatch" in refused.stderr and "nothing was changed" in refused.stderr
    assert _resources(mesh) == [] and mesh.api.get("/healthz")["revision"] == 0

    dry = mesh.cli("restore", str(tmp_path / "b.json"), "--dry-run", *pw)
    assert dry.returncode == 0, dry.stderr
    assert "virtualservice/reviews (default) created (dry run)" in dry.stdout and "+kind: DestinationRule" in dry.stdout
    assert _resources(mesh) == []

    done = mesh.cli("restore", str(tmp_path / "b.json"), *pw)
    assert done.returncode == 0, done.stderr
    assert "virtualservice/ratings (shop) created" in done.stdout and "revision 1" in done.stdout
    assert "passphrase seal OK" in done.stderr
    assert _resources(mesh) == before
    top = mesh.api.get("/api/v1/revisions", limit=1)[0]
    assert top["message"].startswith(f"restore backup of revision 2 from {mesh.url}")

    poll(lambda: _routes_v1(mesh), 30, "the restored route on the client's sidecar")
    poll(lambda: _flows(client), 30, "traffic after the restore")
    again = mesh.cli("restore", str(tmp_path / "b.json"), *pw)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert mesh.api.get("/healthz")["revision"] == 1
