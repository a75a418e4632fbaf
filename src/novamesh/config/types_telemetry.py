"""Typed model of Istio's Telemetry kind (``telemetry.istio.io/v1`` and ``v1alpha1``): tracing and
access logging, plus the mesh-level providers they name.

Field names follow Istio's YAML exactly (camelCase aliases, unknown fields rejected). Real Istio
fields the data plane does not honour yet (``metrics``, ``targetRef``, ``tracing[].match``...)
are listed in ``TELEMETRY_NOT_YET_SUPPORTED`` and rejected by name. Semantic checks live in
:mod:`._semantic_telemetry`; translation in :mod:`novamesh.translate.telemetry`.

Providers: as in Istio, MeshConfig ``extensionProviders`` define tracing providers
(:class:`ExtensionProvider`, a field of ``MeshConfigSpec``); settings define two more
(``tracing_otlp_address`` → ``otel``, ``tracing_zipkin_address`` → ``zipkin``, see
:func:`mesh_telemetry_from_settings`), and ``envoy`` is the built-in access-log provider (JSON
lines to the workload's access log file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, model_validator

from .base import Spec

if TYPE_CHECKING:  # settings has no dependencies, but keep config importable on its own
    from ..settings import Settings

__all__ = [
    "TELEMETRY_NOT_YET_SUPPORTED",
    "ENVOY_ACCESS_LOG_PROVIDER",
    "TRACING_PROVIDERS",
    "ProviderRef",
    "LiteralTag",
    "EnvironmentTag",
    "HeaderTag",
    "CustomTag",
    "Tracing",
    "AccessLoggingFilter",
    "AccessLogging",
    "TelemetrySelector",
    "ProviderService",
    "ExtensionProvider",
    "TelemetrySpec",
    "TelemetryProvider",
    "MeshTelemetry",
    "mesh_telemetry_from_settings",
]

ENVOY_ACCESS_LOG_PROVIDER = "envoy"
"""Istio's built-in access-log provider name (here: JSON lines to the workload's access.log)."""

TRACING_PROVIDERS: tuple[str, ...] = ("otel", "zipkin")
"""Tracing provider names novamesh defines (from settings; see :func:`mesh_telemetry_from_settings`)."""


class ProviderRef(Spec):
    """A provider named by a Telemetry (defined at mesh level)."""

    name: str = Field(min_length=1)


class LiteralTag(Spec):
    """A span tag with a fixed value."""

    value: str


class EnvironmentTag(Spec):
    """A span tag read from the proxy's environment."""

    name: str = Field(min_length=1)
    default_value: str = ""


class HeaderTag(Spec):
    """A span tag read from a request header."""

    name: str = Field(min_length=1)
    default_value: str = ""


class CustomTag(Spec):
    """Istio's tracing custom tag: exactly one of literal, environment, header."""

    literal: LiteralTag | None = None
    environment: EnvironmentTag | None = None
    header: HeaderTag | None = None

    @model_validator(mode="after")
    def _one_of(self) -> CustomTag:
        set_ = [k for k in ("literal", "environment", "header") if getattr(self, k) is not None]
        if len(set_) != 1:
            found = ", ".join(set_) if set_ else "none"
            raise ValueError(f"a custom tag needs exactly one of literal, environment, header (found {found})")
        return self


class Tracing(Spec):
    """One ``tracing`` entry of a Telemetry."""

    providers: list[ProviderRef] = Field(default_factory=list)
    random_sampling_percentage: float | None = Field(default=None, ge=0.0, le=100.0)
    disable_span_reporting: bool | None = None
    custom_tags: dict[str, CustomTag] = Field(default_factory=dict)


class AccessLoggingFilter(Spec):
    """A CEL expression; only matching requests are logged."""

    expression: str = Field(min_length=1)


class AccessLogging(Spec):
    """One ``accessLogging`` entry of a Telemetry."""

    providers: list[ProviderRef] = Field(default_factory=list)
    disabled: bool | None = None
    filter: AccessLoggingFilter | None = None


