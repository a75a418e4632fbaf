"""PeerAuthentication: valid policies load typed (v1 and v1beta1, every alias); bad ones are
rejected with field path and hint and store nothing; the mode a workload enforces follows
Istio's precedence (workload > namespace > mesh, port level over workload, UNSET inherits)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from novamesh.config import parse_documents
from novamesh.config.names import canonical_kind
from novamesh.config.resource import Resource
from novamesh.config.types import SPEC_TYPES
from novamesh.config.types_security import PeerAuthenticationSpec
from novamesh.controlplane.mesh import Mesh
from novamesh.errors import ConfigError, Violation
from novamesh.model.snapshot import build_snapshot
from novamesh.settings import Settings
from novamesh.store import SqliteStore
from novamesh.translate.peer_authn import effective_mode, inbound_mtls


def _doc(spec: str, version: str = "v1", namespace: str = "default") -> str:
    return (f"apiVersion: security.istio.io/{version}\nkind: PeerAuthentication\n"
            f"metadata: {{name: pa, namespace: {namespace}}}\nspec:\n" + textwrap.indent(textwrap.dedent(spec), "  "))  # fmt: skip


def _violations(spec: str) -> list[Violation]:
    with pytest.raises(ConfigError) as info:
        parse_documents(_doc(spec), "pa.yaml")
    assert all(v.hint for v in info.value.violations), info.value
    return info.value.violations


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_full_policy_loads_typed(version: str) -> None:
    [res] = parse_documents(_doc("""\
        selector: {matchLabels: {app: reviews}}
        mtls: {mode: STRICT}
        portLevelMtls:
          9080: {mode: PERMISSIVE}
          "9090": {mode: DISABLE}
        """, version), "pa.yaml")  # fmt: skip
    spec = res.spec
    assert isinstance(spec, PeerAuthenticationSpec)
    assert spec.selector is not None and spec.selector.match_labels == {"app": "reviews"}
    assert spec.mtls is not None and spec.mtls.mode == "STRICT"
    assert {p: m.mode for p, m in spec.port_level_mtls.items()} == {9080: "PERMISSIVE", 9090: "DISABLE"}
    [empty] = parse_documents(_doc("{}\n"), "pa.yaml")  # an empty spec is valid (UNSET: inherit)
    assert isinstance(empty.spec, PeerAuthenticationSpec) and empty.spec.mtls is None


@pytest.mark.parametrize("alias", ["pa", "peerauthentication", "PeerAuthentications"])
def test_aliases(alias: str) -> None:
    assert canonical_kind(alias) == "PeerAuthentication"


@pytest.mark.parametrize(
    ("spec", "path", "words"),
    [
        ("mtls: {mode: STRICTER}\n", "spec.mtls.mode", "unknown mTLS mode 'STRICTER'"),
        ("mtls: {mode: strict}\n", "spec.mtls.mode", "unknown mTLS mode"),
        ("selector: {matchLabels: {app: a}}\nportLevelMtls: {8080: {mode: TLS}}\n", "spec.portLevelMtls[8080].mode", "unknown mTLS mode"),
        ("portLevelMtls: {8080: {mode: STRICT}}\n", "spec.portLevelMtls", "requires a workload selector"),
        ("selector: {matchLabels: {}}\nportLevelMtls: {8080: {mode: STRICT}}\n", "spec.portLevelMtls", "requires a workload selector"),
        ("selector: {matchLabels: {app: a}}\nportLevelMtls: {70000: {mode: STRICT}}\n", "spec.portLevelMtls[70000]", "out of range"),
        ("mtls: {mode: STRICT, foo: 1}\n", "spec.mtls.foo", ""),
    ],
)
def test_bad_policy_is_rejected_with_path_and_hint(spec: str, path: str, words: str) -> None:
    found = _violations(spec)
    assert [v.path for v in found] == [path], [str(v) for v in found]
    assert words in found[0].message, str(found[0])


def test_lowercase_mode_hint_says_how_to_fix() -> None:
    [v] = _violations("mtls: {mode: strict}\n")
    assert "mode: STRICT" in v.hint


def test_rejected_apply_stores_nothing(tmp_path: Path) -> None:
    mesh = Mesh(Settings(data_dir=str(tmp_path)), SqliteStore(tmp_path / "store.db"))
    with pytest.raises(ConfigError) as info:
        mesh.apply([{"file": "bad.yaml", "content": _doc("portLevelMtls: {8080: {mode: STRICT}}\n")}])
    assert info.value.violations[0].path == "spec.portLevelMtls"
    assert mesh.store.list() == [] and mesh.store.current_revision() == 0 and mesh.resources == {}
    assert mesh.apply([{"file": "good.yaml", "content": _doc("mtls: {mode: STRICT}\n")}]).revision == 1


# -- precedence ------------------------------------------------------------------------------

def _pa(name: str, namespace: str, spec: dict[str, Any]) -> Resource:
    manifest = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip
    return Resource("PeerAuthentication", name, namespace, "security.istio.io/v1", SPEC_TYPES["PeerAuthentication"].model_validate(spec), manifest)


def _mode(policies: list[Resource], port: int = 9080, labels: dict[str, str] | None = None, ns: str = "default") -> str:
    snap = build_snapshot({p.key: p for p in policies}, [], revision=1, registry_version=1)
    return effective_mode(snap, ns, labels if labels is not None else {"app": "reviews"}, port)


MESH_STRICT = _pa("default", "istio-system", {"mtls": {"mode": "STRICT"}})
NS_DISABLE = _pa("default", "default", {"mtls": {"mode": "DISABLE"}})
WL_PERMISSIVE = _pa("reviews", "default", {"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "PERMISSIVE"},
                                           "portLevelMtls": {"9090": {"mode": "STRICT"}, "9091": {"mode": "UNSET"}}})  # fmt: skip


def test_default_is_permissive() -> None:
    assert _mode([]) == "PERMISSIVE"


def test_mesh_then_namespace_then_workload() -> None:
    assert _mode([MESH_STRICT]) == "STRICT"
    assert _mode([MESH_STRICT, NS_DISABLE]) == "DISABLE"
    assert _mode([MESH_STRICT, NS_DISABLE, WL_PERMISSIVE]) == "PERMISSIVE"
    # another namespace's policy does not apply; the mesh one does
    assert _mode([MESH_STRICT, NS_DISABLE], ns="payments") == "STRICT"
    # a workload policy whose selector does not match does not apply
    assert _mode([MESH_STRICT, WL_PERMISSIVE], labels={"app": "ratings"}) == "STRICT"


def test_port_level_overrides_and_unset_inherits() -> None:
    policies = [MESH_STRICT, NS_DISABLE, WL_PERMISSIVE]
    assert _mode(policies, port=9090) == "STRICT"
    assert _mode(policies, port=9091) == "PERMISSIVE"  # UNSET: the workload's own mode
    unset = _pa("reviews", "default", {"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "UNSET"}})
    assert _mode([MESH_STRICT, NS_DISABLE, unset]) == "DISABLE"  # UNSET workload: the namespace's
    assert _mode([MESH_STRICT, _pa("default", "default", {})]) == "STRICT"  # empty namespace policy


def test_inbound_modes_are_compact_for_class_keys() -> None:
    snap = build_snapshot({p.key: p for p in [MESH_STRICT, WL_PERMISSIVE]}, [], revision=1, registry_version=1)
    modes = inbound_mtls(snap, "default", {"app": "reviews"}, (9080, 9090))
    assert modes.default == "PERMISSIVE" and modes.ports == ((9090, "STRICT"),)
    assert modes.mode(9080) == "PERMISSIVE" and modes.mode(9090) == "STRICT"
