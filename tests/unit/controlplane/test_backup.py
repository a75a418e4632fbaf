"""Backups: format, checksum and passphrase seal, CA encryption, restore as one revision through
the Mesh and the REST API, refusals that change nothing, and the scheduler (ManualClock)."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from novamesh.api.app import create_app
from novamesh.cli.main import app as cli_app
from novamesh.controlplane.backup import (
    FORMAT_VERSION,
    PASSPHRASE_ENV,
    backup_mesh,
    build_backup,
    canonical_bytes,
    read_backup_file,
    read_passphrase,
    restore_mesh,
    verify_backup,
    write_backup_file,
)
from novamesh.controlplane.backup_schedule import (
    BackupScheduler,
    backup_file_name,
    list_backups,
    prune_backups,
    start_scheduled_backups,
)
from novamesh.controlplane.mesh import Mesh
from novamesh.errors import ConfigError, NovameshError
from novamesh.settings import Settings
from novamesh.store import SqliteStore
from novamesh.testing.clock import ManualClock
from novamesh.testing.waiting import wait_until_async

FAST_N = 2**14  # the cheapest scrypt cost the reader accepts: keeps the tests quick

DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def _vs(name: str, subset: str, host: str = "reviews") -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [{host}]
  http:
  - route:
    - destination: {{host: {host}, subset: {subset}}}
"""


