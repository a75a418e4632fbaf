"""REST endpoints of the CA: tokens (loopback only), bundle, status, root rotation."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from novamesh.api.app import create_app
from novamesh.controlplane.mesh import Mesh
from novamesh.security.tokens import TokenStore
from novamesh.settings import Settings
from novamesh.store.sqlite import SqliteStore
from novamesh.testing.clock import ManualClock


def _api(tmp_path: Path, clock: ManualClock, host: str = "127.0.0.1") -> tuple[TestClient, Mesh]:
    mesh = Mesh(Settings(data_dir=str(tmp_path)), SqliteStore(tmp_path / "store.db", clock=clock), clock=clock)
    return TestClient(create_app(mesh), client=(host, 40000)), mesh


def test_tokens_are_minted_for_loopback_callers_only(tmp_path: Path, clock: ManualClock) -> None:
    api, mesh = _api(tmp_path, clock)
    resp = api.post("/api/v1/tokens", json={"namespace": "shop", "service_account": "cart", "ttl": 60, "uses": 2})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["identity"] == "spiffe://cluster.local/ns/shop/sa/cart" and body["uses"] == 2
    assert TokenStore(mesh.store, clock, "cluster.local").consume(body["token"]).service_account == "cart"
    bad = api.post("/api/v1/tokens", json={"namespace": "Shop!", "service_account": "cart"})
    assert bad.status_code == 422 and "namespace" in bad.json()["message"]
    remote, _ = _api(tmp_path / "r", clock, host="10.1.2.3")
    denied = remote.post("/api/v1/tokens", json={"namespace": "shop"})
    assert denied.status_code == 403 and "control plane's host" in denied.json()["message"]


def test_bundle_status_and_rotation_steps(tmp_path: Path, clock: ManualClock) -> None:
    api, _ = _api(tmp_path, clock)
    bundle = api.get("/api/v1/ca/bundle").json()
    assert len(bundle["roots"]) == 1 and bundle["roots"][0].startswith("-----BEGIN CERTIFICATE-----")
    assert api.get("/api/v1/ca").json()["phase"] == "stable"
    assert api.post("/api/v1/ca/rotate-root", json={"step": "finish"}).status_code == 409
    assert api.post("/api/v1/ca/rotate-root", json={"step": "sideways"}).status_code == 422
    assert api.post("/api/v1/ca/rotate-root", json={"step": "start"}).json()["phase"] == "rotating: new root added"
    assert len(api.get("/api/v1/ca/bundle").json()["roots"]) == 2
    assert api.post("/api/v1/ca/rotate-root", json={"step": "activate"}).status_code == 200
    done = api.post("/api/v1/ca/rotate-root", json={"step": "finish"}).json()
    assert done["phase"] == "stable" and len(done["roots"]) == 1


def test_the_polled_bundle_reads_the_store_at_most_once_a_second(tmp_path: Path, clock: ManualClock) -> None:
    """Every agent asks for the bundle every few seconds: one CA object serves them all."""
    api, mesh = _api(tmp_path, clock)
    first = api.get("/api/v1/ca/bundle").json()
    reads = []
    original = mesh.store.get_secret

    def counting(name: str) -> bytes | None:
        reads.append(name)
        return original(name)

    mesh.store.get_secret = counting  # type: ignore[method-assign]
    for _ in range(20):
        assert api.get("/api/v1/ca/bundle").json() == first
    assert reads == []  # within the CA's one-second refresh: no store read at all
    clock.advance(1.5)
    assert api.get("/api/v1/ca/bundle").json() == first
    assert len(reads) == 1
