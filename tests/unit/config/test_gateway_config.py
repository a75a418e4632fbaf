"""Gateway config: the model, its checks, VirtualService references to Gateways, and the
rejection of bad input through Mesh.apply (nothing stored)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from novamesh.config import parse_documents
from novamesh.config.names import canonical_kind, resolve_gateway
from novamesh.config.types_gateway import (
    GatewaySpec,
    host_intersection,
    server_host_parts,
)
from novamesh.controlplane.mesh import Mesh
from novamesh.errors import ConfigError, Violation
from novamesh.settings import Settings
from novamesh.store import SqliteStore

GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*.example.com"]
  - port: {number: 8443, name: https, protocol: https}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, serverCertificate: /certs/tls.crt, privateKey: /certs/tls.key}
"""

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/ingress]
  http:
  - route: [{destination: {host: frontend}}]
"""


def gateway(servers: str, selector: str = "{istio: ingressgateway}") -> str:
    body = textwrap.indent(textwrap.dedent(servers).strip(), "  ")
    return f"""\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  selector: {selector}
  servers:
{body}
"""


def problems(text: str) -> list[Violation]:
    with pytest.raises(ConfigError) as info:
        parse_documents(text, "gw.yaml")
    return info.value.violations


def paths(text: str) -> dict[str, Violation]:
    return {v.path: v for v in problems(text)}


def test_gateway_parses_with_istio_fields() -> None:
    (resource,) = parse_documents(GATEWAY, "gw.yaml")
    spec = resource.spec
    assert isinstance(spec, GatewaySpec)
    assert spec.servers[1].port.protocol == "HTTPS"  # any case, stored upper case
    assert spec.servers[1].tls is not None and spec.servers[1].tls.mode == "SIMPLE"
    assert canonical_kind("gw") == canonical_kind("gateways") == "Gateway"


def test_two_servers_on_one_port_with_different_protocols_clash() -> None:
    found = paths(gateway("""
        - port: {number: 8080, name: http, protocol: HTTP}
          hosts: [a.example.com]
        - port: {number: 8080, name: https, protocol: HTTPS}
          hosts: [b.example.com]
          tls: {mode: SIMPLE, serverCertificate: /c.crt, privateKey: /c.key}
    """))
    v = found["spec.servers[1].port.protocol"]
    assert "port 8080 is already served with protocol HTTP by spec.servers[0]" in v.message
    assert "another port" in v.hint and v.line == 9  # the second server's port line


def test_same_host_twice_on_one_port_clashes() -> None:
    found = paths(gateway("""
        - port: {number: 8080, name: http, protocol: HTTP}
          hosts: [a.example.com]
        - port: {number: 8080, name: http-2, protocol: HTTP}
          hosts: [b.example.com, a.example.com]
    """))
    v = found["spec.servers[1].hosts[1]"]
    assert "host 'a.example.com' is served twice on port 8080 (also spec.servers[0].hosts[0])" in v.message
    assert v.hint


def test_tls_simple_without_certificate_files_is_rejected() -> None:
    found = paths(gateway("""
        - port: {number: 8443, name: https, protocol: HTTPS}
          hosts: [a.example.com]
          tls: {mode: SIMPLE}
    """))
    assert set(found) == {"spec.servers[0].tls.serverCertificate", "spec.servers[0].tls.privateKey"}
    assert "needs 'serverCertificate'" in found["spec.servers[0].tls.serverCertificate"].message
    assert "serverCertificate: /" in found["spec.servers[0].tls.serverCertificate"].hint


def test_unknown_tls_mode_is_rejected_with_the_choices() -> None:
    found = paths(gateway("""
        - port: {number: 8443, name: https, protocol: HTTPS}
          hosts: [a.example.com]
          tls: {mode: SIMPEL, serverCertificate: /c.crt, privateKey: /c.key}
    """))
    v = found["spec.servers[0].tls.mode"]
    assert "SIMPEL" in v.message and "SIMPLE" in v.message
    assert v.hint == "did you mean 'SIMPLE'?"


@pytest.mark.parametrize(
    ("servers", "path", "words"),
    [
        ("""
        - port: {number: 8443, name: https, protocol: HTTPS}
          hosts: [a.example.com]
          tls: {mode: SIMPLE, credentialName: shop-cert}
        """, "spec.servers[0].tls.credentialName", "not supported yet"),
        ("""
        - port: {number: 8443, name: https, protocol: HTTPS}
          hosts: [a.example.com]
          tls: {mode: PASSTHROUGH}
        """, "spec.servers[0].tls.mode", "PASSTHROUGH is not supported yet"),
        ("""
        - port: {number: 8443, name: https, protocol: HTTPS}
          hosts: [a.example.com]
        """, "spec.servers[0].tls", "HTTPS server needs TLS settings"),
        ("""
        - port: {number: 8443, name: https, protocol: HTTPS}
          hosts: [a.example.com]
          tls: {mode: SIMPLE, serverCertificate: certs/tls.crt, privateKey: /c.key}
        """, "spec.servers[0].tls.serverCertificate", "not an absolute path"),
        ("""
        - port: {number: 8443, name: https, protocol: HTTPS}
          hosts: [a.example.com]
          tls: {mode: MUTUAL, serverCertificate: /c.crt, privateKey: /c.key}
        """, "spec.servers[0].tls.caCertificates", "needs 'caCertificates'"),
        ("""
        - port: {number: 8080, name: http, protocol: HTTP}
          hosts: [a.example.com]
          tls: {mode: SIMPLE, serverCertificate: /c.crt, privateKey: /c.key}
        """, "spec.servers[0].tls", "cannot terminate TLS"),
        ("""
        - port: {number: 31400, name: tcp, protocol: TCP}
          hosts: [a.example.com]
        """, "spec.servers[0].port.protocol", "not supported yet"),
        ("""
        - port: {number: 8080, protocol: HTTP}
          hosts: [a.example.com]
        """, "spec.servers[0].port.name", "missing required field"),
        ("""
        - port: {number: 8080, name: http, protocol: HTTP}
          hosts: ["bad_ns/a.example.com"]
        """, "spec.servers[0].hosts[0]", "is not a namespace"),
        ("""
        - port: {number: 8080, name: http, protocol: HTTP}
          hosts: [a.example.com]
          bind: 127.0.0.1
        """, "spec.servers[0].bind", "Istio field 'bind' is not supported by novamesh yet"),
    ],
)
def test_bad_servers_are_rejected_with_path_and_hint(servers: str, path: str, words: str) -> None:
    found = paths(gateway(servers))
    assert path in found, found
    assert words in found[path].message and found[path].hint


def test_empty_selector_is_rejected() -> None:
    found = paths(gateway("""
        - port: {number: 8080, name: http, protocol: HTTP}
          hosts: [a.example.com]
    """, selector="{}"))
    assert "needs a selector" in found["spec.selector"].message


def test_virtual_service_gateway_reference_syntax() -> None:
    bad = VS.replace("[istio-system/ingress]", "[mesh, 'a/b/c', Bad_Name]")
    found = paths(bad)
    assert set(found) == {"spec.gateways[1]", "spec.gateways[2]"}
    assert "not a gateway reference" in found["spec.gateways[1]"].message
    match = VS.replace("- route:", "- match: [{gateways: ['x/']}]\n    route:")
    assert "spec.http[0].match[0].gateways[0]" in paths(match)


def test_naming_helpers() -> None:
    assert resolve_gateway("ingress", "shop") == "shop/ingress"
    assert resolve_gateway("istio-system/ingress", "shop") == "istio-system/ingress"
    assert resolve_gateway("mesh", "shop") == "mesh"
    assert server_host_parts("./a.example.com") == (".", "a.example.com")
    assert server_host_parts("A.example.com") == ("*", "a.example.com")
    assert host_intersection("*.example.com", "shop.example.com") == "shop.example.com"
    assert host_intersection("shop.example.com", "*") == "shop.example.com"
    assert host_intersection("a.example.com", "b.example.com") is None


# -- through Mesh.apply: cross-resource checks, nothing stored ----------------------------------
def _mesh(tmp_path: Path) -> Mesh:
    return Mesh(Settings(data_dir=str(tmp_path)), SqliteStore(tmp_path / "store.db"))


def _apply_fails(mesh: Mesh, content: str) -> list[Violation]:
    before = (mesh.store.current_revision(), mesh.store.list())
    with pytest.raises(ConfigError) as info:
        mesh.apply([{"file": "bad.yaml", "content": content}])
    assert (mesh.store.current_revision(), mesh.store.list()) == before  # nothing stored
    return info.value.violations


def test_virtual_service_naming_a_missing_gateway_is_rejected(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    (v,) = _apply_fails(mesh, VS)
    assert v.code == "IST0101" and v.path == "spec.gateways[0]"
    assert "Gateway istio-system/ingress does not exist" in v.message and v.hint
    short = VS.replace("istio-system/ingress", "ingress")  # resolves in the VS's namespace
    mesh.apply([{"file": "gw.yaml", "content": GATEWAY}])
    (v,) = _apply_fails(mesh, short)
    assert "Gateway default/ingress does not exist" in v.message
    assert "istio-system/ingress" in v.hint  # the one the user probably meant


def test_gateway_and_virtual_service_apply_together(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    result = mesh.apply([{"file": "a.yaml", "content": GATEWAY + "---\n" + VS}])
    assert [c["kind"] for c in result.changes] == ["Gateway", "VirtualService"]


def test_virtual_service_hosts_must_meet_the_gateway_hosts(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    other = VS.replace("hosts: [shop.example.com]", "hosts: [shop.other.org]")
    (v,) = _apply_fails(mesh, GATEWAY + "---\n" + other)
    assert v.code == "IST0132" and "none of the hosts" in v.message and "*.example.com" in v.message


def test_deleting_a_gateway_in_use_is_refused(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    mesh.apply([{"file": "a.yaml", "content": GATEWAY + "---\n" + VS}])
    with pytest.raises(ConfigError) as info:
        mesh.delete([("Gateway", "istio-system", "ingress")])
    (v,) = info.value.violations
    assert v.kind == "VirtualService" and "would break it" in v.message
    assert len(mesh.store.list()) == 2
