"""Typed models of Istio's security kinds AuthorizationPolicy and RequestAuthentication
(``security.istio.io/v1`` and ``v1beta1``).

Field names follow Istio's YAML exactly (camelCase aliases, unknown fields rejected). Real Istio
fields the data plane does not honour yet (``targetRef``, ``provider``...) are listed in
``AUTHZ_NOT_YET_SUPPORTED`` and rejected by name. Semantic checks live in
:mod:`._semantic_authz`; translation in :mod:`novamesh.translate.authz` and
:mod:`novamesh.translate.jwt`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .base import Spec

__all__ = [
    "AUTHZ_NOT_YET_SUPPORTED",
    "SECURITY_GROUP",
    "PolicySelector",
    "Source",
    "Operation",
    "RuleFrom",
    "RuleTo",
    "Condition",
    "Rule",
    "AuthorizationPolicySpec",
    "JWTHeader",
    "JWTRule",
    "RequestAuthenticationSpec",
    "PathNormalization",
]

SECURITY_GROUP = "security.istio.io"
"""API group of AuthorizationPolicy and RequestAuthentication."""


class PolicySelector(Spec):
    """Istio's ``istio.type.v1beta1.WorkloadSelector`` (``matchLabels``)."""

    match_labels: dict[str, str] = Field(default_factory=dict)


class Source(Spec):
    """Who sends the request (every set field must match)."""

    principals: list[str] | None = None
    not_principals: list[str] | None = None
    request_principals: list[str] | None = None
    not_request_principals: list[str] | None = None
    namespaces: list[str] | None = None
    not_namespaces: list[str] | None = None
    ip_blocks: list[str] | None = None
    not_ip_blocks: list[str] | None = None
    remote_ip_blocks: list[str] | None = None
    not_remote_ip_blocks: list[str] | None = None


class Operation(Spec):
    """What the request does (every set field must match)."""

    hosts: list[str] | None = None
    not_hosts: list[str] | None = None
    ports: list[str] | None = None
    not_ports: list[str] | None = None
    methods: list[str] | None = None
    not_methods: list[str] | None = None
    paths: list[str] | None = None
    not_paths: list[str] | None = None


class RuleFrom(Spec):
    """One ``from`` entry."""

    source: Source = Field(default_factory=Source)


class RuleTo(Spec):
    """One ``to`` entry."""

    operation: Operation = Field(default_factory=Operation)


class Condition(Spec):
    """One ``when`` entry: ``key`` matches one of ``values`` and none of ``notValues``."""

    key: str = Field(min_length=1)
    values: list[str] | None = None
    not_values: list[str] | None = None


class Rule(Spec):
    """A rule matches when one ``from``, one ``to`` and every ``when`` match (absent: any)."""

    from_: list[RuleFrom] = Field(default_factory=list, alias="from")
    to: list[RuleTo] = Field(default_factory=list)
    when: list[Condition] = Field(default_factory=list)


class AuthorizationPolicySpec(Spec):
    """Istio AuthorizationPolicy: allow or deny requests to the workloads it selects."""

    selector: PolicySelector | None = None
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] = "ALLOW"
    rules: list[Rule] = Field(default_factory=list)


class JWTHeader(Spec):
    """A header a token is read from (``prefix`` is stripped, e.g. ``Bearer ``)."""

    name: str = Field(min_length=1)
    prefix: str = ""


class JWTRule(Spec):
    """How to validate tokens of one issuer."""

    issuer: str = ""
    audiences: list[str] = Field(default_factory=list)
    jwks_uri: str = ""
    jwks: str = ""
    from_headers: list[JWTHeader] = Field(default_factory=list)
    from_params: list[str] = Field(default_factory=list)
    output_payload_to_header: str = ""
    forward_original_token: bool = False


class RequestAuthenticationSpec(Spec):
    """Istio RequestAuthentication: which JWTs the selected workloads accept."""

    selector: PolicySelector | None = None
    jwt_rules: list[JWTRule] = Field(default_factory=list)


class PathNormalization(Spec):
    """MeshConfig ``pathNormalization`` (Istio's message): how inbound paths are normalized
    before policies see them (see translate/authz.py NORMALIZATIONS; DEFAULT: novamesh's choice)."""

    normalization: Literal["DEFAULT", "NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"] = "DEFAULT"


AUTHZ_NOT_YET_SUPPORTED: dict[type[BaseModel], tuple[str, ...]] = {
    AuthorizationPolicySpec: ("targetRef", "targetRefs", "provider"),
    RequestAuthenticationSpec: ("targetRef", "targetRefs"),
    JWTRule: ("outputClaimToHeaders", "fromCookies", "timeout"),
}
"""Real Istio fields of these models that novamesh rejects as not supported yet."""
