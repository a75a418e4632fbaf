"""Golden scenarios for the MeshConfig (mesh-wide defaults): the recommended standard profile of
docs/mesh-standards.md on Bookinfo, where ``ratings`` has no config of its own (it gets every
default), ``reviews`` overrides the defaults with a DestinationRule (subset and port level) and
a VirtualService (route timeout and retries), and unknown hosts may pass (ALLOW_ANY)."""

from __future__ import annotations

from scenarios import BOOKINFO, FRONTEND, _snap, res

from novamesh.model.proxy import Proxy
from novamesh.model.snapshot import MeshSnapshot

STANDARD_PROFILE = {
    "defaultHttpTimeout": "15s",
    "defaultHttpRetryPolicy": {"attempts": 2, "retryOn": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,503"},
    "defaultTrafficPolicy": {
        "connectionPool": {
            "tcp": {"maxConnections": 1024, "connectTimeout": "2s"},
            "http": {"http1MaxPendingRequests": 256, "http2MaxRequests": 1024, "maxRetries": 64, "idleTimeout": "300s"},
        },
        "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 50},
    },
    "outboundTrafficPolicy": {"mode": "ALLOW_ANY"},
}
"""The profile of docs/mesh-standards.md (keep the two in step)."""


def scenarios() -> dict[str, tuple[MeshSnapshot, Proxy]]:
    """The standard profile alone, and with reviews overriding parts of it."""
    mesh = res("MeshConfig", "default", STANDARD_PROFILE, namespace="istio-system")
    reviews_dr = res("DestinationRule", "reviews", {
        "host": "reviews",
        "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 2, "interval": "1s", "baseEjectionTime": "5s"}},
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"},
             "trafficPolicy": {"portLevelSettings": [{"port": {"number": 9080}, "connectionPool": {"http": {"http1MaxPendingRequests": 8}}}]}},
            {"name": "v3", "labels": {"version": "v3"}},
        ],
    })
    reviews_vs = res("VirtualService", "reviews", {
        "hosts": ["reviews"],
        "http": [
            {"match": [{"uri": {"prefix": "/reports"}}], "route": [{"destination": {"host": "reviews", "subset": "v1"}}],
             "timeout": "60s", "retries": {"attempts": 0}},
            {"route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
        ],
    })
    return {
        "mesh_standard_profile": (_snap([mesh], BOOKINFO), FRONTEND),
        "mesh_profile_overridden": (_snap([mesh, reviews_dr, reviews_vs], BOOKINFO), FRONTEND),
    }
