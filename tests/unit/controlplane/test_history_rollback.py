"""History, diff and rollback on the Mesh (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from novamesh.controlplane.mesh import Mesh
from novamesh.errors import ConfigError, NotFoundError
from novamesh.settings import Settings
from novamesh.store import SqliteStore

DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def _vs(subset: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
"""


def _mesh(tmp_path: Path) -> Mesh:
    return Mesh(Settings(data_dir=str(tmp_path)), SqliteStore(tmp_path / "store.db"))


def _apply(mesh: Mesh, text: str, **kw: str) -> int:
    return mesh.apply([{"file": "t.yaml", "content": text}], **kw).revision  # type: ignore[arg-type]


def test_history_records_author_message_and_changes(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    _apply(mesh, DR + "---\n" + _vs("v1"), author="ann", message="initial")
    _apply(mesh, _vs("v2"), author="bob", message="canary")
    revs = mesh.history()
    assert [(r.number, r.author, r.message) for r in revs] == [(2, "bob", "canary"), (1, "ann", "initial")]
    assert [c.op for c in revs[1].changes] == ["created", "created"]
    only_dr = mesh.history(("DestinationRule", "default", "reviews"))
    assert [r.number for r in only_dr] == [1]


def test_diff_between_revisions(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    _apply(mesh, DR + "---\n" + _vs("v1"))
    _apply(mesh, _vs("v2"))
    text = mesh.diff(1, 2)
    assert "-    - destination:\n-        host: reviews\n-        subset: v1" in text or "-        subset: v1" in text
    assert "+        subset: v2" in text
    assert mesh.diff(2) == ""
    assert "+kind: DestinationRule" in mesh.diff(0, 1)
    with pytest.raises(NotFoundError):
        mesh.diff(7)


def test_rollback_is_a_new_revision_equal_to_the_old_state(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    _apply(mesh, DR + "---\n" + _vs("v1"))
    _apply(mesh, _vs("v2"))
    result = mesh.rollback()
    assert result.revision == 3
    assert mesh.store.state_at(3) == mesh.store.state_at(1)
    assert mesh.resources[("VirtualService", "default", "reviews")].manifest["spec"]["http"][0]["route"][0]["destination"]["subset"] == "v1"
    assert mesh.history()[0].message == "rollback to revision 1"
    # back to the empty mesh: everything deleted, still one revision
    empty = mesh.rollback(to=0)
    assert empty.revision == 4 and mesh.resources == {} and mesh.store.list() == []


def test_rollback_dry_run_changes_nothing(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    _apply(mesh, DR + "---\n" + _vs("v1"))
    _apply(mesh, _vs("v2"))
    result = mesh.rollback(dry_run=True)
    assert result.dry_run and "+        subset: v1" in result.diff
    assert mesh.revision == 2 and mesh.store.current_revision() == 2


def test_rollback_to_a_state_that_no_longer_validates_is_explained(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    _apply(mesh, DR + "---\n" + _vs("v1"))
    # Make revision 1's VS invalid under today's rules by tampering with history, the way a
    # schema tightening in a newer novamesh would.
    mesh.store._q("UPDATE changes SET manifest = replace(manifest, '\"hosts\":[\"reviews\"]', '\"hosts\":[]') WHERE rev = 1")  # type: ignore[attr-defined]
    _apply(mesh, _vs("v2"))
    with pytest.raises(ConfigError) as info:
        mesh.rollback(to=1)
    assert "rollback to revision 1 refused" in str(info.value)
    assert any(v.path.startswith("spec.hosts") for v in info.value.violations)
    assert mesh.revision == 2 and mesh.store.current_revision() == 2


def test_dry_run_apply_shows_the_diff(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    _apply(mesh, DR + "---\n" + _vs("v1"))
    result = mesh.apply([{"file": "t.yaml", "content": _vs("v2")}], dry_run=True)
    assert result.dry_run and "-        subset: v1" in result.diff and "+        subset: v2" in result.diff
    assert mesh.store.current_revision() == 1
