"""AuthorizationPolicy and RequestAuthentication (security.istio.io): accepted input, bad input
rejected with the field path and a hint (nothing stored), kind aliases, which policies apply
to a workload, and the RBAC / JWT shapes the semantics rest on."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from novamesh.config import parse_documents
from novamesh.config._semantic_authz import parse_when_key
from novamesh.config.names import canonical_kind
from novamesh.controlplane.mesh import Mesh
from novamesh.errors import ConfigError
from novamesh.model.snapshot import build_snapshot
from novamesh.settings import Settings
from novamesh.store import SqliteStore
from novamesh.translate.authz import AuthzPlan, rbac_filters, resolve_authz

POLICY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: [cluster.local/ns/default/sa/sleep], notNamespaces: [dev]}
    - source: {requestPrincipals: ["https://issuer.example/*"], ipBlocks: [10.0.0.0/16], notRemoteIpBlocks: [1.2.3.4]}
    to:
    - operation: {methods: [GET], paths: [/info*], notPaths: ["*.secret"], hosts: [Example.com], ports: ["8000"]}
    when:
    - {key: "request.auth.claims[iss]", values: ["https://accounts.google.com"]}
    - {key: "request.auth.claims[realm][role]", notValues: [guest]}
    - {key: "request.headers[x-token]", values: ["*"]}
    - {key: source.ip, values: [10.1.0.0/16]}
    - {key: destination.port, values: ["8000"]}
"""

AUTHN = """\
apiVersion: security.istio.io/v1beta1
kind: RequestAuthentication
metadata: {name: jwt, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  jwtRules:
  - issuer: https://issuer.example
    jwksUri: https://issuer.example/jwks.json
    audiences: [httpbin]
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    fromParams: [token]
    forwardOriginalToken: true
"""


def _violations(text: str) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_documents(textwrap.dedent(text), "bad.yaml")
    return [(v.path, v.message, v.hint) for v in info.value.violations]


def test_policy_and_authn_are_accepted_in_both_versions() -> None:
    for version in ("v1", "v1beta1"):
        (ap,) = parse_documents(POLICY.replace("security.istio.io/v1", f"security.istio.io/{version}"))
        (ra,) = parse_documents(AUTHN.replace("security.istio.io/v1beta1", f"security.istio.io/{version}"))
        assert ap.kind == "AuthorizationPolicy" and ra.kind == "RequestAuthentication"


@pytest.mark.parametrize("alias,kind", [("ap", "AuthorizationPolicy"), ("authorizationpolicies", "AuthorizationPolicy"),
                                        ("AuthorizationPolicy", "AuthorizationPolicy"), ("ra", "RequestAuthentication"),
                                        ("requestauthentications", "RequestAuthentication")])
def test_kind_aliases(alias: str, kind: str) -> None:
    assert canonical_kind(alias) == kind


