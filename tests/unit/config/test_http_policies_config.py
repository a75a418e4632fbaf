"""VirtualService HTTP route policies: valid input is typed, bad input is located and rejected,
and a rejected apply stores nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from novamesh.config import VirtualServiceSpec, parse_documents
from novamesh.controlplane.mesh import Mesh
from novamesh.errors import ConfigError, Violation
from novamesh.settings import Settings
from novamesh.store import SqliteStore

DEST = {"destination": {"host": "reviews"}}


def vs(*routes: dict[str, Any]) -> str:
    """A VirtualService document (JSON is YAML) with the given ``http`` routes."""
    doc = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "reviews"},
           "spec": {"hosts": ["reviews"], "http": list(routes)}}
    return json.dumps(doc, indent=1)


def violations(text: str) -> list[Violation]:
    with pytest.raises(ConfigError) as info:
        parse_documents(text, "bad.yaml")
    assert all(v.hint for v in info.value.violations), [str(v) for v in info.value.violations]
    return info.value.violations


def test_every_policy_field_is_typed() -> None:
    route = {
        "match": [{"uri": {"prefix": "/api"}}],
        "timeout": "3s",
        "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "5xx,503,unavailable,deadline-exceeded",
                    "retryRemoteLocalities": True},
        "fault": {"delay": {"fixedDelay": "5s", "percentage": {"value": 12.5}},
                  "abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 1}}},
        "mirror": {"host": "ratings", "subset": "v2"},
        "mirrorPercentage": {"value": 50},
        "rewrite": {"uri": "/", "authority": "reviews.internal:9080"},
        "headers": {"request": {"set": {"x-a": "1", "host": "h"}, "add": {"x-b": "2"}, "remove": ["x-c"]},
                    "response": {"remove": ["server"]}},
        "corsPolicy": {"allowOrigins": [{"exact": "https://a.example"}, {"regex": ".*"}], "allowMethods": ["GET"],
                       "allowHeaders": ["x-token"], "exposeHeaders": ["x-id"], "maxAge": "24h", "allowCredentials": True},
        "route": [{**DEST, "headers": {"response": {"set": {"x-v": "1"}}}}],
    }
    redirect = {"match": [{"uri": {"prefix": "/old"}}], "redirect": {"uri": "/new", "redirectCode": 302, "derivePort": "FROM_REQUEST_PORT"}}
    direct = {"directResponse": {"status": 503, "body": {"bytes": "aGk="}}}
    [res] = parse_documents(vs(route, redirect, direct), "ok.yaml")
    spec = res.spec
    assert isinstance(spec, VirtualServiceSpec)
    http = spec.http[0]
    assert http.retries is not None and http.retries.per_try_timeout == "1s"
    assert http.fault is not None and http.fault.delay is not None and http.fault.delay.percentage is not None
    assert http.fault.delay.percentage.value == 12.5
    assert http.route[0].headers is not None and http.cors_policy is not None
    assert spec.http[1].redirect is not None and spec.http[1].redirect.redirect_code == 302
    assert spec.http[2].direct_response is not None and spec.http[2].direct_response.body is not None
    assert spec.http[2].direct_response.body.data == "aGk="


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("per-try longer than timeout", {"timeout": "1s", "retries": {"attempts": 2, "perTryTimeout": "2s", "retryOn": "gateway-error"}, "route": [DEST]},
     "spec.http[0].retries.perTryTimeout", "longer than the route timeout"),
    ("negative timeout", {"timeout": "-1s", "route": [DEST]}, "spec.http[0].timeout", "not a duration"),
    ("malformed timeout", {"timeout": "5 seconds", "route": [DEST]}, "spec.http[0].timeout", "not a duration"),
    ("malformed perTryTimeout", {"retries": {"attempts": 2, "perTryTimeout": "1"}, "route": [DEST]},
     "spec.http[0].retries.perTryTimeout", "not a duration"),
    ("negative fixedDelay", {"fault": {"delay": {"fixedDelay": "-5s", "percentage": {"value": 1}}}, "route": [DEST]},
     "spec.http[0].fault.delay.fixedDelay", "not a duration"),
    ("delay over 100%", {"fault": {"delay": {"fixedDelay": "1s", "percentage": {"value": 150}}}, "route": [DEST]},
     "spec.http[0].fault.delay.percentage.value", "<= 100"),
    ("abort over 100%", {"fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100.5}}}, "route": [DEST]},
     "spec.http[0].fault.abort.percentage.value", "<= 100"),
    ("mirror over 100%", {"mirror": {"host": "ratings"}, "mirrorPercentage": {"value": 101}, "route": [DEST]},
     "spec.http[0].mirrorPercentage.value", "<= 100"),
    ("unknown retryOn", {"retries": {"attempts": 2, "retryOn": "5xx,conect-failure"}, "route": [DEST]},
     "spec.http[0].retries.retryOn", "unknown retryOn condition 'conect-failure'"),
    ("retryOn status out of range", {"retries": {"attempts": 2, "retryOn": "999"}, "route": [DEST]},
     "spec.http[0].retries.retryOn", "not an HTTP status"),
    ("retries without attempts", {"retries": {"retryOn": "5xx"}, "route": [DEST]},
     "spec.http[0].retries.attempts", "turns retries off"),
    ("negative attempts", {"retries": {"attempts": -1}, "route": [DEST]}, "spec.http[0].retries.attempts", ">= 0"),
    ("redirect with route", {"redirect": {"uri": "/new"}, "route": [DEST]}, "spec.http[0].redirect", "cannot both be set"),
    ("directResponse with route", {"directResponse": {"status": 503}, "route": [DEST]},
     "spec.http[0].directResponse", "'directResponse' and 'route'"),
    ("directResponse with redirect", {"directResponse": {"status": 503}, "redirect": {"uri": "/x"}},
     "spec.http[0].directResponse", "'directResponse' and 'redirect'"),
    ("timeout on a redirect", {"redirect": {"uri": "/new"}, "timeout": "1s"}, "spec.http[0].timeout", "no effect"),
    ("fault without percentage", {"fault": {"abort": {"httpStatus": 503}}, "route": [DEST]},
     "spec.http[0].fault.abort.percentage", "no request at all"),
    ("abort with both statuses", {"fault": {"abort": {"httpStatus": 503, "grpcStatus": "UNAVAILABLE", "percentage": {"value": 1}}}, "route": [DEST]},
     "spec.http[0].fault.abort", "exactly one"),
    ("abort status out of range", {"fault": {"abort": {"httpStatus": 99, "percentage": {"value": 1}}}, "route": [DEST]},
     "spec.http[0].fault.abort.httpStatus", "between 200 and 599"),
    ("unknown grpc status", {"fault": {"abort": {"grpcStatus": "UNAVAILBLE", "percentage": {"value": 1}}}, "route": [DEST]},
     "spec.http[0].fault.abort.grpcStatus", "unknown gRPC status"),
    ("mirror and mirrors", {"mirror": {"host": "a"}, "mirrors": [{"destination": {"host": "b"}}], "route": [DEST]},
     "spec.http[0].mirrors", "cannot both be set"),
    ("wildcard mirror host", {"mirror": {"host": "*.example.com"}, "route": [DEST]}, "spec.http[0].mirror.host", "wildcard"),
    ("bad redirect code", {"redirect": {"uri": "/x", "redirectCode": 200}}, "spec.http[0].redirect.redirectCode", "redirect status"),
    ("port and derivePort", {"redirect": {"port": 8080, "derivePort": "FROM_REQUEST_PORT"}}, "spec.http[0].redirect.derivePort", "cannot both"),
    ("bad derivePort", {"redirect": {"derivePort": "FROM_NOWHERE"}}, "spec.http[0].redirect.derivePort", "FROM_REQUEST_PORT"),
    ("bad base64 body", {"directResponse": {"status": 200, "body": {"bytes": "not base64!"}}},
     "spec.http[0].directResponse.body.bytes", "base64"),
    ("body too large", {"directResponse": {"status": 200, "body": {"string": "x" * 5000}}},
     "spec.http[0].directResponse.body", "at most 4096"),
    ("bad rewrite regex", {"rewrite": {"uriRegexRewrite": {"match": "(a", "rewrite": "/"}}, "route": [DEST]},
     "spec.http[0].rewrite.uriRegexRewrite.match", "invalid RE2"),
    ("uri and uriRegexRewrite", {"rewrite": {"uri": "/", "uriRegexRewrite": {"match": "a", "rewrite": "b"}}, "route": [DEST]},
     "spec.http[0].rewrite.uriRegexRewrite", "cannot both"),
    ("pseudo header", {"headers": {"request": {"set": {":path": "/x"}}}, "route": [DEST]},
     "spec.http[0].headers.request.set.:path", "pseudo-header"),
    ("bad header name in destination", {"route": [{**DEST, "headers": {"response": {"add": {"bad header": "x"}}}}]},
     "spec.http[0].route[0].headers.response.add.bad header", "not a valid header name"),
    ("sub-second cors maxAge", {"corsPolicy": {"maxAge": "1.5s"}, "route": [DEST]}, "spec.http[0].corsPolicy.maxAge", "whole number"),
    ("not yet: exponentialDelay", {"fault": {"delay": {"exponentialDelay": "1s", "percentage": {"value": 1}}}, "route": [DEST]},
     "spec.http[0].fault.delay.exponentialDelay", "not supported by novamesh yet"),
    ("not yet: delegate", {"delegate": {"name": "x"}}, "spec.http[0].delegate", "not supported by novamesh yet"),
]


@pytest.mark.parametrize(("route", "path", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_route_policy_is_located(route: dict[str, Any], path: str, message: str) -> None:
    found = violations(vs(route))
    assert any(v.path == path and message in v.message for v in found), [f"{v.path}: {v.message}" for v in found]
    assert all(v.file == "bad.yaml" and v.line for v in found if v.path == path)


def test_unknown_retry_condition_gets_a_suggestion() -> None:
    [v] = [v for v in violations(vs({"retries": {"attempts": 2, "retryOn": "gateway-eror"}, "route": [DEST]})) if "retryOn" in v.path]
    assert v.hint == "did you mean 'gateway-error'?"


@pytest.mark.parametrize("retries", [{"attempts": 3, "perTryTimeout": "2s"},
                                     {"attempts": 3, "perTryTimeout": "2s", "retryOn": "connect-failure"}],
                         ids=["default retryOn", "retryOn without a timeout condition"])
def test_per_try_timeout_that_is_never_retried_is_accepted_as_istio_does(retries: dict[str, Any]) -> None:
    """Istio accepts it and so does novamesh (analyzer NM0004 warns); the Envoy policy is Istio's:
    its default policy (or the given retryOn) with num_retries and per_try_timeout set."""
    from novamesh.translate.http_policies import DEFAULT_RETRY_POLICY, retry_policy

    [resource] = parse_documents(vs({"retries": retries, "route": [DEST]}))
    assert isinstance(resource.spec, VirtualServiceSpec)
    policy = retry_policy(resource.spec.http[0].retries)
    expected = {**DEFAULT_RETRY_POLICY, "num_retries": 3, "per_try_timeout": "2s"}
    if "retryOn" in retries:
        expected["retry_on"] = retries["retryOn"]
        del expected["retriable_status_codes"]
    assert policy == expected


def test_mirror_to_a_host_the_mesh_does_not_know_is_accepted() -> None:
    """Istio accepts it (the copy is dropped); the mirror's host is checked for syntax only."""
    assert parse_documents(vs({"mirror": {"host": "not-in-the-mesh.example.com"}, "route": [DEST]}))


STORE_CASES = ("per-try longer than timeout", "negative timeout", "delay over 100%", "unknown retryOn", "redirect with route")


@pytest.mark.parametrize("route", [b[1] for b in BAD if b[0] in STORE_CASES], ids=[b[0] for b in BAD if b[0] in STORE_CASES])
def test_rejected_apply_stores_nothing(tmp_path: Path, route: dict[str, Any]) -> None:
    mesh = Mesh(Settings(data_dir=str(tmp_path)), SqliteStore(tmp_path / "store.db"))
    with pytest.raises(ConfigError):
        mesh.apply([{"file": "bad.yaml", "content": vs(route)}])
    assert mesh.store.list() == [] and mesh.store.current_revision() == 0 and mesh.resources == {}


def test_default_retry_on_does_not_retry_per_try_timeouts() -> None:
    """The perTryTimeout check assumes Istio's default retryOn has no timeout-retrying condition."""
    from novamesh.config._semantic_http import TIMEOUT_RETRY_CONDITIONS
    from novamesh.translate.http_policies import DEFAULT_RETRY_POLICY

    assert not set(DEFAULT_RETRY_POLICY["retry_on"].split(",")) & set(TIMEOUT_RETRY_CONDITIONS)
