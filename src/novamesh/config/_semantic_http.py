"""Semantic checks of the per-route policies of a VirtualService HTTP route.

Called from :mod:`._semantic` for each ``spec.http[i]``. Follows Istio's own validation and is
stricter where Istio accepts YAML that silently does nothing (docs/istio-fields.md):

- a fault ``delay``/``abort`` without ``percentage`` is rejected: Istio injects into *no*
  request then, which is never what the author meant;
- ``retries`` with other fields but no ``attempts`` is rejected: Istio reads the missing
  ``attempts`` as 0 and drops the whole retry policy;
- ``perTryTimeout`` longer than the route ``timeout`` is rejected (the try could never time out);
- ``perTryTimeout`` whose ``retryOn`` (or Istio's default one) has none of ``5xx``,
  ``gateway-error``, ``reset`` is *accepted*, as Istio accepts it (Envoy then answers 504 at the
  first slow try instead of retrying it, istio/istio#17613): it is the retry snippet most teams
  copy, so rejecting it would break config that works in Istio. The analyzer NM0004
  (analysis/analyzers/retries.py) warns about it instead, in ``analyze`` and ``apply --dry-run``;
- ``timeout``/``retries``/``mirror``/``rewrite`` on a route that does not forward (``redirect``,
  ``directResponse``) are rejected, since Envoy would ignore them.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from ._paths import Problem
from ._schema import did_you_mean
from ._syntax import host_problem, regex_error
from .base import Destination, StringMatch, parse_duration
from .types import HTTPRoute
from .types_http import (
    CorsPolicy,
    Headers,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPRedirect,
    HTTPRetry,
    HTTPRewrite,
)

__all__ = [
    "GRPC_STATUS_CODES",
    "MAX_DIRECT_RESPONSE_BYTES",
    "REDIRECT_CODES",
    "RETRY_ON_CONDITIONS",
    "TIMEOUT_RETRY_CONDITIONS",
    "check_destination_headers",
    "check_http_policies",
    "per_try_timeout_retried",
]

RETRY_ON_CONDITIONS: tuple[str, ...] = (
    # HTTP (x-envoy-retry-on)
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    # gRPC (x-envoy-retry-grpc-on)
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
)
"""Envoy's retry conditions accepted in ``retryOn``; a bare status code (``503``) is accepted
too and becomes a retriable status code, as in Istio."""

GRPC_STATUS_CODES: dict[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
"""gRPC status names (Istio's ``abort.grpcStatus``) and their codes."""

REDIRECT_CODES: tuple[int, ...] = (301, 302, 303, 307, 308)
"""Redirect statuses Envoy can send."""

MAX_DIRECT_RESPONSE_BYTES = 4096
"""Envoy's default limit on a direct response body (``max_direct_response_body_size_bytes``)."""

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_AUTHORITY_HEADERS = ("host", ":authority")


def check_http_policies(route: HTTPRoute, path: str) -> list[Problem]:
    """Every problem in the policy fields of one ``HTTPRoute`` found at ``path``."""
    problems: list[Problem] = []
    forwards = route.redirect is None and route.direct_response is None
    if route.redirect is not None:
        if route.route:
            problems.append(_exclusive(f"{path}.redirect", "redirect", "route"))
        problems += _redirect(route.redirect, f"{path}.redirect")
    if route.direct_response is not None:
        for other, present in (("route", bool(route.route)), ("redirect", route.redirect is not None)):
            if present:
                problems.append(_exclusive(f"{path}.directResponse", "directResponse", other))
        problems += _direct_response(route.direct_response, f"{path}.directResponse")
    if not forwards:
        for name, present in (
            ("rewrite", route.rewrite is not None),
            ("timeout", route.timeout is not None),
            ("retries", route.retries is not None),
            ("mirror", route.mirror is not None),
            ("mirrors", bool(route.mirrors)),
        ):
            if present:
                problems.append(
                    Problem(
                        f"{path}.{name}",
                        f"'{name}' has no effect on a route that answers with a redirect or a "
                        "direct response: nothing is forwarded",
                        f"remove '{name}', or replace the redirect/directResponse with a `route`",
                    )
                )
    timeout = parse_duration(route.timeout) if route.timeout is not None else None
    if route.retries is not None:
        problems += _retries(route.retries, f"{path}.retries", timeout)
    if route.fault is not None:
        problems += _fault(route.fault, f"{path}.fault")
    problems += _mirrors(route, path)
    if route.rewrite is not None:
        problems += _rewrite(route.rewrite, f"{path}.rewrite")
    if route.headers is not None:
        problems += _headers(route.headers, f"{path}.headers")
    if route.cors_policy is not None:
        problems += _cors(route.cors_policy, f"{path}.corsPolicy")
    for k, dest in enumerate(route.route):
        problems += check_destination_headers(dest.headers, f"{path}.route[{k}].headers")
    return problems


def check_destination_headers(headers: Headers | None, path: str) -> list[Problem]:
    """Problems in the ``headers`` of one route destination."""
    return _headers(headers, path) if headers is not None else []


def _exclusive(path: str, field: str, other: str) -> Problem:
    return Problem(
        path,
        f"'{field}' and '{other}' cannot both be set on one HTTP route",
        "keep one of them; split the route in two with different `match` blocks if you need both",
    )


def _retries(retries: HTTPRetry, path: str, timeout: float | None) -> list[Problem]:
    problems: list[Problem] = []
    others = [
        name
        for name, value in (
            ("perTryTimeout", retries.per_try_timeout),
            ("retryOn", retries.retry_on),
            ("retryRemoteLocalities", retries.retry_remote_localities),
        )
        if value is not None
    ]
    if retries.attempts is None:
        if others:
            problems.append(
                Problem(
                    f"{path}.attempts",
                    f"'attempts' is missing, so {', '.join(others)} would be ignored: Istio reads a "
                    "missing 'attempts' as 0, which turns retries off",
                    "set 'attempts' (e.g. attempts: 3), or write attempts: 0 to disable retries",
                )
            )
        else:
            problems.append(
                Problem(
                    f"{path}.attempts",
                    "empty 'retries': set 'attempts'",
                    "write e.g. `retries: {attempts: 3}`, or attempts: 0 to disable retries",
                )
            )
    if retries.per_try_timeout is not None:
        per_try = parse_duration(retries.per_try_timeout)
        if per_try < 0.001:
            problems.append(
                Problem(f"{path}.perTryTimeout", "perTryTimeout must be at least 1ms", "set e.g. perTryTimeout: 2s")
            )
        elif timeout is not None and timeout > 0 and per_try > timeout:
            problems.append(
                Problem(
                    f"{path}.perTryTimeout",
                    f"perTryTimeout {retries.per_try_timeout} is longer than the route timeout "
                    f"({timeout:g}s), so a try could never time out on its own",
                    "make perTryTimeout shorter than timeout (e.g. timeout / (attempts + 1)), "
                    "or raise the route timeout",
                )
            )
    if retries.retry_on is not None:
        problems += _retry_on(retries.retry_on, f"{path}.retryOn")
    return problems


TIMEOUT_RETRY_CONDITIONS: tuple[str, ...] = ("5xx", "gateway-error", "reset")
"""retryOn conditions under which Envoy retries a try that hit perTryTimeout. Istio's default
retryOn (translate.http_policies.DEFAULT_RETRY_POLICY) has none of them."""


def per_try_timeout_retried(retries: HTTPRetry) -> bool:
    """False when ``retries`` sets ``perTryTimeout`` and retries, but its ``retryOn`` (Istio's
    default when unset) cannot retry a try that timed out: the request then fails with 504."""
    if retries.per_try_timeout is None or not retries.attempts:
        return True
    if retries.retry_on is None:
        return False
    return any(item.strip() in TIMEOUT_RETRY_CONDITIONS for item in retries.retry_on.split(","))


def _retry_on(value: str, path: str) -> list[Problem]:
    problems: list[Problem] = []
    items = [item.strip() for item in value.split(",")]
    for item in items:
        if not item:
            problems.append(
                Problem(path, f"empty condition in retryOn {value!r}", "separate conditions with single commas, e.g. 5xx,connect-failure")
            )
        elif item.isdigit():
            if not 100 <= int(item) <= 599:
                problems.append(Problem(path, f"retryOn status code {item} is not an HTTP status", "use a status between 100 and 599, e.g. 503"))
        elif item not in RETRY_ON_CONDITIONS:
            guess = did_you_mean(item, RETRY_ON_CONDITIONS)
            problems.append(
                Problem(
                    path,
                    f"unknown retryOn condition '{item}'",
                    f"did you mean '{guess}'?" if guess else f"use Envoy's conditions ({', '.join(RETRY_ON_CONDITIONS)}) or a status code such as 503",
                )
            )
    return problems


def _percentage_missing(path: str, what: str) -> Problem:
    return Problem(
        f"{path}.percentage",
        f"{what} has no 'percentage': Istio then injects it into no request at all",
        "set the share of requests explicitly, e.g. `percentage: {value: 100}` for every request",
    )


def _fault(fault: HTTPFaultInjection, path: str) -> list[Problem]:
    problems: list[Problem] = []
    if fault.delay is None and fault.abort is None:
        problems.append(Problem(path, "fault has neither 'delay' nor 'abort'", "add `delay: {fixedDelay: 5s, percentage: {value: 10}}` or an `abort`, or remove 'fault'"))
    if fault.delay is not None:
        where = f"{path}.delay"
        if fault.delay.fixed_delay is None:
            problems.append(Problem(f"{where}.fixedDelay", "missing required field 'fixedDelay'", "add e.g. fixedDelay: 5s"))
        elif parse_duration(fault.delay.fixed_delay) < 0.001:
            problems.append(Problem(f"{where}.fixedDelay", "fixedDelay must be at least 1ms", "set e.g. fixedDelay: 5s"))
        if fault.delay.percentage is None:
            problems.append(_percentage_missing(where, "the delay"))
    if fault.abort is not None:
        where = f"{path}.abort"
        abort = fault.abort
        if (abort.http_status is None) == (abort.grpc_status is None):
            problems.append(
                Problem(where, "set exactly one of 'httpStatus' and 'grpcStatus'", "e.g. httpStatus: 503, or grpcStatus: UNAVAILABLE for gRPC")
            )
        if abort.http_status is not None and not 200 <= abort.http_status <= 599:
            problems.append(Problem(f"{where}.httpStatus", f"httpStatus {abort.http_status} is not between 200 and 599", "use an HTTP status such as 503"))
        if abort.grpc_status is not None and abort.grpc_status not in GRPC_STATUS_CODES:
            guess = did_you_mean(abort.grpc_status, GRPC_STATUS_CODES)
            problems.append(
                Problem(
                    f"{where}.grpcStatus",
                    f"unknown gRPC status '{abort.grpc_status}'",
                    f"did you mean '{guess}'?" if guess else "use a gRPC status name such as UNAVAILABLE",
                )
            )
        if abort.percentage is None:
            problems.append(_percentage_missing(where, "the abort"))
    return problems


def _mirror_host(dest: Destination, path: str) -> list[Problem]:
    reason = host_problem(dest.host, wildcard=False)
    if reason:
        return [Problem(f"{path}.host", reason, "name one service, e.g. reviews or reviews.prod.svc.cluster.local")]
    return []


def _mirrors(route: HTTPRoute, path: str) -> list[Problem]:
    problems: list[Problem] = []
    if route.mirror is not None and route.mirrors:
        problems.append(_exclusive(f"{path}.mirrors", "mirrors", "mirror"))
    if route.mirror_percentage is not None and route.mirror is None:
        problems.append(
            Problem(
                f"{path}.mirrorPercentage",
                "mirrorPercentage applies to 'mirror', which is not set",
                "add `mirror: {host: ...}`, or give each entry of `mirrors` its own `percentage`",
            )
        )
    if route.mirror is not None:
        problems += _mirror_host(route.mirror, f"{path}.mirror")
    for i, policy in enumerate(route.mirrors):
        problems += _mirror_host(policy.destination, f"{path}.mirrors[{i}].destination")
    return problems


def _rewrite(rewrite: HTTPRewrite, path: str) -> list[Problem]:
    problems: list[Problem] = []
    if rewrite.uri is None and rewrite.authority is None and rewrite.uri_regex_rewrite is None:
        problems.append(Problem(path, "rewrite sets none of uri, authority, uriRegexRewrite", "set at least one of them, or remove 'rewrite'"))
    if rewrite.uri is not None and rewrite.uri_regex_rewrite is not None:
        problems.append(_exclusive(f"{path}.uriRegexRewrite", "uriRegexRewrite", "uri"))
    if rewrite.uri is not None and not rewrite.uri.startswith("/"):
        problems.append(Problem(f"{path}.uri", f"rewrite uri {rewrite.uri!r} must start with '/'", f"write e.g. '/{rewrite.uri}'"))
    if rewrite.authority is not None:
        problems += _authority(rewrite.authority, f"{path}.authority")
    if rewrite.uri_regex_rewrite is not None:
        error = regex_error(rewrite.uri_regex_rewrite.match)
        if error:
            problems.append(
                Problem(
                    f"{path}.uriRegexRewrite.match",
                    f"invalid RE2 regular expression {rewrite.uri_regex_rewrite.match!r}: {error}",
                    "fix the pattern; Envoy uses RE2 (no lookaround, no backreferences)",
                )
            )
    return problems


def _authority(value: str, path: str) -> list[Problem]:
    host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    if host_problem(host, wildcard=False) or (port and not (port.isdigit() and 1 <= int(port) <= 65535)):
        return [Problem(path, f"'{value}' is not a host or host:port", "write e.g. reviews.example.com or reviews:9080")]
    return []


def _redirect(redirect: HTTPRedirect, path: str) -> list[Problem]:
    problems: list[Problem] = []
    if redirect.port is not None and redirect.derive_port is not None:
        problems.append(_exclusive(f"{path}.derivePort", "derivePort", "port"))
    if redirect.redirect_code is not None and redirect.redirect_code not in REDIRECT_CODES:
        problems.append(
            Problem(
                f"{path}.redirectCode",
                f"redirectCode {redirect.redirect_code} is not a redirect status Envoy can send",
                f"use one of {', '.join(map(str, REDIRECT_CODES))} (default 301)",
            )
        )
    if redirect.uri is not None and not redirect.uri.startswith("/"):
        problems.append(Problem(f"{path}.uri", f"redirect uri {redirect.uri!r} must start with '/'", f"write e.g. '/{redirect.uri}'"))
    if redirect.authority is not None:
        problems += _authority(redirect.authority, f"{path}.authority")
    if redirect.scheme is not None and redirect.scheme.lower() not in ("http", "https"):
        problems.append(Problem(f"{path}.scheme", f"scheme {redirect.scheme!r} is not http or https", "write scheme: https (or http)"))
    return problems


def _direct_response(response: HTTPDirectResponse, path: str) -> list[Problem]:
    problems: list[Problem] = []
    if not 200 <= response.status <= 599:
        problems.append(Problem(f"{path}.status", f"status {response.status} is not between 200 and 599", "use an HTTP status such as 200 or 503"))
    body = response.body
    if body is None:
        return problems
    if (body.text is None) == (body.data is None):
        problems.append(Problem(f"{path}.body", "set exactly one of 'string' and 'bytes'", "e.g. `body: {string: 'maintenance'}`"))
        return problems
    size = len(body.text.encode()) if body.text is not None else 0
    if body.data is not None:
        try:
            size = len(base64.b64decode(body.data, validate=True))
        except (binascii.Error, ValueError):
            problems.append(Problem(f"{path}.body.bytes", "'bytes' is not valid base64", "encode the body with base64, or use 'string' for text"))
    if size > MAX_DIRECT_RESPONSE_BYTES:
        problems.append(
            Problem(f"{path}.body", f"body is {size} bytes; Envoy allows at most {MAX_DIRECT_RESPONSE_BYTES}", "shorten the body")
        )
    return problems


def _headers(headers: Headers, path: str) -> list[Problem]:
    problems: list[Problem] = []
    for side, ops in (("request", headers.request), ("response", headers.response)):
        if ops is None:
            continue
        where = f"{path}.{side}"
        for op, names in (("set", ops.set.keys()), ("add", ops.add.keys()), ("remove", ops.remove)):
            problems += _header_names(names, f"{where}.{op}", allow_authority=side == "request" and op == "set")
        for op, values in (("set", ops.set), ("add", ops.add)):
            for name, value in values.items():
                if "\r" in value or "\n" in value or "\0" in value:
                    problems.append(Problem(f"{where}.{op}.{name}", "header value contains a line break or NUL", "write the value on one line"))
    return problems


def _header_names(names: Iterable[str], path: str, *, allow_authority: bool) -> list[Problem]:
    problems: list[Problem] = []
    for i, name in enumerate(names):
        where = f"{path}[{i}]" if path.endswith(".remove") else f"{path}.{name}"
        lower = name.lower()
        if lower in _AUTHORITY_HEADERS:
            if not allow_authority:
                problems.append(
                    Problem(where, f"'{name}' can only be changed with request `set` (it rewrites the authority)", "use `headers.request.set.host`, or `rewrite.authority`")
                )
        elif name.startswith(":"):
            problems.append(Problem(where, f"pseudo-header '{name}' cannot be changed", "use `rewrite` for the path or authority"))
        elif _TOKEN.fullmatch(name) is None:
            problems.append(Problem(where, f"'{name}' is not a valid header name", "use letters, digits and !#$%&'*+-.^_`|~"))
    return problems


def _cors(cors: CorsPolicy, path: str) -> list[Problem]:
    problems: list[Problem] = []
    for i, origin in enumerate(cors.allow_origins):
        problems += _origin(origin, f"{path}.allowOrigins[{i}]")
    for name, values in (("allowMethods", cors.allow_methods), ("allowHeaders", cors.allow_headers), ("exposeHeaders", cors.expose_headers)):
        for i, value in enumerate(values):
            if value != "*" and _TOKEN.fullmatch(value) is None:
                problems.append(Problem(f"{path}.{name}[{i}]", f"'{value}' is not a valid method or header name", "list one name per entry, e.g. [GET, POST]"))
    if cors.max_age is not None:
        seconds = parse_duration(cors.max_age)
        if seconds != int(seconds):
            problems.append(Problem(f"{path}.maxAge", f"maxAge {cors.max_age} is not a whole number of seconds", "browsers cache preflights in whole seconds; write e.g. 24h or 600s"))
    return problems


def _origin(origin: StringMatch, path: str) -> list[Problem]:
    if origin.is_empty():
        return [Problem(path, "empty origin match", "write e.g. {exact: https://app.example.com}")]
    if origin.regex is not None:
        error = regex_error(origin.regex)
        if error:
            return [Problem(f"{path}.regex", f"invalid RE2 regular expression {origin.regex!r}: {error}", "fix the pattern; Envoy uses RE2")]
    return []
