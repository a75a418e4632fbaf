"""Telemetry (telemetry.istio.io): accepted input, bad input rejected with the field path and a
hint (nothing stored), settings-defined providers, and how levels merge for one workload."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from novamesh.config import parse_documents
from novamesh.config._semantic_telemetry import cel_shape_problem
from novamesh.config.names import canonical_kind
from novamesh.config.types_telemetry import TelemetrySpec, mesh_telemetry_from_settings
from novamesh.controlplane.mesh import Mesh
from novamesh.errors import ConfigError, NovameshError
from novamesh.model.snapshot import build_snapshot
from novamesh.settings import Settings
from novamesh.store import SqliteStore
from novamesh.translate.telemetry import resolve_plan

MESH_WIDE = """\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 10
    customTags:
      team: {literal: {value: payments}}
      user: {header: {name: x-user, defaultValue: anonymous}}
      node: {environment: {name: HOSTNAME}}
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400 && request.path != '/healthz'"}
"""

WORKLOAD = """\
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  tracing: [{randomSamplingPercentage: 100, customTags: {team: {literal: {value: reviews}}}}]
  accessLogging: [{disabled: true}]
"""


def _violations(text: str) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_documents(textwrap.dedent(text), "bad.yaml")
    return [(v.path, v.message, v.hint) for v in info.value.violations]


def test_telemetry_is_accepted_in_both_versions() -> None:
    mesh_wide, workload = parse_documents(MESH_WIDE + "---\n" + WORKLOAD, "t.yaml")
    assert mesh_wide.kind == "Telemetry" and mesh_wide.namespace == "istio-system"
    spec = mesh_wide.spec
    assert isinstance(spec, TelemetrySpec)
    assert spec.tracing[0].random_sampling_percentage == 10
    assert spec.tracing[0].custom_tags["user"].header is not None
    assert isinstance(workload.spec, TelemetrySpec) and workload.spec.selector is not None
    assert canonical_kind("telemetries") == "Telemetry"


@pytest.mark.parametrize(
    ("old", "new", "path", "words"),
    [
        ("randomSamplingPercentage: 10", "randomSamplingPercentage: 150", "spec.tracing[0].randomSamplingPercentage", "<= 100"),
        ("providers: [{name: otel}]", "providers: [{name: otel}, {name: zipkin}]", "spec.tracing[0].providers[1]", "one provider"),
        ("providers: [{name: envoy}]", "providers: [{name: otel-als}]", "spec.accessLogging[0].providers[0].name", "only 'envoy'"),
        ("literal: {value: payments}", "literal: {value: payments}, header: {name: x}", "spec.tracing[0].customTags.team", "exactly one"),
        ("name: x-user,", "name: 'x user',", "spec.tracing[0].customTags.user.header.name", "not an HTTP header name"),
        ("filter: {expression: \"response.code >= 400 && request.path != '/healthz'\"}", "filter: {expression: 'response.code >= (400'}",
         "spec.accessLogging[0].filter.expression", "unclosed '('"),
        ("  accessLogging:", "  metrics: [{providers: [{name: prometheus}]}]\n  accessLogging:", "spec.metrics", "not supported by novamesh yet"),
        ("  - providers: [{name: otel}]", "  - match: {mode: CLIENT}\n    providers: [{name: otel}]", "spec.tracing[0].match", "not supported"),
        ("  tracing:", "  selector: {matchLabels: {}}\n  tracing:", "spec.selector.matchLabels", "selects every workload"),
    ],
)
def test_bad_telemetry_fields(old: str, new: str, path: str, words: str) -> None:
    assert old in MESH_WIDE
    problems = _violations(MESH_WIDE.replace(old, new))
    assert any(p == path and words in (m + h) for p, m, h in problems), problems


def test_wrong_api_group_and_empty_telemetry() -> None:
    problems = _violations(MESH_WIDE.replace("telemetry.istio.io/v1", "telemetry.istio.io/v2"))
    assert any(p == "apiVersion" and "v1alpha1" in m for p, m, _ in problems), problems
    empty = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t}\nspec: {}\n"
    assert any(p == "spec" and "empty Telemetry" in m for p, m, _ in _violations(empty))


def test_cel_shape() -> None:
    assert cel_shape_problem("response.code >= 400") is None
    assert cel_shape_problem("request.headers['x-a'] == ')'") is None
    assert cel_shape_problem("(a") == "unclosed '('"
    assert cel_shape_problem("a)") == "unbalanced ')'"
    assert cel_shape_problem("'abc") is not None


MESH_CONFIG = """\
apiVersion: novamesh.io/v1alpha1
kind: MeshConfig
metadata: {name: default, namespace: istio-system}
spec:
  extensionProviders:
  - name: jaeger
    opentelemetry: {service: 127.0.0.1, port: 14317}
