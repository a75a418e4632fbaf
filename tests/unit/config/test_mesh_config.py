"""MeshConfig: bad input is rejected with the field path and a hint (and nothing is stored), and
the mesh-wide defaults merge under every service's own config in Istio's order."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from novamesh.analysis.context import Context
from novamesh.analysis.runner import analyze
from novamesh.config import parse_documents
from novamesh.config.resource import Resource
from novamesh.config.types_mesh import MeshConfigSpec
from novamesh.controlplane.mesh import Mesh
from novamesh.errors import ConfigError, Violation
from novamesh.model.snapshot import MeshSnapshot, build_snapshot
from novamesh.registry import Workload, WorkloadPort
from novamesh.settings import Settings
from novamesh.store import SqliteStore
from novamesh.translate import TranslateOptions
from novamesh.translate.clusters import outbound_clusters
from novamesh.translate.mesh_defaults import effective_mesh_config
from novamesh.translate.routes import outbound_route_config
from novamesh.translate.scoping import outbound_policy

HEAD = """\
apiVersion: novamesh.io/v1alpha1
kind: MeshConfig
metadata: {name: default, namespace: istio-system}
spec:
"""

GOOD = HEAD + """\
  defaultHttpTimeout: 15s
  defaultHttpRetryPolicy: {attempts: 2, retryOn: "connect-failure,refused-stream,unavailable,cancelled,503"}
  defaultTrafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1000, connectTimeout: 2s}
      http: {http1MaxPendingRequests: 500, maxRetries: 5}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  outboundTrafficPolicy: {mode: ALLOW_ANY}
