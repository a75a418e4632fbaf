"""describe: the sentences for routes and policies, and which resources apply to a service."""

from __future__ import annotations

import pytest

from novamesh.config.loader import parse_documents
from novamesh.config.resource import Resource, ResourceKey
from novamesh.config.types import SPEC_TYPES, HTTPRoute
from novamesh.config.types_http import HTTPRetry
from novamesh.config.types_traffic import OutlierDetection, TrafficPolicy
from novamesh.errors import NotFoundError, NovameshError
from novamesh.observe.describe import (
    describe_http_route,
    describe_outlier_detection,
    describe_retries,
    describe_service,
    describe_traffic_policy,
    describe_workload,
    host_annotations,
    render,
)
from novamesh.registry.registry import Workload, WorkloadPort

HOST = "reviews.default.svc.cluster.local"

CONFIG = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {http: {http1MaxPendingRequests: 1}}
    outlierDetection: {consecutive5xxErrors: 5, baseEjectionTime: 30s}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - name: v3
    labels: {version: v3}
    trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v3}, weight: 20}
    retries: {attempts: 3, retryOn: "5xx,reset", perTryTimeout: 2s}
    timeout: 5s
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: frontend}
spec:
  hosts: [frontend]
  http:
  - route: [{destination: {host: reviews}}]
