"""Telemetry API → Envoy: tracing (OpenTelemetry or Zipkin) and JSON access logs on a sidecar's
HTTP connection managers.

Resolution follows Istio: a selector-less Telemetry in the root namespace (``istio-system``)
applies to the whole mesh, a selector-less one in a namespace overrides it for that namespace,
and one whose ``selector.matchLabels`` picks the workload overrides both. Each level overrides
only the fields it sets (``customTags`` are merged by name). Without any Telemetry, tracing uses
the mesh's default tracing provider (the first one defined in settings) at the default sampling
percentage, and access logs follow ``access_log_default``.

The resolved :class:`TelemetryPlan` is part of the proxy class key (proxies with different plans
never share a translation). ``translate_class`` records it in the class resources under
:data:`TELEMETRY_PLAN` (not an xDS type: never sent), and ``translate_proxy`` applies it with
:func:`apply_telemetry`: the collector cluster, ``tracing`` on every HTTP connection manager and
an access-log entry appended to each HCM's ``access_log`` list (other loggers stay).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config.resource import Resource
from ..config.types_mesh import MeshConfigSpec
from ..config.types_telemetry import CustomTag, MeshTelemetry, TelemetryProvider, TelemetrySpec
from ..model.proxy import Proxy
from ..model.snapshot import MeshSnapshot
from .common import T, duration, socket_address, typed

__all__ = [
    "ROOT_NAMESPACE",
    "TELEMETRY_PLAN",
    "TracingPlan",
    "TelemetryPlan",
    "resolve_plan",
    "telemetry_refs",
    "apply_telemetry",
    "with_plan",
    "plan_of",
    "ACCESS_LOG_FORMAT",
]

ROOT_NAMESPACE = "istio-system"
TELEMETRY_PLAN = "novamesh/telemetry-plan"
"""Key of the resolved plan in a class translation (consumed by translate_proxy, never sent)."""

HCM_NAME = "envoy.filters.network.http_connection_manager"
OTEL_CONFIG = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
ZIPKIN_CONFIG = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"
FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
CEL_FILTER = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
_HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

ACCESS_LOG_FORMAT: dict[str, str] = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "authority": "%REQ(:AUTHORITY)%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "request_duration": "%REQUEST_DURATION%",
    "response_duration": "%RESPONSE_DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "route_name": "%ROUTE_NAME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "traceparent": "%REQ(TRACEPARENT)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
}
"""Fields of every access-log line (Envoy command operators; identities are added per proxy)."""


@dataclass(frozen=True)
class TracingPlan:
    """Tracing of one proxy: where spans go, how many requests, which extra tags."""

    provider: TelemetryProvider
    sampling: float
    custom_tags: tuple[tuple[str, str, str, str], ...] = ()
    """(tag, kind, name-or-value, default): kind is literal, environment or header."""


@dataclass(frozen=True)
class TelemetryPlan:
    """What the Telemetry resources (and mesh defaults) say for one proxy."""

    tracing: TracingPlan | None = None
    access_log: bool = False
    access_log_filter: str = ""
    sources: tuple[str, ...] = ()
    """``ns/name`` of the Telemetry resources that applied, most general first."""


def _selects(resource: Resource, labels: Mapping[str, str]) -> bool:
    spec = resource.spec
    assert isinstance(spec, TelemetrySpec)
    if spec.selector is None:
        return False
    return all(labels.get(k) == v for k, v in spec.selector.match_labels.items())


def telemetry_refs(snapshot: MeshSnapshot, namespace: str, labels: Mapping[str, str]) -> list[Resource]:
    """The Telemetry resources applying to a workload, most general first: the root namespace's
    selector-less one, its namespace's selector-less one, the first (by name) selecting it."""
    out: list[Resource] = []
    general = [t for t in snapshot.telemetries if getattr(t.spec, "selector", None) is None]
    root = next((t for t in general if t.namespace == ROOT_NAMESPACE), None)
    if root is not None:
        out.append(root)
    if namespace != ROOT_NAMESPACE:
        own = next((t for t in general if t.namespace == namespace), None)
        if own is not None:
            out.append(own)
    workload = next((t for t in snapshot.telemetries if t.namespace == namespace and _selects(t, labels)), None)
    if workload is not None:
        out.append(workload)
    return out


