"""AuthorizationPolicy rules as a TCP connection sees them (Istio's HTTP-only field handling)."""

from __future__ import annotations

import json

from scenarios_authz import sec

from novamesh.config.types_authz import Rule
from novamesh.translate.authz import network_rbac_filters
from novamesh.translate.authz_tcp import guard_tcp_chains, http_only_fields, rule_for_tcp

MIXED = Rule.model_validate({
    "from": [{"source": {"principals": ["cluster.local/ns/default/sa/a"], "notRequestPrincipals": ["*"]}}],
    "to": [{"operation": {"ports": ["3306"], "notPaths": ["/x"]}}],
    "when": [{"key": "request.headers[x-team]", "values": ["ops"]}, {"key": "destination.port", "values": ["3306"]}],
})  # fmt: skip


def test_http_only_fields_named_as_written() -> None:
    assert http_only_fields(MIXED) == ["from.source.notRequestPrincipals", "to.operation.notPaths", "when[request.headers[x-team]]"]
    assert http_only_fields(Rule.model_validate({"to": [{"operation": {"ports": ["1"]}}]})) == []


def test_allow_drops_the_rule_deny_and_audit_drop_only_the_fields() -> None:
    assert rule_for_tcp(MIXED, "ALLOW") is None
    for action in ("DENY", "AUDIT"):
        stripped = rule_for_tcp(MIXED, action)
        assert stripped is not None and http_only_fields(stripped) == []
        assert stripped.from_[0].source.principals == ["cluster.local/ns/default/sa/a"]
        assert stripped.to[0].operation.ports == ["3306"]
        assert [c.key for c in stripped.when] == ["destination.port"]
    tcp_only = Rule.model_validate({"to": [{"operation": {"ports": ["3306"]}}]})
    assert rule_for_tcp(tcp_only, "ALLOW") is tcp_only


def test_deny_with_only_http_fields_matches_every_connection() -> None:
    policy = sec("AuthorizationPolicy", "deny-get", {"action": "DENY", "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]})
    [deny] = network_rbac_filters([policy])
    rules = deny["typed_config"]["rules"]
    assert rules == {"action": "DENY", "policies": {"ns[default]-policy[deny-get]-rule[0]": {
        "permissions": [{"any": True}], "principals": [{"any": True}]}}}  # fmt: skip


def test_allow_with_only_http_rules_still_applies_and_allows_nothing() -> None:
    policy = sec("AuthorizationPolicy", "get-only", {"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]})
    [allow] = network_rbac_filters([policy])
    assert allow["typed_config"]["rules"] == {"action": "ALLOW", "policies": {}}


def test_only_tcp_proxy_chains_are_guarded() -> None:
    tcp = {"filters": [{"name": "envoy.filters.network.tcp_proxy"}]}
    http = {"filters": [{"name": "envoy.filters.network.http_connection_manager"}]}
    listener = {"filter_chains": [tcp, http], "default_filter_chain": json.loads(json.dumps(tcp))}
    guard_tcp_chains(listener, [{"name": "rbac"}])
    assert [f["name"] for f in listener["filter_chains"][0]["filters"]] == ["rbac", "envoy.filters.network.tcp_proxy"]
    assert [f["name"] for f in listener["filter_chains"][1]["filters"]] == ["envoy.filters.network.http_connection_manager"]
    assert [f["name"] for f in listener["default_filter_chain"]["filters"]] == ["rbac", "envoy.filters.network.tcp_proxy"]
