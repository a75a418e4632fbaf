"""Golden scenarios for AuthorizationPolicy, RequestAuthentication and path normalization:
ALLOW + DENY + AUDIT with every source / operation / condition field, an ALLOW without rules
(deny all), a RequestAuthentication with inline and remote JWKS, and a MeshConfig choosing
the normalization. Also policies on TCP ports (network RBAC on the plaintext, PERMISSIVE and
STRICT chains; HTTP-only fields dropped per Istio) and on an ingress gateway's HTTP listeners."""

from __future__ import annotations

import json
from typing import Any

from scenarios import BOOKINFO, FRONTEND, _snap, res, wl
from scenarios_mtls import TLS, meshed, pa

from novamesh.config.resource import Resource
from novamesh.config.types import SPEC_TYPES
from novamesh.model.proxy import Proxy, ProxyPort
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
        **_tcp_scenarios(),
        **_gateway_scenarios(authn),
        "authz_allow_deny_audit_jwt": (_snap([allow, deny, deny_nothing, audit, authn], BOOKINFO), FRONTEND),
        "authz_allow_without_rules_base_normalization": (
            _snap([deny_all, mesh_config({"pathNormalization": {"normalization": "BASE"}})], BOOKINFO), FRONTEND),
    }


# -- TCP ports ----------------------------------------------------------------------------------

DB = Proxy(
    id="db1", service="db", namespace="default", version="v1", address="127.1.0.30", service_account="db",
    labels=(("app", "db"), TLS, ("version", "v1")),
    ports=(ProxyPort(9080, "HTTP", "http", 40101), ProxyPort(3306, "TCP", "tcp", 40102), ProxyPort(8443, "HTTPS", "https", 40103)),
)
"""A meshed workload with an HTTP port, a plain TCP port (PERMISSIVE: mTLS and plaintext chains)
and a TLS-passthrough port (STRICT: the mTLS chain only)."""


def _tcp_scenarios() -> dict[str, tuple[MeshSnapshot, Proxy]]:
    workloads = [meshed(wl("db1", "db", "v1", "127.1.0.30", port=3306, protocol="TCP"), "db"), *BOOKINFO[:2]]
    strict_tls = pa("db-tls", {"selector": {"matchLabels": {"app": "db"}}, "portLevelMtls": {"8443": {"mode": "STRICT"}}})
    allow = sec("AuthorizationPolicy", "db-clients", {
        "selector": {"matchLabels": {"app": "db"}},
        "rules": [
            # TCP fields only: kept as is
            {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/reviews"], "notIpBlocks": ["127.9.0.0/16"]}}],
             "to": [{"operation": {"ports": ["3306", "8443"]}}],
             "when": [{"key": "connection.sni", "values": ["db.example.com"]}, {"key": "remote.ip", "notValues": ["10.0.0.1"]}]},
            # HTTP-only fields (methods, requestPrincipals, a header condition): the whole rule is dropped on TCP
            {"from": [{"source": {"namespaces": ["default"]}}], "to": [{"operation": {"methods": ["GET"], "ports": ["3306"]}}]},
            {"from": [{"source": {"requestPrincipals": ["*"]}}]},
            {"when": [{"key": "request.headers[x-team]", "values": ["ops"]}]},
        ],
    })
    deny = sec("AuthorizationPolicy", "db-deny", {
        "action": "DENY",
        "selector": {"matchLabels": {"app": "db"}},
        "rules": [
            # DENY keeps what TCP can match: ports 8443 from anyone but the admin namespace
            {"from": [{"source": {"notNamespaces": ["admin"], "notRequestPrincipals": ["*"]}}],
             "to": [{"operation": {"methods": ["POST"], "paths": ["/admin*"], "ports": ["8443"]}}],
             "when": [{"key": "request.auth.claims[role]", "values": ["guest"]}]},
            {"to": [{"operation": {"notPorts": ["3306", "8443", "9080"]}}]},
        ],
    })
    audit = sec("AuthorizationPolicy", "db-audit", {"action": "AUDIT", "rules": [{"to": [{"operation": {"paths": ["/audit"]}}]}]})
    only_http = sec("AuthorizationPolicy", "db-http-only", {
        "selector": {"matchLabels": {"app": "db"}},
        "rules": [{"to": [{"operation": {"methods": ["GET"], "ports": ["3306"]}}]}, {"to": [{"operation": {"hosts": ["db.example.com"]}}]}],
    })
    return {
        "authz_tcp_ports_permissive_and_strict": (_snap([allow, deny, audit, strict_tls], workloads), DB),
        # every ALLOW rule is HTTP-only: the TCP ALLOW filter has no policies (denies every connection)
        "authz_tcp_allow_http_only_denies_all": (_snap([only_http], workloads), DB),
    }


# -- gateways -----------------------------------------------------------------------------------

EDGE = Proxy(
    id="gw1", kind="gateway", service="istio-ingressgateway", namespace="istio-system", address="127.1.0.50",
    labels=(("app", "istio-ingressgateway"), ("istio", "ingressgateway")), ports=(ProxyPort(8080, "HTTP", "http-8080"),),
)


def _gateway_scenarios(authn: Resource) -> dict[str, tuple[MeshSnapshot, Proxy]]:
    gateway = res("Gateway", "edge", {
        "selector": {"istio": "ingressgateway"},
        "servers": [{"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["shop.example.com"]}],
    }, namespace="istio-system")
    vs = res("VirtualService", "shop", {
        "hosts": ["shop.example.com"], "gateways": ["istio-system/edge"],
        "http": [{"route": [{"destination": {"host": "frontend", "port": {"number": 9080}}}]}],
    })
    edge_allow = sec("AuthorizationPolicy", "edge-allow", {
        "selector": {"matchLabels": {"istio": "ingressgateway"}},
        "rules": [{"from": [{"source": {"remoteIpBlocks": ["203.0.113.0/24"]}}, {"source": {"ipBlocks": ["127.0.0.0/8"]}}],
                   "to": [{"operation": {"notPaths": ["/internal/*"]}}]}],
    }, namespace="istio-system")
    edge_deny = sec("AuthorizationPolicy", "edge-deny", {
        "action": "DENY", "selector": {"matchLabels": {"istio": "ingressgateway"}},
        "rules": [{"to": [{"operation": {"paths": ["/admin", "/admin/*"]}}]}],
    }, namespace="istio-system")
    # a policy in another namespace never applies to the gateway in istio-system, whatever its selector
    elsewhere = sec("AuthorizationPolicy", "not-for-gateway", {"selector": {"matchLabels": {"istio": "ingressgateway"}}})
    edge_jwt = sec("RequestAuthentication", "edge-jwt", {
        "selector": {"matchLabels": {"istio": "ingressgateway"}}, **authn.manifest["spec"]}, namespace="istio-system")
    return {
        "authz_gateway_ip_path_jwt": (_snap([gateway, vs, edge_allow, edge_deny, elsewhere, edge_jwt], BOOKINFO), EDGE),
        # only a policy of another namespace selects these labels: the gateway is unchanged
        "authz_gateway_policy_elsewhere": (_snap([gateway, vs, elsewhere], BOOKINFO), EDGE),
    }