"""


def _resources(text: str = CONFIG) -> dict[ResourceKey, Resource]:
    return {r.key: r for r in parse_documents(text, file="t.yaml")}


def _wl(wid: str, service: str, version: str, address: str, ready: bool = True) -> Workload:
    return Workload(
        id=wid, service=service, version=version, address=address, ready=ready,
        labels=(("app", service), ("version", version)), ports=(WorkloadPort(9080),),
    )


WORKLOADS = [
    _wl("r1", "reviews", "v1", "127.9.0.1"),
    _wl("r2", "reviews", "v2", "127.9.0.2"),
    _wl("r3", "reviews", "v3", "127.9.0.3", ready=False),
    _wl("f1", "frontend", "v1", "127.9.0.4"),
    Workload(id="c1", service="client", address="127.9.0.5", ready=True),
]
PROXIES = [
    {"id": "r1", "service": "reviews", "version": "v1", "types": {"CDS": {"status": "SYNCED"}, "RDS": {"status": "SYNCED"}}},
    {"id": "r2", "service": "reviews", "version": "v2", "types": {"CDS": {"status": "STALE"}, "RDS": {"status": "SYNCED"}}},
]


def _route(yaml_route: str) -> HTTPRoute:
    import yaml

    return HTTPRoute.model_validate(yaml.safe_load(yaml_route))


@pytest.mark.parametrize(
    ("route", "after_match", "expected"),
    [
        ("{match: [{headers: {end-user: {exact: jason}}}], route: [{destination: {host: reviews, subset: v2}}]}", False,
         "requests with header end-user=jason go to subset v2"),
        ("{route: [{destination: {host: reviews, subset: v1}, weight: 80}, {destination: {host: reviews, subset: v3}, weight: 20}]}", True,
         "all other requests go 80% to subset v1, 20% to subset v3"),
        ("{route: [{destination: {host: reviews}}]}", False, "all requests go to reviews"),
        ("{route: [{destination: {host: ratings, port: {number: 9080}}}]}", False, "all requests go to ratings port 9080"),
        ("{match: [{uri: {prefix: /api}, method: {exact: GET}}, {uri: {exact: /login}}], route: [{destination: {host: reviews}}]}", False,
         "requests with path starting with /api and method=GET or path /login go to reviews"),
        ("{match: [{queryParams: {debug: {exact: '1'}}, sourceLabels: {app: client}}], route: [{destination: {host: reviews}}]}", False,
         "requests with query parameter debug=1 and from workloads labelled app=client go to reviews"),
        ("{match: [{withoutHeaders: {x-canary: {}}}], route: [{destination: {host: reviews}}]}", False,
         "requests with without header x-canary go to reviews"),
        ("{directResponse: {status: 503}}", False, "all requests are answered directly with 503"),
        ("{redirect: {uri: /v2, authority: new.example.com}}", False, "all requests are redirected to new.example.com/v2 (301)"),
    ],
)
def test_route_sentence(route: str, after_match: bool, expected: str) -> None:
    lines = describe_http_route(_route(route), 0, "default", HOST, "cluster.local", after_match=after_match)
    assert lines[0].split("] ", 1)[1] == expected


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("{route: [{destination: {host: reviews}}], retries: {attempts: 3, retryOn: '5xx,reset', perTryTimeout: 2s}}",
         "retries: 3 attempts on 5xx,reset, per try 2s"),
        ("{route: [{destination: {host: reviews}}], retries: {attempts: 0}}", "retries: disabled (attempts: 0)"),
        ("{route: [{destination: {host: reviews}}]}", "retries: 2 attempts on connect-failure,refused-stream,unavailable,cancelled,503 (the mesh default)"),
        ("{route: [{destination: {host: reviews}}], timeout: 1.5s}", "timeout 1.5s"),
        ("{route: [{destination: {host: reviews}}], fault: {abort: {httpStatus: 503, percentage: {value: 50}}}}",
         "fault injection: abort 50% of requests with 503"),
        ("{route: [{destination: {host: reviews}}], fault: {delay: {fixedDelay: 7s}}}", "fault injection: delay 100% of requests by 7s"),
        ("{route: [{destination: {host: reviews}}], mirror: {host: shadow}, mirrorPercentage: {value: 10}}", "mirror 10% of requests to shadow"),
        ("{route: [{destination: {host: reviews}}], rewrite: {uri: /new}}", "path (matched prefix) rewritten to /new"),
        ("{route: [{destination: {host: reviews}}], headers: {request: {set: {x-a: b}, remove: [x-c]}}}", "request headers: set x-a, remove x-c"),
    ],
)
def test_route_policy_sentences(route: str, expected: str) -> None:
    lines = [line.strip() for line in describe_http_route(_route(route), 0, "default", HOST, "cluster.local", after_match=False)[1:]]
    assert expected in lines


@pytest.mark.parametrize(
    ("retries", "expected"),
    [
        (None, "retries: 2 attempts on connect-failure,refused-stream,unavailable,cancelled,503 (the mesh default)"),
        (HTTPRetry(attempts=0), "retries: disabled (attempts: 0)"),
        (HTTPRetry(attempts=3, retry_on="5xx,reset", per_try_timeout="2s"), "retries: 3 attempts on 5xx,reset, per try 2s"),
        (HTTPRetry(attempts=1), "retries: 1 attempts on connect-failure,refused-stream,unavailable,cancelled,503"),
    ],
)
def test_retries_sentence(retries: HTTPRetry | None, expected: str) -> None:
    assert describe_retries(retries) == expected


@pytest.mark.parametrize(
    ("od", "expected_start"),
    [
        (OutlierDetection(consecutive_5xx_errors=5, base_ejection_time="30s"), "outlier detection: eject after 5 consecutive 5xx for 30s"),
        (OutlierDetection(consecutive_gateway_errors=2, base_ejection_time="1m", interval="1s"),
         "outlier detection: eject after 2 consecutive gateway errors (502/503/504) for 1m (checked every 1s"),
        (OutlierDetection(consecutive_5xx_errors=0), "outlier detection: configured but no ejection threshold"),
    ],
)
def test_outlier_sentence(od: OutlierDetection, expected_start: str) -> None:
    assert describe_outlier_detection(od).startswith(expected_start)


def test_traffic_policy_sentences_carry_field_names() -> None:
    tp = TrafficPolicy.model_validate({
        "connectionPool": {"tcp": {"maxConnections": 10}, "http": {"http1MaxPendingRequests": 1, "maxRetries": 2}},
        "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}},
        "tls": {"mode": "SIMPLE", "sni": "api.example.com"},
        "portLevelSettings": [{"port": {"number": 8080}, "loadBalancer": {"simple": "RANDOM"}}],
    })
    got = {text: topic for topic, text in describe_traffic_policy(tp)}
    assert got["circuit breaker (connection pool): maxConnections: 10, http1MaxPendingRequests: 1, maxRetries: 2"] == "connection_pool"
    assert got["load balancing: consistent hash on header x-user"] == "load_balancer"
    assert got["TLS to the destination: SIMPLE (sni api.example.com)"] == "tls"
    assert got["port 8080: load balancing: RANDOM"] == "load_balancer"


def test_describe_service_names_the_vs_dr_and_split() -> None:
    d = describe_service("reviews", "default", _resources(), WORKLOADS, PROXIES)
    text = render(d)
    assert d.virtual_services == ["default/reviews"]
    assert d.destination_rules == ["default/reviews"]
    assert "VirtualService default/reviews (hosts: reviews):" in text
    assert "[jason] requests with header end-user=jason go to subset v2" in text
    assert "all other requests go 80% to subset v1, 20% to subset v3" in text
    assert "retries: 3 attempts on 5xx,reset, per try 2s" in text
    assert "DestinationRule default/reviews (host: reviews):" in text
    assert "subset v1: version=v1 (1 ready endpoint(s))" in text
    assert "subset v3: version=v3 (0 ready endpoint(s))" in text
    assert "subset v3: load balancing: LEAST_REQUEST" in text
    assert "outlier detection: eject after 5 consecutive 5xx for 30s" in text
    # a VirtualService for another host that routes here is mentioned, not applied
    assert "VirtualService default/frontend (hosts: frontend) sends some of its traffic here" in text
    for kind in ("PeerAuthentication", "AuthorizationPolicy"):
        expected = "none (not supported yet)" if kind not in SPEC_TYPES else "none"
        assert f"{kind}:\n  {expected}\n" in text


def test_describe_service_endpoints_and_proxies() -> None:
    d = describe_service("reviews.default", "other", _resources(), WORKLOADS, PROXIES)
    by_addr = {e["address"]: e for e in d.endpoints}
    assert by_addr["127.9.0.1"]["ready"] and by_addr["127.9.0.1"]["subsets"] == ["v1"]
    assert not by_addr["127.9.0.3"]["ready"]
    assert by_addr["127.9.0.1"]["proxy"] == "SYNCED"
    assert by_addr["127.9.0.2"]["proxy"] == "CDS STALE, RDS SYNCED"
    text = render(d)
    assert "Endpoints (2 ready, 1 not ready)" in text
    assert "127.9.0.3 v3 NOT READY (not an endpoint)" in text
    assert "Proxies of this service: 1 of 2 SYNCED" in text


def test_facts_name_the_resource_and_field() -> None:
    d = describe_service("reviews", "default", _resources(), WORKLOADS)
    assert d.facts["connection_pool"] == ["circuit breaker: DestinationRule default/reviews sets http1MaxPendingRequests: 1"]
    assert any("route http[1] sets timeout: 5s" in f for f in d.facts["timeouts"])
    assert d.facts["endpoints"] == ["service reviews has 2 ready endpoint(s) of 3"]


def test_service_without_config_says_defaults() -> None:
    d = describe_service("frontend", "default", {}, WORKLOADS)
    text = render(d)
    assert "VirtualServices:\n  none: requests to this service go to all its endpoints" in text
    assert "DestinationRule:\n  none: round robin, Envoy's default limits" in text
    assert "Mesh-wide defaults:\n  none: no MeshConfig istio-system/default" in text
    assert d.virtual_services == [] and d.destination_rules == []


def test_second_vs_for_the_same_host_is_reported_ignored() -> None:
    extra = CONFIG + """---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: zz-reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"""
    text = render(describe_service("reviews", "default", _resources(extra), WORKLOADS))
    assert "VirtualService default/zz-reviews: IGNORED — default/reviews also claims this host" in text


def test_gateway_bound_vs_and_sidecar() -> None:
    extra = CONFIG + """---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: public}
