"""Golden scenarios for the Telemetry API: OpenTelemetry and Zipkin tracing with sampling and
custom tags, JSON access logs with a CEL filter, and a workload-level override that turns
access logs off."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from scenarios import BOOKINFO, FRONTEND, _snap

from novamesh.config.resource import Resource
from novamesh.config.types_telemetry import ENVOY_ACCESS_LOG_PROVIDER, MeshTelemetry, TelemetryProvider
from novamesh.config.types import SPEC_TYPES
from novamesh.model.proxy import Proxy
from novamesh.model.snapshot import MeshSnapshot

PROVIDERS = MeshTelemetry(providers=(
    TelemetryProvider(ENVOY_ACCESS_LOG_PROVIDER, "envoy_file"),
    TelemetryProvider("otel", "opentelemetry", "127.0.0.1:4317"),
    TelemetryProvider("zipkin", "zipkin", "zipkin.example:9411"),
))
PROXY = dataclasses.replace(FRONTEND, access_log_path="/tmp/novamesh-golden/frontend/access.log")


def telemetry(name: str, spec: dict[str, Any], namespace: str = "default") -> Resource:
    """A Telemetry resource (telemetry.istio.io/v1)."""
    api = "telemetry.istio.io/v1"
    manifest = {"apiVersion": api, "kind": "Telemetry", "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    return Resource("Telemetry", name, namespace, api, SPEC_TYPES["Telemetry"].model_validate(spec), manifest)


def _with(resources: list[Resource]) -> MeshSnapshot:
    return dataclasses.replace(_snap(resources, BOOKINFO), mesh_telemetry=PROVIDERS)


def scenarios() -> dict[str, tuple[MeshSnapshot, Proxy]]:
    # Envoy's validate mode opens the access-log file, so its directory must exist.
    Path(PROXY.access_log_path).parent.mkdir(parents=True, exist_ok=True)
    mesh_wide = telemetry("mesh-default", {
        "tracing": [{"randomSamplingPercentage": 10,
                     "customTags": {"team": {"literal": {"value": "payments"}},
                                    "user": {"header": {"name": "x-user", "defaultValue": "anonymous"}},
                                    "node": {"environment": {"name": "HOSTNAME"}}}}],
        "accessLogging": [{"providers": [{"name": "envoy"}], "filter": {"expression": "response.code >= 400"}}],
    }, namespace="istio-system")
    zipkin = telemetry("frontend", {
        "selector": {"matchLabels": {"app": "frontend"}},
        "tracing": [{"providers": [{"name": "zipkin"}], "randomSamplingPercentage": 100}],
        "accessLogging": [{"disabled": True}],
    })
    return {
        "telemetry_otel_and_access_log": (_with([mesh_wide]), PROXY),
        "telemetry_workload_zipkin_no_logs": (_with([mesh_wide, zipkin]), PROXY),
    }
