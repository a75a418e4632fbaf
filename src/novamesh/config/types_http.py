"""Typed models of the per-route policies of a VirtualService HTTP route (Istio's names).

Timeouts, retries, fault injection, mirroring, rewrites, redirects, direct responses, header
manipulation and CORS. :mod:`.types` adds these to ``HTTPRoute`` and ``HTTPRouteDestination``;
rules a type cannot express (one of several fields, cross-field limits) live in
:mod:`._semantic_http`; the Envoy translation in :mod:`novamesh.translate.http_policies`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .base import Destination, Duration, Percent, Spec, StringMatch

__all__ = [
    "HTTP_POLICY_NOT_YET_SUPPORTED",
    "CorsPolicy",
    "HTTPBody",
    "HTTPDirectResponse",
    "HTTPFaultAbort",
    "HTTPFaultDelay",
    "HTTPFaultInjection",
    "HTTPMirrorPolicy",
    "HTTPRedirect",
    "HTTPRetry",
    "HTTPRewrite",
    "HeaderOperations",
    "Headers",
    "RegexRewrite",
]


class HTTPRetry(Spec):
    """Istio HTTPRetry. ``attempts: 0`` disables retries; see docs/istio-fields.md for the
    default policy used when a route has no ``retries``."""

    attempts: int | None = Field(default=None, ge=0)
    per_try_timeout: Duration | None = None
    retry_on: str | None = None
    retry_remote_localities: bool | None = None


class HTTPFaultDelay(Spec):
    """Delay ``percentage`` of the requests by ``fixedDelay`` before forwarding them."""

    fixed_delay: Duration | None = None
    percentage: Percent | None = None


class HTTPFaultAbort(Spec):
    """Answer ``percentage`` of the requests with ``httpStatus`` or a gRPC ``grpcStatus``."""

    http_status: int | None = None
    grpc_status: str | None = None
    percentage: Percent | None = None


class HTTPFaultInjection(Spec):
    """Istio HTTPFaultInjection: a delay, an abort, or both."""

    delay: HTTPFaultDelay | None = None
    abort: HTTPFaultAbort | None = None


class HTTPMirrorPolicy(Spec):
    """One entry of ``mirrors``: a copy of ``percentage`` of the requests goes to ``destination``."""

    destination: Destination
    percentage: Percent | None = None


class RegexRewrite(Spec):
    """``uriRegexRewrite``: replace every RE2 ``match`` in the path with ``rewrite`` (``\\1`` groups)."""

    match: str = Field(min_length=1)
    rewrite: str


class HTTPRewrite(Spec):
    """Istio HTTPRewrite: the path (or the matched prefix) and/or the authority."""

    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None


class HTTPRedirect(Spec):
    """Istio HTTPRedirect: answer with a redirect instead of forwarding."""

    uri: str | None = None
    authority: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: int | None = None


class HTTPBody(Spec):
    """Body of a direct response: ``string`` (text) or ``bytes`` (base64)."""

    text: str | None = Field(default=None, alias="string")
    data: str | None = Field(default=None, alias="bytes")


class HTTPDirectResponse(Spec):
    """Istio HTTPDirectResponse: answer with a fixed status and body instead of forwarding."""

    status: int
    body: HTTPBody | None = None


class HeaderOperations(Spec):
    """Header changes: ``set`` overwrites, ``add`` appends, ``remove`` deletes."""

    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class Headers(Spec):
    """Istio Headers: changes to the request (sent upstream) and the response (sent back)."""

    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class CorsPolicy(Spec):
    """Istio CorsPolicy, enforced by Envoy's CORS filter."""

    allow_origins: list[StringMatch] = Field(default_factory=list)
    allow_methods: list[str] = Field(default_factory=list)
    allow_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    max_age: Duration | None = None
    allow_credentials: bool | None = None


HTTP_POLICY_NOT_YET_SUPPORTED: dict[type[BaseModel], tuple[str, ...]] = {
    HTTPRetry: ("retryIgnorePreviousHosts", "backoff"),
    HTTPFaultDelay: ("exponentialDelay", "percent"),
    HTTPFaultAbort: ("http2Error",),
    CorsPolicy: ("allowOrigin", "unmatchedPreflights"),
}
"""Real Istio fields of these models that novamesh rejects for now (merged into
``_schema.NOT_YET_SUPPORTED``)."""