"""


def _violations(body: str, head: str = HEAD) -> list[Violation]:
    with pytest.raises(ConfigError) as info:
        parse_documents(head + textwrap.indent(textwrap.dedent(body), "  "), "mesh.yaml")
    assert all(v.hint for v in info.value.violations), info.value
    return info.value.violations


def _one(body: str) -> Violation:
    found = _violations(body)
    assert len(found) == 1, [str(v) for v in found]
    return found[0]


def _mesh(tmp_path: Path) -> Mesh:
    return Mesh(Settings(data_dir=str(tmp_path)), SqliteStore(tmp_path / "store.db"))


# --- loading and bad input -------------------------------------------------------------------


def test_full_mesh_config_loads_typed() -> None:
    [res] = parse_documents(GOOD, "mesh.yaml")
    assert res.kind == "MeshConfig" and res.key == ("MeshConfig", "istio-system", "default")
    spec = res.spec
    assert isinstance(spec, MeshConfigSpec)
    assert spec.timeout_seconds() == 15.0
    assert spec.default_http_retry_policy is not None and spec.default_http_retry_policy.attempts == 2
    assert spec.default_traffic_policy is not None and spec.default_traffic_policy.outlier_detection is not None
    assert spec.outbound_traffic_policy is not None and spec.outbound_traffic_policy.mode == "ALLOW_ANY"


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        ("defaultHttpTimeout: -5s\n", "spec.defaultHttpTimeout", "not a duration"),
        ("defaultHttpTimeout: 15\n", "spec.defaultHttpTimeout", "expected string"),
        ("defaultHttpTimeout: 15sec\n", "spec.defaultHttpTimeout", "not a duration"),
        ("defaultHttpTimeout: fifteen seconds\n", "spec.defaultHttpTimeout", "not a duration"),
        ("defaultHttpRetryPolicy: {attempts: 2, perTryTimeout: 2x}\n", "spec.defaultHttpRetryPolicy.perTryTimeout", "not a duration"),
        ("defaultTrafficPolicy: {outlierDetection: {interval: -1s}}\n", "spec.defaultTrafficPolicy.outlierDetection.interval", "not a duration"),
        ("defaultTrafficPolicy: {outlierDetection: {baseEjectionTime: 0.5ms}}\n", "spec.defaultTrafficPolicy.outlierDetection.baseEjectionTime", "1ms"),
        ("defaultTrafficPolicy: {connectionPool: {tcp: {connectTimeout: 1.0005s}}}\n", "spec.defaultTrafficPolicy.connectionPool.tcp.connectTimeout", "milliseconds"),
        ("defaultTrafficPolicy: {outlierDetection: {maxEjectionPercent: 150}}\n", "spec.defaultTrafficPolicy.outlierDetection.maxEjectionPercent", "<= 100"),
        ("defaultHttpRetryPolicy: {attempts: 2, retryOn: connect-failur}\n", "spec.defaultHttpRetryPolicy.retryOn", "unknown retryOn"),
        ("defaultHttpTimeout: 1s\ndefaultHttpRetryPolicy: {attempts: 2, perTryTimeout: 5s, retryOn: 5xx}\n",
         "spec.defaultHttpRetryPolicy.perTryTimeout", "longer than the route timeout"),
        ("defaultTrafficPolicy: {}\n", "spec.defaultTrafficPolicy", "no settings"),
        ("outboundTrafficPolicy: {mode: OPEN}\n", "spec.outboundTrafficPolicy.mode", "expected one of"),
    ],
)
def test_bad_values_are_rejected_with_path_and_hint(body: str, path: str, words: str) -> None:
    found = _one(body)
    assert found.path == path and words in found.message, str(found)
    assert found.kind == "MeshConfig" and found.line is not None


@pytest.mark.parametrize(
    ("body", "path", "hint"),
    [
        ("defaultHttpTimout: 15s\n", "spec.defaultHttpTimout", "did you mean 'defaultHttpTimeout'?"),
        ("defaultTrafficPolicy: {loadBalancer: {simple: RANDOM}}\n", "spec.defaultTrafficPolicy.loadBalancer",
         "connectionPool, outlierDetection"),
        ("defaultTrafficPolicy: {outlierDetection: {consecutive5xx: 3}}\n", "spec.defaultTrafficPolicy.outlierDetection.consecutive5xx",
         "did you mean"),
    ],
)
def test_unknown_fields_are_named_with_a_suggestion(body: str, path: str, hint: str) -> None:
    found = _one(body)
    assert found.path == path and "unknown field" in found.message and hint in found.hint, str(found)


def test_istio_mesh_fields_novamesh_lacks_are_named_as_such() -> None:
    found = _one("accessLogFile: /dev/stdout\n")
    assert found.path == "spec.accessLogFile" and "not supported by novamesh yet" in found.message


def _apply_error(mesh: Mesh, content: str) -> list[Violation]:
    with pytest.raises(ConfigError) as info:
        mesh.apply([{"file": "mesh.yaml", "content": content}])
    assert all(v.hint for v in info.value.violations)
    return info.value.violations


def _unchanged(mesh: Mesh, revision: int, count: int) -> None:
    assert mesh.store.current_revision() == revision and len(mesh.store.list()) == count and len(mesh.resources) == count


def test_mesh_config_outside_the_root_namespace_stores_nothing(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    [v] = _apply_error(mesh, GOOD.replace("namespace: istio-system", "namespace: prod"))
    assert v.path == "metadata.namespace" and "root namespace 'istio-system'" in v.message
    assert "namespace: istio-system" in v.hint
    [v] = _apply_error(mesh, GOOD.replace("metadata: {name: default, namespace: istio-system}", "metadata: {name: default}"))
    assert v.path == "metadata.namespace" and "not in 'default'" in v.message
    _unchanged(mesh, 0, 0)


def test_a_second_mesh_config_stores_nothing(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    assert mesh.apply([{"file": "mesh.yaml", "content": GOOD}]).revision == 1
    [v] = _apply_error(mesh, GOOD.replace("name: default", "name: strict"))
    assert v.path == "metadata.name" and "one MeshConfig" in v.message and "already has MeshConfig istio-system/default" in v.message
    [v] = _apply_error(mesh, GOOD.replace("name: default, namespace: istio-system", "name: team, namespace: payments"))
    assert v.path == "metadata.namespace" and "already has" in v.message
    _unchanged(mesh, 1, 1)


def test_wrong_api_version_and_bad_spec_in_one_apply_store_nothing(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec: {hosts: [r], http: [{route: [{destination: {host: r}}]}]}\n"
    [v] = _apply_error(mesh, vs + "---\n" + GOOD.replace("novamesh.io/v1alpha1", "networking.istio.io/v1"))
    assert v.path == "apiVersion" and "novamesh.io/v1alpha1" in v.hint
    [v] = _apply_error(mesh, vs + "---\n" + HEAD + "  defaultHttpTimeout: -1s\n")
    assert v.path == "spec.defaultHttpTimeout"
    _unchanged(mesh, 0, 0)


def test_mesh_config_is_versioned_like_any_resource(tmp_path: Path) -> None:
    mesh = _mesh(tmp_path)
    mesh.apply([{"file": "mesh.yaml", "content": GOOD}])
    mesh.apply([{"file": "mesh.yaml", "content": GOOD.replace("15s", "30s")}])
    assert mesh.snapshot().mesh_config is not None
    diff = mesh.diff(1, 2)
    assert "-  defaultHttpTimeout: 15s" in diff and "+  defaultHttpTimeout: 30s" in diff
    mesh.rollback()
    spec = mesh.get("mesh-config", "istio-system", "default").spec
    assert isinstance(spec, MeshConfigSpec) and spec.default_http_timeout == "15s"
    assert mesh.revision == 3


# --- merging -----------------------------------------------------------------------------------


def _res(kind: str, name: str, spec: dict[str, Any], namespace: str = "default") -> Resource:
    api = "novamesh.io/v1alpha1" if kind == "MeshConfig" else "networking.istio.io/v1"
    doc = f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
    import json

    [res] = parse_documents(doc + "spec: " + json.dumps(spec) + "\n")
    return res


def _snap(*resources: Resource) -> MeshSnapshot:
    workloads = [
        Workload(id=f"r{i}", service="reviews", namespace="default", version=v, address=f"127.1.0.{i + 3}",
                 labels=(("app", "reviews"), ("version", v)), ports=(WorkloadPort(9080, "HTTP"), WorkloadPort(9081, "HTTP")), ready=True)
        for i, v in enumerate(("v1", "v2"))
    ]
    return build_snapshot({r.key: r for r in resources}, workloads, revision=1, registry_version=1)


MESH = _res("MeshConfig", "default", {
    "defaultHttpTimeout": "15s",
    "defaultHttpRetryPolicy": {"attempts": 4, "retryOn": "connect-failure,503"},
    "defaultTrafficPolicy": {
        "connectionPool": {"http": {"http1MaxPendingRequests": 100}},
        "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s", "baseEjectionTime": "30s", "maxEjectionPercent": 50},
    },
}, namespace="istio-system")
CLUSTER = "outbound|{port}|{subset}|reviews.default.svc.cluster.local"


def _clusters(*resources: Resource) -> dict[str, dict[str, Any]]:
    return outbound_clusters(_snap(*resources), TranslateOptions())


def _cluster(clusters: dict[str, dict[str, Any]], subset: str = "", port: int = 9080) -> dict[str, Any]:
    return clusters[CLUSTER.format(port=port, subset=subset)]


def test_mesh_default_applies_to_a_service_without_config() -> None:
    c = _cluster(_clusters(MESH))
    assert c["circuit_breakers"] == {"thresholds": [{"max_pending_requests": 100}]}
    assert c["outlier_detection"]["consecutive_5xx"] == 5 and c["outlier_detection"]["max_ejection_percent"] == 50
    plain = _cluster(_clusters())
    assert "circuit_breakers" not in plain and "outlier_detection" not in plain


def test_merge_precedence_mesh_then_rule_then_subset_then_port_level() -> None:
    dr = _res("DestinationRule", "reviews", {
        "host": "reviews",
        "trafficPolicy": {
            "connectionPool": {"tcp": {"maxConnections": 7}},  # replaces the mesh pool as a whole
            "portLevelSettings": [{"port": {"number": 9081}, "loadBalancer": {"simple": "RANDOM"}}],
        },
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"},
             "trafficPolicy": {"outlierDetection": {"consecutive5xxErrors": 9},
                               "portLevelSettings": [{"port": {"number": 9081}, "connectionPool": {"http": {"maxRetries": 1}}}]}},
        ],
    })
    clusters = _clusters(MESH, dr)
    # rule level: its pool wins over the mesh pool; outlier detection is still the mesh's
    top = _cluster(clusters)
    assert top["circuit_breakers"] == {"thresholds": [{"max_connections": 7}]}
    assert top["outlier_detection"]["consecutive_5xx"] == 5
    # subset without a policy: the rule's
    v1 = _cluster(clusters, "v1")
    assert (v1["circuit_breakers"], v1["outlier_detection"]) == (top["circuit_breakers"], top["outlier_detection"])
    # subset policy: its outlier detection over the rule/mesh one, the rule's pool kept
    v2 = _cluster(clusters, "v2")
    assert v2["outlier_detection"]["consecutive_5xx"] == 9 and "max_ejection_percent" not in v2["outlier_detection"]
    assert v2["circuit_breakers"] == {"thresholds": [{"max_connections": 7}]}
    # rule's port-level entry replaces the rule's settings: pool falls back to the mesh default
    p81 = _cluster(clusters, "", 9081)
    assert p81["lb_policy"] == "RANDOM" and p81["circuit_breakers"] == {"thresholds": [{"max_pending_requests": 100}]}
    assert p81["outlier_detection"]["consecutive_5xx"] == 5
    # subset's port-level entry wins over everything; what it omits comes from the mesh
    v2p = _cluster(clusters, "v2", 9081)
    assert v2p["circuit_breakers"] == {"thresholds": [{"max_retries": 1}]}
    assert v2p["outlier_detection"]["consecutive_5xx"] == 5 and v2p["lb_policy"] == "ROUND_ROBIN"


def _routes(*resources: Resource) -> dict[str, dict[str, Any]]:
    config = outbound_route_config(_snap(*resources), "default")
    return {vh["name"]: vh for vh in config["virtual_hosts"]}


def test_mesh_timeout_and_retries_apply_to_default_and_vs_routes() -> None:
    vhost = _routes(MESH)["reviews.default.svc.cluster.local:9080"]
    action = vhost["routes"][0]["route"]
    assert action["timeout"] == "15s"
    assert action["retry_policy"]["num_retries"] == 4
    assert action["retry_policy"]["retry_on"] == "connect-failure,retriable-status-codes"
    assert action["retry_policy"]["retriable_status_codes"] == [503]
    without = _routes()["reviews.default.svc.cluster.local:9080"]["routes"][0]["route"]
    assert without["timeout"] == "0s" and without["retry_policy"]["num_retries"] == 2


def test_vs_route_timeout_and_retries_override_the_mesh_as_a_whole() -> None:
    vs = _res("VirtualService", "reviews", {"hosts": ["reviews"], "http": [
        {"match": [{"uri": {"prefix": "/slow"}}], "route": [{"destination": {"host": "reviews"}}], "timeout": "60s",
         "retries": {"attempts": 1}},
        {"match": [{"uri": {"prefix": "/stream"}}], "route": [{"destination": {"host": "reviews"}}], "timeout": "0s",
         "retries": {"attempts": 0}},
        {"route": [{"destination": {"host": "reviews"}}]},
    ]})
    routes = _routes(MESH, vs)["reviews.default.svc.cluster.local:9080"]["routes"]
    slow, stream, rest = (r["route"] for r in routes)
    assert slow["timeout"] == "60s" and slow["retry_policy"]["num_retries"] == 1
    # The route's retries replace the mesh policy whole: retryOn is Istio's built-in one, not the mesh's.
    assert slow["retry_policy"]["retry_on"] == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    assert stream["timeout"] == "0s" and "retry_policy" not in stream
    assert rest["timeout"] == "15s" and rest["retry_policy"]["num_retries"] == 4


def test_mesh_attempts_zero_turns_default_retries_off() -> None:
    mesh = _res("MeshConfig", "default", {"defaultHttpRetryPolicy": {"attempts": 0}}, namespace="istio-system")
    action = _routes(mesh)["reviews.default.svc.cluster.local:9080"]["routes"][0]["route"]
    assert "retry_policy" not in action and action["timeout"] == "0s"


def test_outbound_policy_falls_back_to_the_mesh_config_after_every_sidecar() -> None:
    mesh = _res("MeshConfig", "default", {"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}, namespace="istio-system")
    assert outbound_policy(_snap(), "") == ("REGISTRY_ONLY", "the novamesh default")
    assert outbound_policy(_snap(mesh), "") == ("ALLOW_ANY", "MeshConfig istio-system/default")
    root = _res("Sidecar", "default", {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}, namespace="istio-system")
    assert outbound_policy(_snap(mesh, root), "") == ("REGISTRY_ONLY", "Sidecar istio-system/default")


def test_effective_view_names_the_source_of_every_value() -> None:
    view = effective_mesh_config(_snap(MESH), 10.0)
    rows = {r["field"]: r for r in view["fields"]}
    assert view["meshConfig"] == "MeshConfig istio-system/default"
    assert rows["defaultHttpTimeout"]["value"] == "15s" and rows["defaultHttpTimeout"]["source"] == view["meshConfig"]
    assert rows["defaultHttpRetryPolicy.perTryTimeout"]["configured"] is False
    pending = rows["defaultTrafficPolicy.connectionPool.http.http1MaxPendingRequests"]
    assert (pending["value"], pending["configured"]) == (100, True)
    conns = rows["defaultTrafficPolicy.connectionPool.tcp.maxConnections"]
    assert (conns["value"], conns["source"]) == (1024, "Envoy default")
    assert rows["defaultTrafficPolicy.connectionPool.tcp.connectTimeout"]["value"] == "10s"
    assert view["effective"]["defaultTrafficPolicy"]["outlierDetection"]["maxEjectionPercent"] == 50
    assert rows["outboundTrafficPolicy.mode"]["value"] == "REGISTRY_ONLY"
    empty = {r["field"]: r for r in effective_mesh_config(_snap(), 10.0)["fields"]}
    assert not any(r["configured"] for r in empty.values())
    assert empty["defaultTrafficPolicy.outlierDetection"]["value"] == "off"


def test_nm0001_is_quiet_when_the_mesh_sets_a_default_timeout() -> None:
    vs = _res("VirtualService", "reviews", {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]})

    def codes(*resources: Resource) -> list[str]:
        return [m.code for m in analyze(Context({r.key: r for r in resources}))]

    assert "NM0001" in codes(vs)
    assert "NM0001" not in codes(vs, MESH)
    zero = _res("MeshConfig", "default", {"defaultHttpTimeout": "0s"}, namespace="istio-system")
    assert "NM0001" in codes(vs, zero)


def test_recommended_profile_in_the_docs_is_valid() -> None:
    text = (Path(__file__).resolve().parents[3] / "docs" / "mesh-standards.md").read_text()
    block = text.split("## Recommended standard profile", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    [res] = parse_documents(block, "docs/mesh-standards.md")
    assert isinstance(res.spec, MeshConfigSpec) and res.spec.timeout_seconds() == 15.0


def test_rest_api_serves_the_effective_mesh_config(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from novamesh.api.app import create_app

    mesh = _mesh(tmp_path)
    api = TestClient(create_app(mesh))
    before = api.get("/api/v1/mesh-config").json()
    assert before["meshConfig"] == "" and not any(r["configured"] for r in before["fields"])
    bad = api.post("/api/v1/apply", json={"documents": [{"file": "m.yaml", "content": GOOD.replace("15s", "15 s")}]})
    assert bad.status_code == 422 and bad.json()["violations"][0]["path"] == "spec.defaultHttpTimeout"
    assert api.post("/api/v1/apply", json={"documents": [{"file": "m.yaml", "content": GOOD}]}).status_code == 200
    after = api.get("/api/v1/mesh-config").json()
    rows = {r["field"]: r for r in after["fields"]}
    assert after["meshConfig"] == "MeshConfig istio-system/default" and after["revision"] == 1
    assert rows["outboundTrafficPolicy.mode"] == {"field": "outboundTrafficPolicy.mode", "value": "ALLOW_ANY",
                                                  "source": "MeshConfig istio-system/default", "configured": True}
    assert api.get("/api/v1/resources/mesh-config/istio-system/default").json()["spec"]["defaultHttpTimeout"] == "15s"


def test_nm0002_is_quiet_when_the_mesh_sets_outlier_detection() -> None:
    dr = _res("DestinationRule", "reviews", {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]})

    def codes(*resources: Resource) -> list[str]:
        return [m.code for m in analyze(Context({r.key: r for r in resources}))]

    assert "NM0002" in codes(dr)
    assert "NM0002" not in codes(dr, MESH)
    timeout_only = _res("MeshConfig", "default", {"defaultHttpTimeout": "5s"}, namespace="istio-system")
    assert "NM0002" in codes(dr, timeout_only)
