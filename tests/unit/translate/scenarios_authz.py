"""Golden scenarios for AuthorizationPolicy, RequestAuthentication and path normalization:
ALLOW + DENY + AUDIT with every source / operation / condition field, an ALLOW without rules
(deny all), a RequestAuthentication with inline and remote JWKS, and a MeshConfig choosing
the normalization."""

from __future__ import annotations

import json
from typing import Any

from scenarios import BOOKINFO, FRONTEND, _snap

from novamesh.config.resource import Resource
from novamesh.config.types import SPEC_TYPES
from novamesh.model.proxy import Proxy
from novamesh.model.snapshot import MeshSnapshot

JWKS = json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "e": "AQAB",
                             "n": "2MkDSJ3vTC9PQYsPAtDtgTYrAULP24srBQaQCcTDJ5z4eNMa9NjjCtV6bHLEiRLIVSq6G5ZX5IgZAsoF52o3_sH69gBq9hw3R-iNZWoI82VgJOrg_cNb-WZE"
                                     "Kn1Sk6xQ8JW_sazrts6kmKtlnOR8V09Ch8-IX-mFvBLZ_wtIZ6HsAI1Uj7bbSMBdISCE1QyRe8wl8IeaqK8dGLWgfUCalmUb1Y5KiymMZR1kgFTGEqNM7XAzY5_hhSsJuxPjBjOuinX4Uku3MY1LEokYzkTnU_8k5ffbJ821W0g1pej85U_BM2CXEDr6N20rcovT49FtmQwGvBKRaoSBoVZ1ZZDidw"}]})


def sec(kind: str, name: str, spec: dict[str, Any], namespace: str = "default") -> Resource:
    """A security.istio.io/v1 resource."""
    api = "security.istio.io/v1"
    manifest = {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    return Resource(kind, name, namespace, api, SPEC_TYPES[kind].model_validate(spec), manifest)


def mesh_config(spec: dict[str, Any]) -> Resource:
    api = "novamesh.io/v1alpha1"
    manifest = {"apiVersion": api, "kind": "MeshConfig", "metadata": {"name": "default", "namespace": "istio-system"}, "spec": spec}
    return Resource("MeshConfig", "default", "istio-system", api, SPEC_TYPES["MeshConfig"].model_validate(spec), manifest)


def scenarios() -> dict[str, tuple[MeshSnapshot, Proxy]]:
    allow = sec("AuthorizationPolicy", "frontend-allow", {
        "selector": {"matchLabels": {"app": "frontend"}},
        "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/reviews", "*/sa/admin"],
                                  "notNamespaces": ["untrusted*"]}},
                      {"source": {"ipBlocks": ["127.1.0.0/16"], "notIpBlocks": ["127.1.0.9"], "remoteIpBlocks": ["10.0.0.0/8"]}}],
             "to": [{"operation": {"hosts": ["Frontend.example.com", "*.internal"], "ports": ["9080"],
                                   "methods": ["GET", "HEAD"], "paths": ["/api/*", "*.html", "/exact"], "notPaths": ["/api/admin*"]}}],
             "when": [{"key": "request.headers[x-team]", "values": ["pay*"]},
                      {"key": "request.auth.claims[groups]", "values": ["admins"]},
                      {"key": "request.auth.claims[realm][role]", "notValues": ["guest"]},
                      {"key": "source.ip", "values": ["127.0.0.1"]},
                      {"key": "destination.port", "values": ["9080"]},
                      {"key": "connection.sni", "values": ["*.svc.cluster.local"]},
                      {"key": "request.auth.principal", "values": ["https://issuer.example/alice"]},
                      {"key": "source.namespace", "values": ["default"]}]},
            {"from": [{"source": {"requestPrincipals": ["*"], "namespaces": ["prod-*"]}}]},
        ],
    })
    deny = sec("AuthorizationPolicy", "deny-admin", {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]}]})
    deny_nothing = sec("AuthorizationPolicy", "deny-nothing", {"action": "DENY"})
    audit = sec("AuthorizationPolicy", "audit-all", {"action": "AUDIT", "rules": [{}]}, namespace="istio-system")
    deny_all = sec("AuthorizationPolicy", "deny-all", {})
    authn = sec("RequestAuthentication", "jwt", {
        "jwtRules": [
            {"issuer": "https://issuer.example", "jwks": JWKS, "audiences": ["frontend"], "forwardOriginalToken": True,
             "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}], "fromParams": ["token"], "outputPayloadToHeader": "x-jwt-payload"},
            {"issuer": "https://other.example", "jwksUri": "https://keys.other.example/jwks.json"},
            {"issuer": "local", "jwksUri": "http://127.0.0.1:8899/jwks"},
        ],
    })
    return {
        "authz_allow_deny_audit_jwt": (_snap([allow, deny, deny_nothing, audit, authn], BOOKINFO), FRONTEND),
        "authz_allow_without_rules_base_normalization": (
            _snap([deny_all, mesh_config({"pathNormalization": {"normalization": "BASE"}})], BOOKINFO), FRONTEND),
    }
