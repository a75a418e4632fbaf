"""RequestAuthentication → Envoy's ``jwt_authn`` HTTP filter (and one cluster per JWKS host).

Istio's semantics: a request without a token passes (a policy's ``requestPrincipals`` enforces
it, with 403); a token that is present but invalid (signature, expiry, audience, issuer) is
refused with 401. The verified payload is stored as filter metadata
(``envoy.filters.http.jwt_authn`` → ``payload``), which the RBAC filters of translate/authz.py
match for ``requestPrincipals`` (``<iss>/<sub>``) and ``request.auth.claims[...]``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ..config.types_authz import JWTRule

__all__ = ["JWT_FILTER", "JWT_AUTHN", "PAYLOAD_KEY", "jwks_cluster_name", "jwt_filter", "jwt_clusters", "SYSTEM_CA_BUNDLE",
           "AUDIENCE_AS_401"]

JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_AUTHN = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
PAYLOAD_KEY = "payload"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
"""CA bundle an https ``jwksUri`` is verified against (Debian's system bundle)."""
AUDIENCE_AS_401: dict[str, Any] = {"mappers": [{
    "filter": {"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
            "expression": "response.code == 403 && response.code_details.startsWith('jwt_authn_access_denied')",
        },
    }},
    "status_code": 401,
}]}
"""HCM ``local_reply_config``: jwt_authn answers a wrong audience with 403; it is an invalid
token like the others (RFC 6750 ``invalid_token``), so novamesh answers 401 for every
verification failure, as the policy model promises."""
_JWKS_CACHE = "300s"
_JWKS_TIMEOUT = "5s"


def _host_port(uri: str) -> tuple[str, int, bool]:
    url = urlsplit(uri)
    tls = url.scheme == "https"
    return (url.hostname or ""), (url.port or (443 if tls else 80)), tls


def jwks_cluster_name(uri: str) -> str:
    """``jwks|<host>|<port>``: one cluster per JWKS server."""
    host, port, _ = _host_port(uri)
    return f"jwks|{host}|{port}"


def _provider(rule: JWTRule) -> dict[str, Any]:
    p: dict[str, Any] = {"issuer": rule.issuer, "payload_in_metadata": PAYLOAD_KEY, "forward": rule.forward_original_token}
    if rule.audiences:
        p["audiences"] = list(rule.audiences)
    if rule.jwks:
        p["local_jwks"] = {"inline_string": rule.jwks}
    else:
        p["remote_jwks"] = {
            "http_uri": {"uri": rule.jwks_uri, "cluster": jwks_cluster_name(rule.jwks_uri), "timeout": _JWKS_TIMEOUT},
            "cache_duration": _JWKS_CACHE,
        }
    if rule.from_headers:
        p["from_headers"] = [{"name": h.name, "value_prefix": h.prefix} for h in rule.from_headers]
    if rule.from_params:
        p["from_params"] = list(rule.from_params)
    if rule.output_payload_to_header:
        p["forward_payload_header"] = rule.output_payload_to_header
    return p


def jwt_filter(rules: Sequence[JWTRule]) -> dict[str, Any]:
    """The jwt_authn filter: any provider's valid token, or no token at all (Istio)."""
    providers = {f"origins-{i}": _provider(r) for i, r in enumerate(rules)}
    requirements: list[dict[str, Any]] = [{"provider_name": name} for name in providers]
    requirements.append({"allow_missing": {}})
    return {
        "name": JWT_FILTER,
        "typed_config": {
            "@type": JWT_AUTHN,
            "providers": providers,
            "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": requirements}}}],
        },
    }


def jwt_clusters(rules: Sequence[JWTRule]) -> dict[str, dict[str, Any]]:
    """One cluster per ``jwksUri`` server (TLS for https, verified against the system bundle)."""
    out: dict[str, dict[str, Any]] = {}
    for rule in rules:
        if not rule.jwks_uri:
            continue
        host, port, tls = _host_port(rule.jwks_uri)
        try:
            ipaddress.ip_address(host)
            kind = "STATIC"
        except ValueError:
            kind = "STRICT_DNS"
        name = jwks_cluster_name(rule.jwks_uri)
        cluster: dict[str, Any] = {
            "name": name,
            "type": kind,
            "connect_timeout": _JWKS_TIMEOUT,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]},
        }
        if tls:
            cluster["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": host,
                    "common_tls_context": {"validation_context": {"trusted_ca": {"filename": SYSTEM_CA_BUNDLE}}},
                },
            }
        out[name] = cluster
    return out