"""


def test_unknown_provider_stores_nothing_until_mesh_config_defines_it(tmp_path: Path) -> None:
    mesh = Mesh(Settings(data_dir=str(tmp_path)), SqliteStore(tmp_path / "store.db"))
    jaeger = MESH_WIDE.replace("name: otel", "name: jaeger")
    with pytest.raises(ConfigError) as info:
        mesh.apply([{"file": "bad.yaml", "content": jaeger}])
    (v,) = info.value.violations
    assert v.path == "spec.tracing[0].providers[0].name" and "unknown tracing provider 'jaeger'" in v.message
    assert "extensionProviders" in v.hint and v.file == "bad.yaml"
    assert mesh.store.list() == []
    mesh.apply([{"file": "ok.yaml", "content": MESH_CONFIG + "---\n" + jaeger}])
    assert len(mesh.store.list()) == 2
    # Removing the provider a Telemetry uses is refused, and changes nothing.
    before = mesh.store.list()
    with pytest.raises(ConfigError):
        mesh.apply([{"file": "mc.yaml", "content": MESH_CONFIG.replace("name: jaeger", "name: other")}])
    assert mesh.store.list() == before
    plan = resolve_plan(mesh.snapshot(), "default", {"app": "x"})
    assert plan.tracing is not None and plan.tracing.provider.address == "127.0.0.1:14317"


def test_bad_extension_provider() -> None:
    both = MESH_CONFIG.replace("opentelemetry: {service: 127.0.0.1, port: 14317}",
                               "opentelemetry: {service: a, port: 1}\n    zipkin: {service: b, port: 2}")
    assert any(p == "spec.extensionProviders[0]" and "exactly one" in m for p, m, _ in _violations(both))
    als = MESH_CONFIG.replace("opentelemetry: {service: 127.0.0.1, port: 14317}", "envoyOtelAls: {service: a, port: 1}")
    assert any("envoyOtelAls" in m and "not supported" in m for _, m, _ in _violations(als))


def test_providers_come_from_settings() -> None:
    mesh = mesh_telemetry_from_settings(Settings(tracing_otlp_address="127.0.0.1:4317", tracing_sampling=5.0))
    assert mesh.provider("otel") is not None and mesh.provider("zipkin") is None
    assert mesh.default_sampling == 5.0 and mesh.access_log_default is False
    assert Settings.from_env({"NOVAMESH_ACCESS_LOG_DEFAULT": "false"}).access_log_default is False
    assert Settings.from_env({"NOVAMESH_ACCESS_LOG_DEFAULT": "on"}).access_log_default is True
    with pytest.raises(NovameshError):
        Settings.from_env({"NOVAMESH_ACCESS_LOG_DEFAULT": "maybe"})


def test_levels_merge_for_one_workload() -> None:
    resources = parse_documents(MESH_WIDE + "---\n" + WORKLOAD, "t.yaml")
    mesh = mesh_telemetry_from_settings(Settings(tracing_otlp_address="127.0.0.1:4317"))
    snap = build_snapshot({r.key: r for r in resources}, [], revision=1, registry_version=1, mesh_telemetry=mesh)
    reviews = resolve_plan(snap, "shop", {"app": "reviews"})
    assert reviews.sources == ("istio-system/mesh-default", "shop/reviews")
    assert reviews.tracing is not None and reviews.tracing.sampling == 100
    tags = {t[0]: t for t in reviews.tracing.custom_tags}
    assert tags["team"][2] == "reviews" and tags["user"][1] == "header"  # merged by name
    assert reviews.access_log is False
    other = resolve_plan(snap, "shop", {"app": "ratings"})
    assert other.tracing is not None and other.tracing.sampling == 10
    assert other.access_log is True and other.access_log_filter.startswith("response.code >= 400")
    # Without a provider in settings there is nothing to send spans to.
    bare = build_snapshot({r.key: r for r in resources}, [], revision=1, registry_version=1)
    assert resolve_plan(bare, "shop", {"app": "ratings"}).tracing is None
