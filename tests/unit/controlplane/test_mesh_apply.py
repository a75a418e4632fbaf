"""Mesh.apply / delete: all-or-nothing, every violation reported, store untouched on error."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from novamesh.api.app import create_app
from novamesh.controlplane.mesh import Mesh
from novamesh.errors import ConfigError
from novamesh.settings import Settings
from novamesh.store import SqliteStore

DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""
VS = """apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
"""


def _mesh(tmp_path: Path) -> Mesh:
    return Mesh(Settings(data_dir=str(tmp_path)), SqliteStore(tmp_path / "store.db"))


def test_apply_stores_all_documents_as_one_revision(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    result = mesh.apply([{"file": "a.yaml", "content": DR + "---\n" + VS}])
    assert result.revision == 1
    assert [c["action"] for c in result.changes] == ["created", "created"]
    again = mesh.apply([{"file": "a.yaml", "content": DR}])
    assert again.revision == 1 and again.changes[0]["action"] == "unchanged"
    assert len(mesh.store.list()) == 2


@pytest.mark.parametrize(
    ("content", "path"),
    [
        (VS, "spec.http[0].route[0].destination.subset"),  # no DestinationRule defines v1 yet
        (DR + "---\n" + VS.replace("weight: 10", "weight: 20"), "spec.http[0].route"),
        (DR + "---\n" + DR, "metadata.name"),
        (DR + "---\nkind: EnvoyFilter\napiVersion: networking.istio.io/v1\nmetadata: {name: gw}\nspec: {}\n", "kind"),
        (DR.replace("subsets:", "subsetz:"), "spec.subsetz"),
        ("a: [1, 2\n", ""),
    ],
)
def test_bad_input_stores_nothing(tmp_path: Path, content: str, path: str) -> None:
    mesh = _mesh(tmp_path)
    with pytest.raises(ConfigError) as info:
        mesh.apply([{"file": "bad.yaml", "content": content}])
    assert any(v.path.startswith(path) and v.file == "bad.yaml" for v in info.value.violations), info.value
    assert all(v.hint for v in info.value.violations), info.value
    assert mesh.store.list() == [] and mesh.store.current_revision() == 0 and mesh.resources == {}


def test_delete_refused_while_a_route_uses_the_subset(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    mesh.apply([{"file": "a.yaml", "content": DR + "---\n" + VS}])
    with pytest.raises(ConfigError) as info:
        mesh.delete([("DestinationRule", "default", "reviews")])
    assert "VirtualService" in str(info.value)
    assert len(mesh.store.list()) == 2
    mesh.delete([("VirtualService", "default", "reviews"), ("DestinationRule", "default", "reviews")])
    assert mesh.store.list() == [] and mesh.store.current_revision() == 2


def test_rest_api_round_trip_and_errors(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    client = TestClient(create_app(mesh))
    bad = client.post("/api/v1/apply", json={"documents": [{"file": "x.yaml", "content": VS}]})
    assert bad.status_code == 422 and bad.json()["violations"][0]["path"].endswith("subset")
    ok = client.post("/api/v1/apply", json={"documents": [{"file": "x.yaml", "content": DR + "---\n" + VS}]})
    assert ok.status_code == 200 and ok.json()["revision"] == 1
    assert client.get("/api/v1/resources/vs/default/reviews").json()["spec"]["hosts"] == ["reviews"]
    assert client.get("/api/v1/resources/vs/default/nope").status_code == 404
    assert client.get("/api/v1/resources/bogus/default/x").status_code == 404
    assert len(client.get("/api/v1/resources", params={"kind": "destinationrule"}).json()) == 1
    reg = client.post("/api/v1/workloads", json={"service": "reviews", "version": "v1", "ports": [{"number": 9080}]}).json()
    assert client.put(f"/api/v1/workloads/{reg['id']}/heartbeat", json={"ready": True}).status_code == 200
    assert client.get("/api/v1/workloads").json()[0]["ready"] is True
    assert client.delete(f"/api/v1/workloads/{reg['id']}").status_code == 204
    assert client.put(f"/api/v1/workloads/{reg['id']}/heartbeat", json={}).status_code == 404
    assert "paths" in client.get("/openapi.json").json()
