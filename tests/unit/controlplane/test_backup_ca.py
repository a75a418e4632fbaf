"""The CA in backups: the store's CA secrets go in encrypted, come back on restore (then the CA
signs with the restored root), a different root is only replaced on request, and every
refusal changes neither the config nor the CA."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import ClassVar

import pytest
from fastapi.testclient import TestClient

from novamesh.api.app import create_app
from novamesh.controlplane.backup import (
    backup_mesh,
    build_backup,
    restore_mesh,
    verify_backup,
)
from novamesh.controlplane.backup_ca import (
    CA_SECRETS,
    StoreCaMaterial,
    ca_for_backup,
    root_fingerprints,
)
from novamesh.controlplane.mesh import Mesh
from novamesh.errors import ConfigError
from novamesh.security import pki
from novamesh.security.ca import STATE_SECRET, StoreCA, rotate_root
from novamesh.settings import Settings
from novamesh.store import SqliteStore
from novamesh.testing.clock import ManualClock

FAST_N = 2**14
VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
"""


def _mesh(path: Path, *, with_ca: bool = True) -> tuple[Mesh, StoreCA | None]:
    path.mkdir(parents=True, exist_ok=True)
    clock = ManualClock(start=1_795_000_000.0)
    mesh = Mesh(Settings(data_dir=str(path)), SqliteStore(path / "store.db", clock=clock), clock=clock)
    return mesh, (StoreCA(mesh.store, clock) if with_ca else None)


def _roots(mesh: Mesh) -> list[str]:
    return root_fingerprints(mesh.store.get_secret(STATE_SECRET))


def _leaf(ca: StoreCA) -> pki.x509.Certificate:
    key = pki.generate_key("ec-p256")
    return ca.issue(key.public_key(), ["spiffe://cluster.local/ns/default/sa/a"], 3600).chain[0]


async def test_backup_wipe_restore_brings_back_the_root_and_its_signatures_verify(tmp_path: Path) -> None:
    source, ca = _mesh(tmp_path / "a")
    assert ca is not None
    source.apply([{"file": "t.yaml", "content": VS}])
    old_leaf = _leaf(ca)
    doc = await backup_mesh(source, source="a", passphrase="pw", ca=ca_for_backup(source.store, include=True, passphrase="pw"), scrypt_n=FAST_N)
    assert doc["metadata"]["ca_included"] is True and b"BEGIN" not in json.dumps(doc).encode()  # encrypted only
    material = verify_backup(doc, passphrase="pw").ca_material
    assert material is not None and set(json.loads(material)["secrets"]) == set(CA_SECRETS)
    target, _ = _mesh(tmp_path / "b", with_ca=False)  # wiped: no CA state yet
    result = await restore_mesh(target, doc, passphrase="pw", ca=StoreCaMaterial(target.store))
    assert result["ca"].startswith("restored") and _roots(target) == _roots(source)
    assert target.store.state_at(target.revision) == source.store.state_at(source.revision)
    restored = StoreCA(target.store, target.clock)
    pki.verify_chain([old_leaf], restored.trust_bundle(), target.clock.time())  # old workloads still trusted
    new_leaf = _leaf(restored)
    pki.verify_chain([new_leaf], ca.trust_bundle(), target.clock.time())  # the restored CA signs with the old root
    again = await restore_mesh(target, doc, passphrase="pw", ca=StoreCaMaterial(target.store))
    assert again["ca"].startswith("CA unchanged")


async def test_rotation_state_round_trips(tmp_path: Path) -> None:
    source, ca = _mesh(tmp_path / "a")
    assert ca is not None
    source.clock.advance(10)  # type: ignore[attr-defined]
    rotate_root(ca, "start")
    doc = await backup_mesh(source, source="a", passphrase="pw", ca=StoreCaMaterial(source.store), scrypt_n=FAST_N)
    target, _ = _mesh(tmp_path / "b", with_ca=False)
    await restore_mesh(target, doc, passphrase="pw", ca=StoreCaMaterial(target.store))
    assert target.store.get_secret(STATE_SECRET) == source.store.get_secret(STATE_SECRET)
    assert StoreCA(target.store, target.clock).status()["phase"] == "rotating: new root added"