def _plain_vs(name: str, host: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [{host}]
  http:
  - route:
    - destination: {{host: {host}}}
"""


def _mesh(path: Path, clock: ManualClock | None = None) -> Mesh:
    path.mkdir(parents=True, exist_ok=True)
    clock = clock or ManualClock(start=1_795_000_000.0)
    return Mesh(Settings(data_dir=str(path)), SqliteStore(path / "store.db", clock=clock), clock=clock)


def _apply(mesh: Mesh, text: str, **kw: str) -> int:
    return mesh.apply([{"file": "t.yaml", "content": text}], **kw).revision


def _state(mesh: Mesh) -> dict[Any, Any]:
    return mesh.store.state_at(mesh.revision)


def _populated(path: Path) -> Mesh:
    mesh = _mesh(path)
    _apply(mesh, DR + "---\n" + _vs("reviews", "v1"), message="initial")
    _apply(mesh, _plain_vs("ratings", "ratings"), message="ratings")
    _apply(mesh, _vs("reviews", "v2"), message="canary")
    return mesh


def _doc(manifests: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    kw.setdefault("revision", 3)
    return build_backup(manifests, created=1_795_000_000.0, source="http://127.0.0.1:15014", trust_domain="cluster.local", scrypt_n=FAST_N, **kw)


def _reseal_plain(doc: dict[str, Any]) -> None:
    """What an attacker without the passphrase can do: recompute the plain checksum."""
    doc["integrity"]["sha256"] = hashlib.sha256(canonical_bytes(doc)).hexdigest()


def _refusal(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    assert exc.value.summary == "backup refused"
    return " ".join(f"{v.message} {v.path} {v.hint}" for v in exc.value.violations)


# -- format, checksum, seal --------------------------------------------------------------------
def test_backup_document_holds_metadata_resources_and_checksum(tmp_path: Path) -> None:
    mesh = _populated(tmp_path)
    doc = asyncio.run(backup_mesh(mesh, source="http://cp:15014"))
    meta = doc["metadata"]
    assert doc["format"] == "novamesh-backup" and doc["format_version"] == FORMAT_VERSION
    assert meta["revision"] == 3 and meta["resource_count"] == 3 and meta["source"] == "http://cp:15014"
    assert meta["trust_domain"] == "cluster.local" and meta["created"] == "2026-11-18T11:06:40Z"
    assert meta["novamesh_version"] and meta["ca_included"] is False
    assert [(m["kind"], m["metadata"]["name"]) for m in doc["resources"]] == [
        ("DestinationRule", "reviews"), ("VirtualService", "ratings"), ("VirtualService", "reviews")]
    assert doc["ca"] is None and doc["kdf"] is None and doc["integrity"]["hmac_sha256"] is None
    assert doc["integrity"]["sha256"] == hashlib.sha256(canonical_bytes(doc)).hexdigest()
    verified = verify_backup(json.loads(json.dumps(doc)))
    assert not verified.sealed and verified.manifests == [m for _, m in sorted(_state(mesh).items())]


def test_ca_material_is_encrypted_and_needs_the_right_passphrase() -> None:
    secret = b"-----BEGIN PRIVATE KEY-----\ndummy CA key bytes\n-----END PRIVATE KEY-----\n"
    doc = _doc([], passphrase="correct horse", ca_material=secret)
    text = json.dumps(doc)
    assert b"dummy CA key" not in text.encode() and doc["metadata"]["ca_included"] is True
    assert doc["ca"]["cipher"] == "AES-256-GCM" and doc["kdf"]["name"] == "scrypt"
    verified = verify_backup(json.loads(text), passphrase="correct horse")
    assert verified.ca_material == secret and verified.sealed
    with pytest.raises(ConfigError) as wrong:
        verify_backup(json.loads(text), passphrase="wrong horse")
    assert "wrong passphrase" in _refusal(wrong)
    with pytest.raises(ConfigError) as missing:
        verify_backup(json.loads(text))
    assert "sealed with a passphrase" in _refusal(missing) and PASSPHRASE_ENV in _refusal(missing)


def test_ca_material_is_never_written_without_a_passphrase() -> None:
    with pytest.raises(NovameshError, match="only written encrypted"):
        _doc([], ca_material=b"key")


def test_edited_resource_with_the_old_checksum_is_refused(tmp_path: Path) -> None:
    doc = asyncio.run(backup_mesh(_populated(tmp_path), source="x"))
    doc["resources"][2]["spec"]["http"][0]["route"][0]["destination"]["subset"] = "v1"
    with pytest.raises(ConfigError) as exc:
        verify_backup(doc, file="b.json")
    assert "checksum mismatch" in _refusal(exc) and exc.value.violations[0].file == "b.json"
    assert exc.value.violations[0].path == "integrity.sha256"


def test_seal_catches_an_edit_with_a_recomputed_checksum() -> None:
    doc = _doc([], passphrase="pw")
    doc["metadata"]["source"] = "http://evil"
    _reseal_plain(doc)
    with pytest.raises(ConfigError) as exc:
        verify_backup(doc, passphrase="pw")
    assert "seal (HMAC) does not match" in _refusal(exc)
    # stripping the seal altogether is caught as long as the restorer gives the passphrase
    stripped = _doc([], passphrase="pw")
    stripped["kdf"] = None
    stripped["integrity"]["hmac_sha256"] = None
    _reseal_plain(stripped)
    with pytest.raises(ConfigError) as exc2:
        verify_backup(stripped, passphrase="pw")
    assert "carries no passphrase seal" in _refusal(exc2)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(format="something-else"), "not a novamesh backup"),
        (lambda d: d.update(format_version=FORMAT_VERSION + 1), "made by a newer novamesh"),
        (lambda d: d.pop("integrity"), "integrity is missing"),
        (lambda d: d["metadata"].update(resource_count=5), "checksum mismatch"),
        (lambda d: d["integrity"].update(sha256="\u00e9" * 64), "checksum mismatch"),
    ],
)
def test_malformed_documents_are_refused(mutate: Callable[[dict[str, Any]], Any], expected: str) -> None:
    doc = _doc([])
    mutate(doc)
    with pytest.raises(ConfigError) as exc:
        verify_backup(doc)
    assert expected in _refusal(exc)


def test_crafted_key_derivation_parameters_are_refused_before_any_work() -> None:
    doc = _doc([], passphrase="pw")
    doc["kdf"].update(n=2**20, r=16)  # 2 GiB of scrypt memory: refused, not attempted
    _reseal_plain(doc)
    with pytest.raises(ConfigError) as exc:
        verify_backup(doc, passphrase="pw")
    assert "unsupported key derivation parameters" in _refusal(exc)


def test_structure_is_checked_even_with_a_matching_checksum() -> None:
    doc = _doc([])
    doc["metadata"]["resource_count"] = 5
    _reseal_plain(doc)
    with pytest.raises(ConfigError) as exc:
        verify_backup(doc)
    assert "metadata says 5 resources, the file holds 0" in _refusal(exc)


def test_files_are_private_and_truncated_or_flipped_files_are_refused(tmp_path: Path) -> None:
    doc = asyncio.run(backup_mesh(_populated(tmp_path / "m"), source="x"))
    path = tmp_path / "b.json"
    write_backup_file(path, doc)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert verify_backup(read_backup_file(path)).metadata["revision"] == 3
    raw = path.read_bytes()
    (tmp_path / "t.json").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ConfigError) as trunc:
        read_backup_file(tmp_path / "t.json")
    assert "truncated or corrupted" in _refusal(trunc) and trunc.value.violations[0].line
    at = raw.index(b'"reviews"') + 2  # inside a string: still JSON, different content
    (tmp_path / "f.json").write_bytes(raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1:])
    with pytest.raises(ConfigError) as flipped:
        verify_backup(read_backup_file(tmp_path / "f.json"))
    assert "checksum mismatch" in _refusal(flipped)
    offsets = range(0, len(raw), max(1, len(raw) // 60))
    for offset in offsets:  # a flipped byte anywhere (syntax, key, value, checksum) is refused
        (tmp_path / "x.json").write_bytes(raw[:offset] + bytes([raw[offset] ^ 0x20]) + raw[offset + 1:])
        with pytest.raises(ConfigError):
            verify_backup(read_backup_file(tmp_path / "x.json"))
    assert len(offsets) >= 50
    with pytest.raises(ConfigError, match="no such file"):
        read_backup_file(tmp_path / "missing.json")


def test_read_passphrase(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    assert read_passphrase(tmp_path / "pw", env={}) == "s3cret"
    assert read_passphrase(None, env={PASSPHRASE_ENV: "from-env"}) == "from-env"
    assert read_passphrase(None, env={}) is None
    (tmp_path / "empty").write_text("")
    with pytest.raises(NovameshError, match="is empty"):
        read_passphrase(tmp_path / "empty", env={})
    with pytest.raises(NovameshError, match="cannot read the passphrase file"):
        read_passphrase(tmp_path / "nope", env={})
    with pytest.raises(NovameshError, match="set but empty"):
        read_passphrase(None, env={PASSPHRASE_ENV: ""})


# -- restore through the Mesh ------------------------------------------------------------------
async def test_backup_wipe_restore_gives_an_identical_config_set(tmp_path: Path) -> None:
    source = _populated(tmp_path / "a")
    doc = await backup_mesh(source, source="http://a", passphrase="pw", scrypt_n=FAST_N)
    text = json.dumps(doc)
    fresh = _mesh(tmp_path / "b")  # a wiped control plane: a new, empty data dir
    result = await restore_mesh(fresh, json.loads(text), passphrase="pw", author="ops")
    assert result["revision"] == 1 and result["sealed"] is True and result["ca"] == "not in the backup"
    assert {c["action"] for c in result["changes"]} == {"created"} and len(result["changes"]) == 3
    assert _state(fresh) == _state(source)
    assert {k: r.manifest for k, r in fresh.resources.items()} == _state(source)
    top = fresh.history()[0]
    assert top.author == "ops" and "backup of revision 3 from http://a" in top.message and len(fresh.history()) == 1
    again = await restore_mesh(fresh, json.loads(text), passphrase="pw")
    assert again["revision"] == 1 and {c["action"] for c in again["changes"]} == {"unchanged"}


async def test_restore_into_an_existing_mesh_reports_each_change_as_one_revision(tmp_path: Path) -> None:
    doc = await backup_mesh(_populated(tmp_path / "a"), source="x")  # DR reviews, VS ratings, VS reviews->v2
    target = _mesh(tmp_path / "b")
    _apply(target, DR + "---\n" + _vs("reviews", "v1") + "---\n" + _plain_vs("details", "details"))
    before = target.revision
    dry = await restore_mesh(target, copy.deepcopy(doc), dry_run=True)
    assert dry["dry_run"] and target.revision == before and ("VirtualService", "default", "details") in target.resources
    result = await restore_mesh(target, doc)
    actions = {(c["kind"], c["name"]): c["action"] for c in result["changes"]}
    assert actions == {
        ("DestinationRule", "reviews"): "unchanged",
        ("VirtualService", "details"): "deleted",
        ("VirtualService", "ratings"): "created",
        ("VirtualService", "reviews"): "configured",
    }
    assert dry["changes"] == result["changes"] and dry["diff"] == result["diff"]
    assert "-        subset: v1" in result["diff"] and "+        subset: v2" in result["diff"]
    assert result["revision"] == before + 1
    rev = target.history()[0]
    assert sorted((c.key[2], c.op) for c in rev.changes) == [("details", "deleted"), ("ratings", "created"), ("reviews", "configured")]


async def test_corrupted_backup_changes_nothing(tmp_path: Path) -> None:
    doc = await backup_mesh(_populated(tmp_path / "a"), source="x")
    target = _mesh(tmp_path / "b")
    _apply(target, _plain_vs("details", "details"))
    state, rev = _state(target), target.revision
    doc["resources"][0]["spec"]["host"] = "evil"
    with pytest.raises(ConfigError, match="checksum mismatch"):
        await restore_mesh(target, doc)
    assert target.revision == rev and _state(target) == state and target.store.current_revision() == rev


async def test_backup_whose_config_no_longer_validates_is_refused_with_reasons(tmp_path: Path) -> None:
    target = _mesh(tmp_path)
    _apply(target, _plain_vs("details", "details"))
    rev = target.revision
    manifests = [
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "a", "namespace": "default"},
         "spec": {"hosts": ["a"], "htp": []}},
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "b", "namespace": "default"},
         "spec": {"hosts": ["b"], "http": [{"route": [{"destination": {"host": "b", "subset": "v9"}}]}]}},
    ]
    with pytest.raises(ConfigError) as exc:  # a checksum-valid backup whose resources are wrong
        await restore_mesh(target, _doc(manifests), file="old.json")
    assert exc.value.summary.startswith("restore refused")
    where = [(v.file, v.document, v.name) for v in exc.value.violations]
    assert ("old.json", 0, "a") in where and any("htp" in v.message or "htp" in v.path for v in exc.value.violations)
    assert exc.value.violations[-1].name in ("a", "b")
    assert target.revision == rev and list(target.resources) == [("VirtualService", "default", "details")]
    # the cross-resource check alone (schema-valid): a route to a subset nobody defines
    with pytest.raises(ConfigError) as exc2:
        await restore_mesh(target, _doc(manifests[1:]))
    assert any(v.name == "b" and "v9" in v.message for v in exc2.value.violations)
    assert target.revision == rev


# -- REST API ----------------------------------------------------------------------------------
def test_rest_backup_and_restore_verify_on_the_server(tmp_path: Path) -> None:
    source = TestClient(create_app(_populated(tmp_path / "a")))
    plain = source.get("/api/v1/backup").json()
    assert plain["metadata"]["source"] == "http://testserver" and plain["integrity"]["hmac_sha256"] is None
    sealed = source.post("/api/v1/backup", json={"passphrase": "pw"}).json()
    assert sealed["integrity"]["hmac_sha256"] and sealed["kdf"]["n"] >= 2**14
    target_mesh = _mesh(tmp_path / "b")
    target = TestClient(create_app(target_mesh))
    tampered = copy.deepcopy(plain)
    tampered["resources"][1]["spec"]["hosts"] = ["evil"]
    answer = target.post("/api/v1/restore", json={"backup": tampered, "file": "t.json"})
    assert answer.status_code == 422 and answer.json()["violations"][0]["path"] == "integrity.sha256"
    assert target.post("/api/v1/restore", json={"backup": "garbage"}).status_code == 422
    assert target.post("/api/v1/restore", json={"backup": sealed}).json()["violations"][0]["path"] == "kdf"
    assert target_mesh.revision == 0
    dry = target.post("/api/v1/restore", json={"backup": sealed, "passphrase": "pw", "dry_run": True}).json()
    assert dry["dry_run"] and target_mesh.revision == 0
    done = target.post("/api/v1/restore", json={"backup": sealed, "passphrase": "pw", "author": "ops"})
    assert done.status_code == 200 and done.json()["revision"] == 1 and done.json()["sealed"] is True
    assert target.get("/api/v1/resources").json() == source.get("/api/v1/resources").json()


# -- CLI, offline parts ------------------------------------------------------------------------
def test_cli_restore_verify_only_and_refusals(tmp_path: Path) -> None:
    doc = _doc([], passphrase="pw")
    path = tmp_path / "b.json"
    write_backup_file(path, doc)
    (tmp_path / "pw").write_text("pw\n")
    runner = CliRunner()
    env = {PASSPHRASE_ENV: None}
    ok = runner.invoke(cli_app, ["restore", str(path), "--verify-only", "--passphrase-file", str(tmp_path / "pw")], env=env)
    assert ok.exit_code == 0 and "checksum OK, passphrase seal OK" in ok.output
    no_pw = runner.invoke(cli_app, ["restore", str(path), "--verify-only"], env=env)
    assert no_pw.exit_code == 1 and "sealed with a passphrase" in no_pw.output and "nothing was changed" in no_pw.output
    path.write_text(path.read_text()[:100])
    cut = runner.invoke(cli_app, ["restore", str(path), "-c", "http://127.0.0.1:9"], env=env)
    assert cut.exit_code == 1 and "truncated or corrupted" in cut.output and "cannot reach" not in cut.output


# -- scheduled backups -------------------------------------------------------------------------
class _Follower:
    is_leader = False


def test_backup_file_names_and_pruning(tmp_path: Path) -> None:
    assert backup_file_name(42, 1_795_000_000.0) == "novamesh-backup-r000042-20261118T110640Z.json"
    for rev, t in ((1, 100.0), (2, 200.0), (3, 300.0), (4, 400.0)):
        (tmp_path / backup_file_name(rev, 1_795_000_000.0 + t)).write_text("{}")
    (tmp_path / "notes.json").write_text("{}")
    (tmp_path / "novamesh-backup-manual.json").write_text("{}")
    removed = prune_backups(tmp_path, 2)
    assert sorted(p.name for p in removed) == [backup_file_name(1, 1_795_000_100.0), backup_file_name(2, 1_795_000_200.0)]
    assert [p.name for p in list_backups(tmp_path)] == [backup_file_name(4, 1_795_000_400.0), backup_file_name(3, 1_795_000_300.0)]
    assert (tmp_path / "notes.json").exists() and (tmp_path / "novamesh-backup-manual.json").exists()
    assert prune_backups(tmp_path, 0) == []


async def test_scheduler_writes_on_change_skips_when_unchanged_and_keeps_the_newest(tmp_path: Path) -> None:
    clock = ManualClock(start=1_795_000_000.0)
    mesh = _mesh(tmp_path / "data", clock)
    _apply(mesh, DR + "---\n" + _vs("reviews", "v1"))
    out = tmp_path / "backups"
    sched = BackupScheduler(mesh, out, interval=60, retention=2, clock=clock, source="http://cp", passphrase=lambda: "pw")
    task = asyncio.create_task(sched.run())

    async def tick() -> None:
        await wait_until_async(lambda: clock.sleepers == 1, 10.0, 0.005, "the scheduler to sleep")
        ticks = sched.ticks
        clock.advance(60)
        await wait_until_async(lambda: sched.ticks == ticks + 1, 10.0, 0.005, "a tick")

    try:
        await tick()
        assert [p.name for p in list_backups(out)] == [backup_file_name(1, 1_795_000_060.0)]
        first = verify_backup(read_backup_file(list_backups(out)[0]), passphrase="pw")
        assert first.sealed and first.metadata["revision"] == 1 and len(first.manifests) == 2
        await tick()
        assert len(list_backups(out)) == 1  # nothing changed: skipped
        for subset in ("v2", "v1", "v2"):
            _apply(mesh, _vs("reviews", subset))
            await tick()
        names = [p.name for p in list_backups(out)]
        assert names == [backup_file_name(4, 1_795_000_300.0), backup_file_name(3, 1_795_000_240.0)]
        assert len(sched.written) == 4
        mesh.leader = _Follower()
        _apply(mesh, _plain_vs("ratings", "ratings"))
        await tick()
        assert len(sched.written) == 4  # only the leader writes
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_scheduler_after_restart_skips_an_unchanged_config_and_survives_write_errors(tmp_path: Path) -> None:
    clock = ManualClock(start=1_795_000_000.0)
    mesh = _mesh(tmp_path / "data", clock)
    _apply(mesh, DR)
    out = tmp_path / "backups"
    first = BackupScheduler(mesh, out, interval=60, retention=5, clock=clock, source="x")
    assert await first.tick() is not None
    _apply(mesh, _vs("reviews", "v1"))
    mesh.delete([("VirtualService", "default", "reviews")])  # revision 3 has revision 1's config
    restarted = BackupScheduler(mesh, out, interval=60, retention=5, clock=clock, source="x")
    assert await restarted.tick() is None and len(list_backups(out)) == 1
    _apply(mesh, _vs("reviews", "v2"))
    blocked = BackupScheduler(mesh, tmp_path / "file-not-dir" / "sub", interval=60, retention=5, clock=clock, source="x")
    (tmp_path / "file-not-dir").write_text("a file where the directory should be")
    assert await blocked.tick() is None and blocked.ticks == 1  # logged, not raised
    assert await restarted.tick() is not None and len(list_backups(out)) == 2


async def test_scheduled_backups_are_off_by_default_and_owned_by_the_task_group(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    mesh = _mesh(tmp_path, clock)
    async with asyncio.TaskGroup() as tg:
        assert start_scheduled_backups(tg, mesh, clock) is None
        mesh.settings = mesh.settings.replace(backup_interval=30.0, backup_retention=3)
        task = start_scheduled_backups(tg, mesh, clock)
        assert task is not None and task.get_name() == "scheduled-backups"
        await wait_until_async(lambda: clock.sleepers == 1, 10.0, 0.005, "the scheduler to sleep")
        _apply(mesh, DR)
        clock.advance(30)
        await wait_until_async(lambda: bool(list_backups(tmp_path / "backups")), 10.0, 0.005, "a backup in <data_dir>/backups")
        task.cancel()
    # a broken passphrase file fails each backup loudly; it never yields an unsealed backup
    mesh.settings = mesh.settings.replace(backup_passphrase_file=str(tmp_path / "missing"), backup_dir=str(tmp_path / "b2"))
    _apply(mesh, _vs("reviews", "v1"))
    async with asyncio.TaskGroup() as tg:
        task = start_scheduled_backups(tg, mesh, clock)
        assert task is not None
        await wait_until_async(lambda: clock.sleepers == 1, 10.0, 0.005, "the scheduler to sleep")
        clock.advance(30)
        await wait_until_async(lambda: clock.sleepers == 1, 10.0, 0.005, "the failed tick to finish")
        task.cancel()
    assert list_backups(tmp_path / "b2") == []
    assert "scheduled backups will fail until this is fixed" in caplog.text
    assert "scheduled backup failed" in caplog.text and "cannot read the passphrase file" in caplog.text

