"""Sidecar and VirtualService tcp/tls routes: accepted input, and bad input rejected with the
field path and a hint, with nothing stored."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from novamesh.config import parse_documents
from novamesh.config.names import canonical_kind
from novamesh.config.types_sidecar import SidecarSpec
from novamesh.controlplane.mesh import Mesh
from novamesh.errors import ConfigError
from novamesh.settings import Settings
from novamesh.store import SqliteStore

SIDECAR = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  egress:
  - hosts: ["./*", "istio-system/*", "prod/reviews"]
  - port: {number: 3306, protocol: TCP, name: mysql}
    hosts: ["*/mysql.db.svc.cluster.local"]
  outboundTrafficPolicy: {mode: ALLOW_ANY}
"""

TCP_VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mysql}
spec:
  hosts: [mysql]
  tcp:
  - match: [{port: 3306}]
    route:
    - {destination: {host: mysql, subset: v1}, weight: 80}
    - {destination: {host: mysql, subset: v2}, weight: 20}
  tls:
  - match: [{port: 3307, sniHosts: [mysql.default.svc.cluster.local]}]
    route: [{destination: {host: mysql, port: {number: 3307}}}]
"""


def _violations(text: str) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_documents(textwrap.dedent(text), "bad.yaml")
    return [(v.path, v.message, v.hint) for v in info.value.violations]


def test_sidecar_and_l4_routes_are_accepted() -> None:
    (sidecar,) = parse_documents(SIDECAR, "sc.yaml")
    assert isinstance(sidecar.spec, SidecarSpec)
    assert sidecar.spec.outbound_traffic_policy is not None
    assert sidecar.spec.outbound_traffic_policy.mode == "ALLOW_ANY"
    assert [e.port.number if e.port else None for e in sidecar.spec.egress] == [None, 3306]
    (vs,) = parse_documents(TCP_VS, "vs.yaml")
    assert [d.weight for d in vs.spec.tcp[0].route] == [80, 20]  # type: ignore[attr-defined]
    assert canonical_kind("sidecars") == "Sidecar" and canonical_kind("Sidecar") == "Sidecar"


def test_empty_outbound_traffic_policy_means_registry_only_like_istio() -> None:
    (sidecar,) = parse_documents(SIDECAR.replace("{mode: ALLOW_ANY}", "{}"), "sc.yaml")
    assert sidecar.spec.outbound_traffic_policy.mode == "REGISTRY_ONLY"  # type: ignore[attr-defined]


def test_egress_host_without_namespace_part() -> None:
    (problem,) = _violations(SIDECAR.replace('"prod/reviews"', '"reviews"'))
    path, message, hint = problem
    assert path == "spec.egress[0].hosts[2]"
    assert "no namespace part" in message and "./reviews" in hint


@pytest.mark.parametrize(
    ("old", "new", "path", "words"),
    [
        ('"istio-system/*"', '"Bad_NS/*"', "spec.egress[0].hosts[1]", "not a namespace"),
        ("  - port: {number: 3306, protocol: TCP, name: mysql}\n", "  - \n", "spec.egress[1].port", "only one egress entry"),
        ("{mode: ALLOW_ANY}", "{mode: ALLOW_SOME}", "spec.outboundTrafficPolicy.mode", "REGISTRY_ONLY"),
        ("  outboundTrafficPolicy", "  ingress: [{port: {number: 9080}}]\n  outboundTrafficPolicy", "spec.ingress", "not supported by novamesh yet"),
        ("hosts: [\"*/mysql", "bind: 127.0.0.1\n    hosts: [\"*/mysql", "spec.egress[1].bind", "not supported by novamesh yet"),
    ],
)
def test_bad_sidecar_fields(old: str, new: str, path: str, words: str) -> None:
    assert old in SIDECAR
    problems = _violations(SIDECAR.replace(old, new))
    assert any(p == path and words in (m + h) for p, m, h in problems), problems


def test_tcp_route_weights_must_add_up_to_100() -> None:
    (problem,) = _violations(TCP_VS.replace("weight: 20", "weight: 30"))
    path, message, hint = problem
    assert path == "spec.tcp[0].route"
    assert "add up to 110" in message and "remove 10" in hint


def test_tls_route_without_sni_hosts() -> None:
    (problem,) = _violations(TCP_VS.replace("sniHosts: [mysql.default.svc.cluster.local]", "sniHosts: []"))
    path, message, hint = problem
    assert path == "spec.tls[0].match[0].sniHosts"
    assert "needs sniHosts" in message and "sniHosts: [mysql]" in hint
    (problem,) = _violations(TCP_VS.replace("  - match: [{port: 3307, sniHosts: [mysql.default.svc.cluster.local]}]\n", "  - "))
    assert problem[0] == "spec.tls[0].match"


def test_tls_sni_host_must_be_a_virtual_service_host() -> None:
    (problem,) = _violations(TCP_VS.replace("sniHosts: [mysql.default.svc.cluster.local]", "sniHosts: [other.example.com]"))
    assert problem[0] == "spec.tls[0].match[0].sniHosts[0]" and "not one of" in problem[1]


def test_tcp_match_source_labels_not_supported_yet() -> None:
    problems = _violations(TCP_VS.replace("match: [{port: 3306}]", "match: [{port: 3306, sourceLabels: {app: x}}]"))
    assert [p[0] for p in problems] == ["spec.tcp[0].match[0].sourceLabels"]
    assert "not supported by novamesh yet" in problems[0][1]


def _mesh(tmp_path: Path) -> Mesh:
    return Mesh(Settings(data_dir=str(tmp_path)), SqliteStore(tmp_path / "store.db"))


def test_two_sidecars_without_selector_in_one_namespace_store_nothing(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    mesh.apply([{"file": "a.yaml", "content": SIDECAR}])
    before = mesh.store.list()
    second = SIDECAR.replace("name: default", "name: other")
    with pytest.raises(ConfigError) as info:
        mesh.apply([{"file": "b.yaml", "content": second}])
    (v,) = info.value.violations
    assert v.name == "other" and v.path == "spec.workloadSelector"
    assert "already has a Sidecar without workloadSelector" in v.message and "shop/default" in v.hint
    assert mesh.store.list() == before
    # With a selector it is a different Sidecar, and fine.
    selected = second.replace("spec:\n", "spec:\n  workloadSelector: {labels: {app: cart}}\n")
    mesh.apply([{"file": "c.yaml", "content": selected}])
    assert len(mesh.store.list()) == 2


@pytest.mark.parametrize(
    "content",
    [
        SIDECAR.replace('"prod/reviews"', '"reviews"'),
        TCP_VS.replace("weight: 20", "weight: 30"),
        TCP_VS.replace("sniHosts: [mysql.default.svc.cluster.local]", "sniHosts: []"),
    ],
)
def test_bad_l4_and_sidecar_input_stores_nothing(tmp_path: Path, content: str) -> None:
    mesh = _mesh(tmp_path)
    with pytest.raises(ConfigError):
        mesh.apply([{"file": "bad.yaml", "content": content}])
    assert mesh.store.list() == []