def _tag(name: str, tag: CustomTag) -> tuple[str, str, str, str]:
    if tag.literal is not None:
        return (name, "literal", tag.literal.value, "")
    if tag.environment is not None:
        return (name, "environment", tag.environment.name, tag.environment.default_value)
    assert tag.header is not None
    return (name, "header", tag.header.name, tag.header.default_value)


def resolve_plan(snapshot: MeshSnapshot, namespace: str, labels: Mapping[str, str]) -> TelemetryPlan:
    """Merge the applying Telemetry resources over the mesh defaults (pure)."""
    mesh: MeshTelemetry = snapshot.mesh_telemetry
    mesh_config = getattr(snapshot.mesh_config, "spec", None)
    if isinstance(mesh_config, MeshConfigSpec) and mesh_config.extension_providers:
        mesh = mesh.with_extension_providers(mesh_config.extension_providers)
    layers = telemetry_refs(snapshot, namespace, labels)
    provider = mesh.default_tracing_provider()
    sampling = mesh.default_sampling
    tags: dict[str, tuple[str, str, str, str]] = {}
    reporting = True
    access_log, log_filter = mesh.access_log_default, ""
    for layer in layers:
        spec = layer.spec
        assert isinstance(spec, TelemetrySpec)
        for tracing in spec.tracing[:1]:
            if tracing.providers:
                provider = mesh.provider(tracing.providers[0].name)
            if tracing.random_sampling_percentage is not None:
                sampling = tracing.random_sampling_percentage
            if tracing.disable_span_reporting is not None:
                reporting = not tracing.disable_span_reporting
            tags.update({name: _tag(name, tag) for name, tag in tracing.custom_tags.items()})
        for logging in spec.access_logging[:1]:
            access_log = not logging.disabled if logging.disabled is not None else True
            if logging.filter is not None:
                log_filter = logging.filter.expression
    tracing_plan = None
    if provider is not None and provider.kind != "envoy_file" and reporting:
        tracing_plan = TracingPlan(provider, sampling, tuple(sorted(tags.values())))
    return TelemetryPlan(
        tracing=tracing_plan,
        access_log=access_log,
        access_log_filter=log_filter if access_log else "",
        sources=tuple(f"{t.namespace}/{t.name}" for t in layers),
    )


def collector_cluster_name(provider: TelemetryProvider) -> str:
    """Name of the cluster carrying spans to ``provider``."""
    return f"tracing|{provider.name}"


def _collector_cluster(provider: TelemetryProvider) -> dict[str, Any]:
    host, _, port = provider.address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
        kind = "STATIC"
    except ValueError:
        kind = "STRICT_DNS"
    name = collector_cluster_name(provider)
    cluster: dict[str, Any] = {
        "name": name,
        "type": kind,
        "connect_timeout": duration(1.0),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(host, int(port or 0))}}]}],
        },
    }
    if provider.kind == "opentelemetry":  # OTLP/gRPC needs HTTP/2
        cluster["typed_extension_protocol_options"] = {
            _HTTP_OPTIONS_KEY: typed(T.HTTP_OPTIONS, explicit_http_config={"http2_protocol_options": {}})
        }
    return cluster


def _service_name(proxy: Proxy) -> str:
    return f"{proxy.label_dict.get('app') or proxy.service}.{proxy.namespace}"


