"""flags: every Envoy response flag becomes a sentence; with a service, the config involved."""

from __future__ import annotations

from pathlib import Path

import pytest

from novamesh.config.loader import parse_documents
from novamesh.observe.describe import describe_service
from novamesh.observe.flags import FLAGS, explain, parse_flags, render_explanations
from novamesh.registry.registry import Workload, WorkloadPort

ENVOY_FLAGS = ["UH", "UF", "UO", "NR", "URX", "NC", "DT", "DC", "LH", "UT", "LR", "UR", "UC", "DI", "FI", "RL", "UAEX", "RLSE", "IH", "SI", "DPE", "UPE", "UMSDR", "RFCF", "NFCF", "OM", "DF", "DO", "UDO", "DR"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("UO", ["UO"]),
        ("URX,UF", ["URX", "UF"]),
        ("urx, uf", ["URX", "UF"]),
        ("-", []),
        ("", []),
        ("UH UH", ["UH"]),
        ("rbac_access_denied_matched_policy[none]", ["RBAC"]),
        ("RBAC", ["RBAC"]),
        ("DI|FI", ["DI", "FI"]),
    ],
)
def test_parse_flags(text: str, expected: list[str]) -> None:
    assert parse_flags(text) == expected


def test_every_documented_flag_is_known() -> None:
    assert set(ENVOY_FLAGS) | {"RBAC"} == set(FLAGS)


@pytest.mark.parametrize(
    ("flag", "phrase"),
    [
        ("UH", "no healthy upstream host"),
        ("UF", "connection to the upstream host failed"),
        ("UO", "circuit breaker tripped"),
        ("NR", "no route: the host is not in the mesh or no VirtualService route matched"),
        ("URX", "retry limit"),
        ("UT", "timed out"),
        ("UC", "upstream connection was terminated"),
        ("DC", "downstream (client) connection was terminated"),
        ("FI", "aborted by fault injection"),
        ("DI", "delayed by fault injection"),
        ("NC", "cluster was not found"),
        ("UPE", "HTTP protocol error"),
        ("DF", "DNS resolution failed"),
        ("RBAC", "RBAC filter denied"),
    ],
)
def test_sentence_per_flag(flag: str, phrase: str) -> None:
    [e] = explain(flag)
    assert e.known and e.code == flag
    assert e.sentence.startswith(f"{flag} ({FLAGS[flag].name}): ")
    assert phrase in e.sentence
    assert e.config == ()  # no service given: no config named


def test_status_is_mentioned() -> None:
    assert "(usually with status 503)" in explain("UO")[0].sentence
    assert "(usually with status 404)" in explain("NR")[0].sentence


def test_no_flags_means_the_app_answered() -> None:
    [e] = explain("-")
    assert e.code == "-" and "came from the application" in e.sentence


def test_unknown_flag_is_reported() -> None:
    [e] = explain("ZZ")
    assert not e.known and "ZZ: not an Envoy response flag" in e.sentence and "UH" in e.sentence


CONFIG = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    connectionPool: {http: {http1MaxPendingRequests: 1}}
    outlierDetection: {consecutive5xxErrors: 5, baseEjectionTime: 30s}
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v2}}]
    timeout: 2s
    fault: {abort: {httpStatus: 503, percentage: {value: 10}}}
"""
WORKLOADS = [
    Workload(id="r1", service="reviews", version="v1", address="127.9.0.1", ready=True,
             labels=(("app", "reviews"), ("version", "v1")), ports=(WorkloadPort(9080),)),
]


def _facts(config: str = CONFIG) -> dict[str, list[str]]:
    resources = {r.key: r for r in parse_documents(config, file="t.yaml")} if config else {}
    return describe_service("reviews", "default", resources, WORKLOADS).facts


@pytest.mark.parametrize(
    ("flag", "config_line"),
    [
        ("UO", "circuit breaker: DestinationRule default/reviews sets http1MaxPendingRequests: 1"),
        ("UH", "DestinationRule default/reviews subset v2 selects version=v2: 0 ready endpoint(s)"),
        ("UH", "service reviews has 1 ready endpoint(s) of 1"),
        ("UH", "DestinationRule default/reviews sets outlier detection: eject after 5 consecutive 5xx for 30s"),
        ("UT", "VirtualService default/reviews route http[0] sets timeout: 2s"),
        ("FI", "VirtualService default/reviews route http[0] injects faults: fault injection: abort 10% of requests with 503"),
        ("NR", "see `novamesh describe service reviews`"),
        ("URX", "VirtualService default/reviews route http[0]: retries: 2 attempts"),
        ("RBAC", "AuthorizationPolicy"),
    ],
)
def test_config_involved_with_a_service(flag: str, config_line: str) -> None:
    [e] = explain(flag, _facts(), "reviews")
    assert any(line.startswith(config_line) for line in e.config), e.config


@pytest.mark.parametrize(
    ("flag", "config_line"),
    [
        ("UO", "no DestinationRule sets a connection pool for reviews: Envoy's defaults apply"),
        ("FI", "no VirtualService route of reviews injects faults"),
        ("UT", "no route of reviews sets a timeout"),
        ("NC", "no DestinationRule for reviews.default.svc.cluster.local, so it has no subsets"),
        ("NR", "no VirtualService routes reviews.default.svc.cluster.local"),
    ],
)
def test_config_involved_without_config(flag: str, config_line: str) -> None:
    [e] = explain(flag, _facts(""), "reviews")
    assert any(line.startswith(config_line) for line in e.config), e.config


def test_render() -> None:
    text = render_explanations(explain("UO,URX", _facts(), "reviews"))
    lines = text.splitlines()
    assert lines[0].startswith("UO (UpstreamOverflow)")
    assert lines[1] == "  config: circuit breaker: DestinationRule default/reviews sets http1MaxPendingRequests: 1"
    assert any(line.startswith("URX (UpstreamRetryLimitExceeded)") for line in lines)


def test_docs_list_every_flag() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "debugging.md").read_text()
    for code, info in FLAGS.items():
        assert f"| `{code}` | {info.name} |" in doc, code