@pytest.mark.parametrize("old,new,path,message", [
    ("action: ALLOW", "action: PERMIT", "spec.action", "expected one of ALLOW, DENY, AUDIT, CUSTOM"),
    ("action: ALLOW", "action: CUSTOM", "spec.action", "CUSTOM (external authorization) is not supported"),
    ("cluster.local/ns/default/sa/sleep", "spiffe://cluster.local/ns/default/sa/sleep",
     "spec.rules[0].from[0].source.principals[0]", "malformed principal"),
    ("cluster.local/ns/default/sa/sleep", "sleep", "spec.rules[0].from[0].source.principals[0]", "malformed principal"),
    ("cluster.local/ns/default/sa/sleep", "cluster.local/*/sa/sleep", "spec.rules[0].from[0].source.principals[0]", "`*` may appear only"),
    ("10.0.0.0/16", "10.0.0.0/33", "spec.rules[0].from[1].source.ipBlocks[0]", "not an IP address or CIDR"),
    ("notRemoteIpBlocks: [1.2.3.4]", "notRemoteIpBlocks: []", "spec.rules[0].from[1].source.notRemoteIpBlocks", "empty list"),
    ('ports: ["8000"]', 'ports: ["http"]', "spec.rules[0].to[0].operation.ports[0]", "not a port number"),
    ("paths: [/info*]", "paths: [info]", "spec.rules[0].to[0].operation.paths[0]", "does not start with /"),
    ("key: source.ip", "key: source.ipaddr", "spec.rules[0].when[3].key", "unsupported when key"),
    ("key: \"request.headers[x-token]\"", "key: \"request.headers[]\"", "spec.rules[0].when[2].key", "unsupported when key"),
    ("values: [10.1.0.0/16]", "values: [ten]", "spec.rules[0].when[3].values[0]", "not an IP address"),
    ("notValues: [guest]", "notValues: []", "spec.rules[0].when[1]", "neither values nor notValues"),
    ("  - from:\n", "  - from:\n    - source: {}\n", "spec.rules[0].from[0].source", "empty source"),
    ("action: ALLOW", "action: ALLOW\n  targetRef: {kind: Gateway, name: gw}", "spec.targetRef", "not supported"),
])
def test_bad_policy_names_the_field(old: str, new: str, path: str, message: str) -> None:
    assert old in POLICY
    problems = _violations(POLICY.replace(old, new))
    assert any(p == path and message in m and h for p, m, h in problems), problems


@pytest.mark.parametrize("old,new,path,message", [
    ("  - issuer: https://issuer.example\n", "  - audiences: [x]\n", "spec.jwtRules[0].issuer", "JWT rule without issuer"),
    ("jwksUri: https://issuer.example/jwks.json", "jwksUri: ftp://issuer.example/jwks.json", "spec.jwtRules[0].jwksUri", "not an http(s) URL"),
    ("jwksUri: https://issuer.example/jwks.json", "jwks: 'not json'", "spec.jwtRules[0].jwks", "not a JSON Web Key Set"),
    ("    jwksUri: https://issuer.example/jwks.json\n", "", "spec.jwtRules[0]", "neither jwks nor jwksUri"),
    ("name: x-jwt", "name: 'x jwt'", "spec.jwtRules[0].fromHeaders[0].name", "not a header name"),
])
def test_bad_request_authentication_names_the_field(old: str, new: str, path: str, message: str) -> None:
    assert old in AUTHN
    problems = _violations(AUTHN.replace(old, new))
    assert any(p == path and message in m and h for p, m, h in problems), problems


def test_rejected_policy_stores_nothing(tmp_path: Path) -> None:
    mesh = Mesh(Settings(data_dir=str(tmp_path)), SqliteStore(tmp_path / "store.db"))
    good = POLICY.replace("name: httpbin", "name: good")
    bad = POLICY.replace("10.0.0.0/16", "10.0.0.300/16")
    with pytest.raises(ConfigError) as info:
        mesh.apply([{"file": "bad.yaml", "content": good + "---\n" + bad}])
    assert any(v.path == "spec.rules[0].from[1].source.ipBlocks[0]" and v.file == "bad.yaml" for v in info.value.violations)
    assert mesh.store.list() == []
    mesh.apply([{"file": "ok.yaml", "content": good + "---\n" + AUTHN}])
    assert len(mesh.store.list()) == 2


def test_when_keys_parse_nested_claims() -> None:
    assert parse_when_key("request.auth.claims[realm][role]") == ("request.auth.claims", ("realm", "role"))
    assert parse_when_key("request.headers[X-Team]") == ("request.headers", ("X-Team",))
    assert parse_when_key("request.headers[a][b]") is None
    assert parse_when_key("destination.port") == ("destination.port", ())
    assert parse_when_key("request.auth.claims") is None


def _snapshot(text: str) -> Any:
    docs = parse_documents(textwrap.dedent(text))
    return build_snapshot({r.key: r for r in docs}, [], revision=1, registry_version=1)