class ProviderService(Spec):
    """Where an extension provider's collector listens (Istio: ``service`` and ``port``). In
    local mode ``service`` is an IP address or a host name this machine resolves."""

    service: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class ExtensionProvider(Spec):
    """A tracing provider defined in MeshConfig ``extensionProviders`` (Istio's message):
    exactly one of ``opentelemetry`` (OTLP/gRPC) and ``zipkin``."""

    name: str = Field(min_length=1)
    opentelemetry: ProviderService | None = None
    zipkin: ProviderService | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ExtensionProvider:
        set_ = [k for k in ("opentelemetry", "zipkin") if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(f"an extension provider needs exactly one of opentelemetry, zipkin (found {', '.join(set_) or 'none'})")
        return self


class TelemetrySelector(Spec):
    """Istio's ``istio.type.v1beta1.WorkloadSelector`` (``matchLabels``)."""

    match_labels: dict[str, str] = Field(default_factory=dict)


class TelemetrySpec(Spec):
    """Istio Telemetry: tracing and access logging for the workloads it selects."""

    selector: TelemetrySelector | None = None
    tracing: list[Tracing] = Field(default_factory=list)
    access_logging: list[AccessLogging] = Field(default_factory=list)


TELEMETRY_NOT_YET_SUPPORTED: dict[type[BaseModel], tuple[str, ...]] = {
    TelemetrySpec: ("metrics", "targetRef", "targetRefs"),
    Tracing: ("match", "useRequestIdForTraceSampling", "enableIstioTags"),
    AccessLogging: ("match",),
    ProviderService: ("maxTagLength", "http", "grpc", "resourceDetectors", "dynatraceSampler", "enable64bitTraceId",
                      "path", "traceContextOption", "timeout", "headers"),
    ExtensionProvider: ("envoyFileAccessLog", "envoyOtelAls", "envoyHttpAls", "envoyTcpAls", "prometheus", "stackdriver",
                        "skywalking", "datadog", "lightstep", "envoyExtAuthzHttp", "envoyExtAuthzGrpc", "sds"),
}
"""Real Istio fields of these models that novamesh rejects as not supported yet."""


@dataclass(frozen=True)
class TelemetryProvider:
    """A mesh-level provider (Istio: MeshConfig ``extensionProviders``).

    ``kind`` is ``opentelemetry`` (OTLP/gRPC), ``zipkin`` (HTTP JSON v2) or ``envoy_file``
    (access logs); ``address`` is ``host:port`` of the collector (empty for ``envoy_file``)."""

    name: str
    kind: Literal["opentelemetry", "zipkin", "envoy_file"]
    address: str = ""


@dataclass(frozen=True)
class MeshTelemetry:
    """Mesh-wide telemetry defaults, translated together with the Telemetry resources."""

    providers: tuple[TelemetryProvider, ...] = (TelemetryProvider(ENVOY_ACCESS_LOG_PROVIDER, "envoy_file"),)
    default_sampling: float = 1.0
    """Istio's default random sampling percentage."""
    access_log_default: bool = False
    """Access logs without any Telemetry saying otherwise (Istio: off unless accessLogFile)."""

    def provider(self, name: str) -> TelemetryProvider | None:
        """The provider called ``name``, or None."""
        return next((p for p in self.providers if p.name == name), None)

    def with_extension_providers(self, extra: Sequence[ExtensionProvider]) -> MeshTelemetry:
        """These defaults plus MeshConfig ``extensionProviders`` (which win on a name clash)."""
        added = []
        for p in extra:
            if p.opentelemetry is not None:
                added.append(TelemetryProvider(p.name, "opentelemetry", f"{p.opentelemetry.service}:{p.opentelemetry.port}"))
            elif p.zipkin is not None:
                added.append(TelemetryProvider(p.name, "zipkin", f"{p.zipkin.service}:{p.zipkin.port}"))
        names = {p.name for p in added}
        kept = tuple(p for p in self.providers if p.name not in names)
        return dataclasses.replace(self, providers=(*kept, *added))

    def default_tracing_provider(self) -> TelemetryProvider | None:
        """The provider a tracing entry without ``providers`` uses: the first tracing one."""
        return next((p for p in self.providers if p.kind != "envoy_file"), None)


def mesh_telemetry_from_settings(settings: Settings) -> MeshTelemetry:
    """Providers and defaults from ``settings`` (``tracing_*`` and ``access_log_*`` fields)."""
    providers = [TelemetryProvider(ENVOY_ACCESS_LOG_PROVIDER, "envoy_file")]
    if settings.tracing_otlp_address:
        providers.append(TelemetryProvider("otel", "opentelemetry", settings.tracing_otlp_address))
    if settings.tracing_zipkin_address:
        providers.append(TelemetryProvider("zipkin", "zipkin", settings.tracing_zipkin_address))
    return MeshTelemetry(
        providers=tuple(providers),
        default_sampling=settings.tracing_sampling,
        access_log_default=settings.access_log_default,
    )