def _tracing(plan: TracingPlan, proxy: Proxy) -> dict[str, Any]:
    provider = plan.provider
    cluster = collector_cluster_name(provider)
    if provider.kind == "opentelemetry":
        tracer = {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": typed(OTEL_CONFIG, grpc_service={"envoy_grpc": {"cluster_name": cluster}, "timeout": "1s"},
                                  service_name=_service_name(proxy)),
        }
    else:
        tracer = {
            "name": "envoy.tracers.zipkin",
            "typed_config": typed(ZIPKIN_CONFIG, collector_cluster=cluster, collector_endpoint="/api/v2/spans",
                                  collector_endpoint_version="HTTP_JSON", trace_id_128bit=True,
                                  shared_span_context=False),
        }
    tags: list[dict[str, Any]] = []
    for tag, kind, value, default in plan.custom_tags:
        if kind == "literal":
            tags.append({"tag": tag, "literal": {"value": value}})
        elif kind == "environment":
            tags.append({"tag": tag, "environment": {"name": value, "default_value": default}})
        else:
            tags.append({"tag": tag, "request_header": {"name": value, "default_value": default}})
    out: dict[str, Any] = {"provider": tracer, "random_sampling": {"value": plan.sampling}}
    if tags:
        out["custom_tags"] = tags
    return out


def _access_log(plan: TelemetryPlan, proxy: Proxy, inbound: bool) -> dict[str, Any]:
    workload = f"{proxy.service}-{proxy.version}" if proxy.version else proxy.service
    fmt: dict[str, Any] = dict(ACCESS_LOG_FORMAT)
    fmt["reporter"] = "destination" if inbound else "source"
    side, peer = ("destination", "source") if inbound else ("source", "destination")
    fmt[f"{side}_workload"] = workload
    fmt[f"{side}_namespace"] = proxy.namespace
    fmt[f"{side}_address"] = proxy.address
    # The peer's SPIFFE id when the connection uses mTLS (empty otherwise).
    fmt[f"{peer}_principal"] = "%DOWNSTREAM_PEER_URI_SAN%" if inbound else "%UPSTREAM_PEER_URI_SAN%"
    fmt[f"{side}_principal"] = "%DOWNSTREAM_LOCAL_URI_SAN%" if inbound else "%UPSTREAM_LOCAL_URI_SAN%"
    entry: dict[str, Any] = {
        "name": "envoy.access_loggers.file",
        "typed_config": typed(FILE_LOG, path=proxy.access_log_path or "/dev/stdout",
                              log_format={"json_format": fmt, "omit_empty_values": False}),
    }
    if plan.access_log_filter:
        entry["filter"] = {
            "extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": typed(CEL_FILTER, expression=plan.access_log_filter),
            }
        }
    return entry


def with_plan(resources: dict[str, dict[str, dict[str, Any]]], plan: TelemetryPlan) -> dict[str, dict[str, dict[str, Any]]]:
    """``resources`` with ``plan`` recorded under :data:`TELEMETRY_PLAN` (when it does anything)."""
    if plan.tracing is not None or plan.access_log:
        resources[TELEMETRY_PLAN] = {"plan": {"plan": plan}}
    return resources


def plan_of(resources: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> TelemetryPlan | None:
    """The plan :func:`with_plan` recorded, or None."""
    plan = resources.get(TELEMETRY_PLAN, {}).get("plan", {}).get("plan")
    return plan if isinstance(plan, TelemetryPlan) else None


def _hcms(listener: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        f["typed_config"]
        for chain in listener.get("filter_chains", [])
        for f in chain.get("filters", [])
        if f.get("name") == HCM_NAME
    ]


def apply_telemetry(
    plan: TelemetryPlan, proxy: Proxy, clusters: dict[str, dict[str, Any]], listeners: dict[str, dict[str, Any]]
) -> None:
    """Add (in place) the collector cluster, HCM tracing and access-log entries for ``plan``."""
    if plan.tracing is None and not plan.access_log:
        return
    if plan.tracing is not None:
        clusters[collector_cluster_name(plan.tracing.provider)] = _collector_cluster(plan.tracing.provider)
    for listener in listeners.values():
        inbound = listener.get("traffic_direction") == "INBOUND"
        for hcm in _hcms(listener):
            if plan.tracing is not None:
                hcm["tracing"] = _tracing(plan.tracing, proxy)
            if plan.access_log:
                hcm["access_log"] = [*hcm.get("access_log", []), _access_log(plan, proxy, inbound)]