async def test_a_different_root_is_replaced_only_on_request_and_a_refusal_changes_nothing(tmp_path: Path) -> None:
    source, _ = _mesh(tmp_path / "a")
    source.apply([{"file": "t.yaml", "content": VS}])
    doc = await backup_mesh(source, source="a", passphrase="pw", ca=StoreCaMaterial(source.store), scrypt_n=FAST_N)
    target, _ = _mesh(tmp_path / "b")  # a fresh control plane created its own root
    before_state, before_rev = target.store.get_secret(STATE_SECRET), target.revision
    with pytest.raises(ConfigError) as exc:
        await restore_mesh(target, doc, passphrase="pw", ca=StoreCaMaterial(target.store))
    text = str(exc.value)
    assert "different root CA" in text and "--replace-ca" in text and "stop being trusted" in text
    assert target.store.get_secret(STATE_SECRET) == before_state and target.revision == before_rev  # nothing changed
    dry = await restore_mesh(target, doc, passphrase="pw", dry_run=True, ca=StoreCaMaterial(target.store, replace=True))
    assert "dry run" in dry["ca"] and target.store.get_secret(STATE_SECRET) == before_state
    done = await restore_mesh(target, doc, passphrase="pw", ca=StoreCaMaterial(target.store, replace=True))
    assert done["ca"].startswith("replaced the root CA") and _roots(target) == _roots(source)
    skipped = await restore_mesh(_mesh(tmp_path / "c")[0], doc, passphrase="pw", ca=None)  # --no-ca
    assert "not restored" in skipped["ca"]


@pytest.mark.parametrize(
    ("material", "expected"),
    [
        (b"not json", "malformed"),
        (json.dumps({"format": "novamesh-ca-material", "secrets": {"ca/other": "eA=="}}).encode(), "unknown secrets"),
        (json.dumps({"format": "novamesh-ca-material", "secrets": {STATE_SECRET: base64.b64encode(b'{"roots": []}').decode()}}).encode(),
         "CA state is malformed"),
    ],
)
async def test_malformed_ca_material_is_refused_before_any_change(tmp_path: Path, material: bytes, expected: str) -> None:
    target, _ = _mesh(tmp_path, with_ca=False)
    doc = build_backup([], revision=1, created=1_795_000_000.0, source="x", trust_domain="cluster.local",
                       passphrase="pw", ca_material=material, scrypt_n=FAST_N)  # fmt: skip
    with pytest.raises(ConfigError, match=expected):
        await restore_mesh(target, doc, passphrase="pw", ca=StoreCaMaterial(target.store))
    assert target.store.get_secret(STATE_SECRET) is None and target.revision == 0


async def test_a_root_key_that_does_not_match_its_certificate_is_refused(tmp_path: Path) -> None:
    source, _ = _mesh(tmp_path / "a")
    state = json.loads(source.store.get_secret(STATE_SECRET) or b"")
    state["roots"][0]["key"] = pki.key_pem(pki.generate_key("ec-p256")).decode()
    material = json.dumps({"format": "novamesh-ca-material", "secrets": {STATE_SECRET: base64.b64encode(json.dumps(state).encode()).decode()}})
    with pytest.raises(ConfigError, match="does not belong"):
        StoreCaMaterial(source.store).import_material(material.encode(), dry_run=True)


def test_rest_refuses_ca_material_without_a_passphrase_and_no_ca_skips_it(tmp_path: Path) -> None:
    mesh, _ = _mesh(tmp_path)
    client = TestClient(create_app(mesh))
    refused = client.get("/api/v1/backup")
    assert refused.status_code == 422 and "--no-ca" in refused.json()["violations"][0]["hint"]
    plain = client.get("/api/v1/backup?include_ca=false").json()
    assert plain["ca"] is None and plain["metadata"]["ca_included"] is False
    assert client.post("/api/v1/backup", json={"passphrase": None}).status_code == 422
    sealed = client.post("/api/v1/backup", json={"passphrase": "pw"}).json()
    assert sealed["metadata"]["ca_included"] is True and sealed["ca"]["cipher"] == "AES-256-GCM"
    no_ca = client.post("/api/v1/backup", json={"passphrase": "pw", "include_ca": False}).json()
    assert no_ca["ca"] is None
    bare, _ = _mesh(tmp_path / "bare", with_ca=False)  # no CA: unsealed backups work as before
    assert TestClient(create_app(bare)).get("/api/v1/backup").status_code == 200


def test_root_is_created_once_when_the_store_can_compare_and_create(tmp_path: Path) -> None:
    """A store with create_if_absent (etcd) creates the CA state in one transaction: a replica
    that loses the race adopts the winner's root instead of overwriting it."""

    class RacingStore(SqliteStore):
        calls: ClassVar[list[str]] = []

        def create_if_absent(self, key: str, value: str, lease: int) -> bool:
            self.calls.append(key)
            assert json.loads(value)["roots"]  # the loser offered a root of its own
            self.put_secret(STATE_SECRET, json.dumps({"roots": [WINNER], "signer": 0}).encode())  # another replica was faster
            return False

    clock = ManualClock(start=1_795_000_000.0)
    WINNER = json.loads(StoreCA(SqliteStore(tmp_path / "w.db", clock=clock), clock).store.get_secret(STATE_SECRET) or b"")["roots"][0]
    store = RacingStore(tmp_path / "r.db", clock=clock)
    ca = StoreCA(store, clock)
    assert store.calls == [f"secret/{STATE_SECRET}"]
    assert pki.fingerprint(ca.trust_bundle()[0]) == pki.fingerprint(pki.load_certs(WINNER["cert"].encode())[0])