spec:
  hosts: [reviews]
  gateways: [ingress]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews-scope}
spec:
  workloadSelector: {labels: {app: reviews}}
  egress: [{hosts: [./ratings]}]
"""
    d = describe_service("reviews", "default", _resources(extra), WORKLOADS)
    text = render(d)
    assert "VirtualService default/public routes this host at Gateway default/ingress" in text
    assert "default/public" in d.virtual_services
    assert "Sidecar default/reviews-scope applies to 3 workload(s): may reach ./ratings" in text


def test_service_entry_host_is_found() -> None:
    se = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
"""
    d = describe_service("api.example.com", "default", _resources(se), [])
    assert d.hostname == "api.example.com"
    assert d.origin == "ServiceEntry default/ext"
    assert d.facts["resolution"] == ["ServiceEntry default/ext resolves api.example.com with DNS"]


def test_unknown_service_lists_known_ones() -> None:
    with pytest.raises(NotFoundError, match=r"no service 'nope' in namespace default; known services: .*reviews\.default"):
        describe_service("nope", "default", _resources(), WORKLOADS)


def test_describe_workload_by_id_and_service() -> None:
    w = describe_workload("r2", "default", _resources(), WORKLOADS, PROXIES)
    assert w.workload["id"] == "r2"
    text = render(w)
    assert "in subset v2 of DestinationRule default/reviews (host reviews)" in text
    assert "r2 (reviews v2) CDS STALE, RDS SYNCED" in text
    assert w.service is not None and w.service.virtual_services == ["default/reviews"]
    front = describe_workload("frontend", "default", _resources(), WORKLOADS)
    assert front.workload["id"] == "f1"
    assert "in no DestinationRule subset" in render(front)  # version=v1, but reviews' subsets are not its own
    with pytest.raises(NovameshError, match="matches 3 workloads; name one by id: r1"):
        describe_workload("reviews", "default", _resources(), WORKLOADS)