def test_which_policies_apply() -> None:
    snap = _snapshot(POLICY + "---\n" + POLICY.replace("name: httpbin, namespace: foo", "name: mesh, namespace: istio-system")
                     .replace("  selector: {matchLabels: {app: httpbin}}\n", ""))
    mine = json.loads(resolve_authz(snap, "foo", {"app": "httpbin"}).filters)
    other_app = json.loads(resolve_authz(snap, "foo", {"app": "other"}).filters)
    other_ns = json.loads(resolve_authz(snap, "bar", {"app": "httpbin"}).filters)
    names = lambda fs: sorted(p for f in fs for p in f["typed_config"]["rules"]["policies"])  # noqa: E731
    assert names(mine) == ["ns[foo]-policy[httpbin]-rule[0]", "ns[istio-system]-policy[mesh]-rule[0]"]
    assert names(other_app) == names(other_ns) == ["ns[istio-system]-policy[mesh]-rule[0]"]
    assert resolve_authz(_snapshot(AUTHN), "bar", {}) == AuthzPlan()  # nothing applies: nothing added


def _filters(text: str) -> list[dict[str, Any]]:
    docs = parse_documents(textwrap.dedent(text))
    return rbac_filters(docs)


def test_empty_rules_semantics() -> None:
    head = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\n"
    (deny_all,) = _filters(head + "spec: {}\n")
    assert deny_all["typed_config"]["rules"] == {"action": "ALLOW", "policies": {}}
    (allow_all,) = _filters(head + "spec: {rules: [{}]}\n")
    assert allow_all["typed_config"]["rules"]["policies"]["ns[default]-policy[p]-rule[0]"] == {
        "permissions": [{"any": True}], "principals": [{"any": True}]}
    assert _filters(head + "spec: {action: DENY}\n") == []  # DENY without rules denies nothing
    both = _filters(head + "spec: {action: DENY, rules: [{}]}\n---\n" + head.replace("name: p", "name: q") + "spec: {rules: [{}]}\n")
    assert [f["name"] for f in both] == ["envoy.filters.http.rbac.deny", "envoy.filters.http.rbac.allow"]


def test_matchers_follow_istio_syntax() -> None:
    (f,) = _filters(POLICY)
    policy = f["typed_config"]["rules"]["policies"]["ns[foo]-policy[httpbin]-rule[0]"]
    text = json.dumps(policy)
    assert '"principal_name": {"exact": "spiffe://cluster.local/ns/default/sa/sleep"}' in text
    assert '"regex": "spiffe://[^/]+/ns/dev/sa/[^/]+"' in text  # namespaces: the principal's ns segment
    assert '"url_path": {"path": {"prefix": "/info"}}' in text
    assert '"not_rule": {"url_path": {"path": {"suffix": ".secret"}}}' in text
    assert '(?i)Example\\\\.com(:[0-9]+)?' in text  # hosts: any case, with or without port
    assert '"present_match": true' in text
    assert '"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 16}' in text
    assert '"key": "realm"}, {"key": "role"}' in text.replace('"key": "payload"}, {"key": "realm"', '"key": "realm"')


def test_mesh_config_path_normalization() -> None:
    mc = "apiVersion: novamesh.io/v1alpha1\nkind: MeshConfig\nmetadata: {name: default, namespace: istio-system}\nspec:\n"
    snap = _snapshot(mc + "  pathNormalization: {normalization: NONE}\n")
    assert resolve_authz(snap, "foo", {}).normalization == "NONE"  # explicit: every inbound listener
    assert resolve_authz(_snapshot(POLICY), "foo", {"app": "httpbin"}).normalization == "DECODE_AND_MERGE_SLASHES"
    assert any("NORMAL" in m for _, m, _ in _violations(mc + "  pathNormalization: {normalization: NORMAL}\n"))


def test_path_normalization_setting() -> None:
    import dataclasses
    snap = _snapshot(POLICY)
    assert resolve_authz(dataclasses.replace(snap, path_normalization="base"), "bar", {}).normalization == "BASE"
    assert resolve_authz(dataclasses.replace(snap, path_normalization="bogus"), "foo", {"app": "httpbin"}).normalization == "DECODE_AND_MERGE_SLASHES"
    assert resolve_authz(dataclasses.replace(snap, path_normalization=""), "bar", {}) == AuthzPlan()
