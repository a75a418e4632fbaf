"""Golden scenarios for the per-route HTTP policies (timeout, retries, fault, mirror, rewrite,
redirect, directResponse, headers, CORS)."""

from __future__ import annotations

from typing import Any

from scenarios import BOOKINFO, FRONTEND, REVIEWS_DR, _snap, res

from novamesh.model.proxy import Proxy
from novamesh.model.snapshot import MeshSnapshot

_V = {"host": "reviews", "subset": "v1"}

POLICIES: dict[str, Any] = {
    "hosts": ["reviews"],
    "http": [
        {
            "name": "api",
            "match": [{"uri": {"prefix": "/api"}}, {"uri": {"prefix": "/API/"}, "ignoreUriCase": True}],
            "rewrite": {"uri": "/"},
            "timeout": "3s",
            "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "5xx,503,unavailable,cancelled,504",
                        "retryRemoteLocalities": True},
            "headers": {"request": {"set": {"x-env": "prod", "Host": "reviews.internal"}, "add": {"x-trace": "a"}, "remove": ["x-debug"]},
                        "response": {"set": {"cache-control": "no-store"}, "remove": ["server"]}},
            "route": [{"destination": _V, "headers": {"request": {"set": {"x-dest": "v1"}}}}],
        },
        {
            "name": "no-retries",
            "match": [{"uri": {"prefix": "/v1/"}}],
            "rewrite": {"uriRegexRewrite": {"match": "^/v1/(.*)$", "rewrite": "/\\1"}, "authority": "reviews-legacy"},
            "retries": {"attempts": 0},
            "route": [{"destination": _V}],
        },
        {
            "name": "fault-mirror-cors",
            "match": [{"uri": {"exact": "/fault"}}],
            "fault": {"delay": {"fixedDelay": "500ms", "percentage": {"value": 10}},
                      "abort": {"httpStatus": 503, "percentage": {"value": 0.5}}},
            "mirror": {"host": "ratings"},
            "mirrorPercentage": {"value": 25},
            "corsPolicy": {"allowOrigins": [{"exact": "https://app.example.com"}, {"regex": "https://.*\\.example\\.org"}],
                           "allowMethods": ["GET", "POST"], "allowHeaders": ["x-token"], "exposeHeaders": ["x-echo-service"],
                           "maxAge": "24h", "allowCredentials": True},
            "route": [{"destination": _V}],
        },
        {
            "name": "redirect",
            "match": [{"uri": {"prefix": "/old"}}],
            "redirect": {"uri": "/new", "authority": "reviews.example.com", "scheme": "https", "redirectCode": 308,
                         "derivePort": "FROM_REQUEST_PORT"},
        },
        {
            "name": "maintenance",
            "match": [{"uri": {"prefix": "/maintenance"}}],
            "directResponse": {"status": 503, "body": {"string": "down for maintenance\n"}},
            "headers": {"response": {"add": {"retry-after": "60"}}},
        },
        {
            "name": "bytes",
            "match": [{"uri": {"exact": "/bytes"}}],
            "directResponse": {"status": 200, "body": {"bytes": "aGVsbG8="}},
        },
        {
            "name": "split",
            "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}},
            "mirrors": [{"destination": {"host": "reviews", "subset": "v3"}, "percentage": {"value": 50}},
                        {"destination": {"host": "ratings"}}],
            "retries": {"attempts": 2, "retryOn": "gateway-error"},
            "route": [
                {"destination": _V, "weight": 80,
                 "headers": {"request": {"set": {"x-split": "v1", "host": "v1.reviews"}}, "response": {"add": {"x-from": "v1"}}}},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20},
            ],
        },
    ],
}


def scenarios() -> dict[str, tuple[MeshSnapshot, Proxy]]:
    """``http_policies``: every policy field on one VirtualService; ``http_default_retries``:
    a route without ``retries`` gets Istio's default retry policy, like the default routes."""
    plain = res("VirtualService", "ratings", {"hosts": ["ratings"], "http": [{"timeout": "2.5s", "route": [{"destination": {"host": "ratings"}}]}]})
    return {
        "http_policies": (_snap([REVIEWS_DR, res("VirtualService", "reviews", POLICIES)], BOOKINFO), FRONTEND),
        "http_default_retries": (_snap([plain], BOOKINFO), FRONTEND),
    }