def test_host_annotations() -> None:
    vss, drs = host_annotations(_resources(), WORKLOADS)
    assert vss[HOST] == "reviews.default"
    assert drs[HOST] == "reviews.default"
    assert "client.default.svc.cluster.local" not in vss


MESH = """apiVersion: novamesh.io/v1alpha1
kind: MeshConfig
metadata: {name: default, namespace: istio-system}
spec:
  defaultHttpTimeout: 4s
  defaultHttpRetryPolicy: {attempts: 5, retryOn: gateway-error}
  defaultTrafficPolicy:
    connectionPool: {tcp: {maxConnections: 100}}
    outlierDetection: {consecutive5xxErrors: 7}
"""


def test_mesh_config_defaults_apply_where_not_overridden() -> None:
    d = describe_service("reviews", "default", _resources(CONFIG + "---\n" + MESH), WORKLOADS)
    text = render(d)
    assert "Mesh-wide defaults:\n  MeshConfig istio-system/default:\n    defaultHttpTimeout: 4s (routes without their own timeout)\n" in text
    # route jason has no retries/timeout: the mesh defaults; route http[1] sets its own
    jason = text.split("[jason]")[1].split("[http[1]]")[0]
    assert "timeout 4s (MeshConfig default)" in jason
    assert "retries: 5 attempts on gateway-error (MeshConfig default)" in jason
    other = text.split("[http[1]]")[1].split("DestinationRule:")[0]
    assert "timeout 5s\n" in other and "retries: 3 attempts on 5xx,reset, per try 2s" in other
    # the DestinationRule sets both connection pool and outlier detection: the mesh's are replaced
    assert "(mesh default from" not in text
    assert d.facts["connection_pool"] == ["circuit breaker: DestinationRule default/reviews sets http1MaxPendingRequests: 1"]


def test_mesh_traffic_policy_without_destination_rule() -> None:
    d = describe_service("frontend", "default", _resources(MESH), WORKLOADS)
    text = render(d)
    assert "circuit breaker (connection pool): maxConnections: 100 (mesh default from MeshConfig istio-system/default)" in text
    assert d.facts["connection_pool"] == ["circuit breaker: MeshConfig istio-system/default sets maxConnections: 100 (mesh default)"]
    assert "default route; retries: 5 attempts on gateway-error (MeshConfig default), timeout 4s (MeshConfig default)" in text
    assert any("outlier detection: eject after 7 consecutive 5xx" in f for f in d.facts["outlier_detection"])


TELEMETRY = """apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing: [{randomSamplingPercentage: 10}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews-logs}
spec:
  selector: {matchLabels: {app: reviews, version: v2}}
  accessLogging: [{filter: {expression: "response.code >= 500"}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: frontend-only}
spec:
  selector: {matchLabels: {app: frontend}}
  accessLogging: [{disabled: true}]
"""


@pytest.mark.skipif("Telemetry" not in SPEC_TYPES, reason="Telemetry kind not accepted")
def test_telemetry_that_applies() -> None:
    text = render(describe_service("reviews", "default", _resources(TELEMETRY), WORKLOADS))
    section = text.split("Telemetry:\n")[1].split("\nPeerAuthentication")[0]
    assert "Telemetry istio-system/mesh-default (mesh-wide): tracing to the default provider, sampling 10% of requests" in section
    assert ("Telemetry default/reviews-logs (1 of 3 workload(s)): access logging on (the default provider), "
            "only requests where response.code >= 500") in section
    assert "frontend-only" not in section
