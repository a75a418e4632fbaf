"""proxyconfig: Envoy's config_dump and the control plane's view, as istioctl-style tables."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest

from novamesh.errors import NotFoundError, NovameshError
from novamesh.observe.proxyconfig import (
    NO_SECRETS,
    SECTIONS,
    Annotations,
    from_control_plane,
    from_envoy,
    resolve_workload,
    section_data,
    table_for,
)

FQDN = "reviews.default.svc.cluster.local"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _cluster(name: str, kind: str = "EDS") -> dict[str, Any]:
    return {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": name, "type": kind, "connect_timeout": "10s"}


def _sock(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


ROUTES = {
    "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    "name": "outbound",
    "virtual_hosts": [
        {
            "name": f"{FQDN}:9080",
            "domains": [f"{FQDN}:9080", FQDN, "reviews.default:9080", "reviews.default", "reviews:9080", "reviews"],
            "routes": [
                {"name": "jason", "match": {"prefix": "/", "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]},
                 "route": {"cluster": f"outbound|9080|v2|{FQDN}"}},
                {"name": "default/reviews.http[1]", "match": {"prefix": "/"},
                 "route": {"weighted_clusters": {"clusters": [{"name": f"outbound|9080|v1|{FQDN}", "weight": 80},
                                                              {"name": f"outbound|9080|v2|{FQDN}", "weight": 20}]}}},
            ],
        },
        {"name": "not_found", "domains": ["*"],
         "routes": [{"name": "not_found", "match": {"prefix": "/"}, "direct_response": {"status": 404}}]},
    ],
}

LISTENERS = [
    {"name": "virtualOutbound", "address": _sock("127.9.0.5", 15001), "filter_chains": [
        {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                      "typed_config": {"@type": HCM, "rds": {"route_config_name": "outbound"}}}]}]},
    {"name": "inbound|9080", "address": _sock("127.9.0.5", 9080), "filter_chains": [
        {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                      "typed_config": {"@type": HCM, "route_config": {"name": "inbound|9080"}}}]}]},
    {"name": "tcp|3306", "address": _sock("127.0.0.1", 13306), "filter_chains": [
        {"filter_chain_match": {"server_names": ["db.example.com"]},
         "filters": [{"name": "envoy.filters.network.tcp_proxy",
                      "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                                       "cluster": "outbound|3306||db.example.com"}}]}]},
]


def _pem() -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0xABC123).not_valid_before(start).not_valid_after(start + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _config_dump(with_routes: bool = True, secrets: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    routes: dict[str, Any] = {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump"}
    if with_routes:
        routes["dynamic_route_configs"] = [{"version_info": "1", "route_config": ROUTES}]
    return {"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": {}},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
         "static_clusters": [{"cluster": _cluster("xds-grpc", "STATIC")}],
         "dynamic_active_clusters": [{"version_info": "1", "cluster": _cluster(n)} for n in (
             f"outbound|9080|v1|{FQDN}", f"outbound|9080|v2|{FQDN}", f"outbound|9080||{FQDN}")]
         + [{"cluster": _cluster("inbound|9080||", "STATIC")}]},
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
         "dynamic_listeners": [{"name": lst["name"], "active_state": {"version_info": "1", "listener": lst}} for lst in LISTENERS]},
        routes,
        {"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump", **({"dynamic_active_secrets": secrets} if secrets else {})},
    ]}


CLUSTERS_JSON = {"cluster_statuses": [
    {"name": f"outbound|9080|v1|{FQDN}", "host_statuses": [
        {"address": _sock("127.9.0.1", 9080), "health_status": {"eds_health_status": "HEALTHY"}, "weight": 1}]},
    {"name": f"outbound|9080|v2|{FQDN}", "host_statuses": [
        {"address": _sock("127.9.0.2", 9080), "health_status": {"eds_health_status": "HEALTHY", "failed_outlier_check": True}, "weight": 1}]},
    {"name": "xds-grpc", "host_statuses": [
        {"address": _sock("127.0.0.1", 15010), "health_status": {"failed_active_health_check": True}}]},
]}

NOTES = Annotations(virtual_services={FQDN: "reviews.default"}, destination_rules={FQDN: "reviews.default"})


def test_clusters_table() -> None:
    cfg = from_envoy(_config_dump(), CLUSTERS_JSON)
    t = table_for("clusters", cfg, NOTES)
    assert t.headers == ("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE")
    assert (FQDN, "9080", "v1", "outbound", "EDS", "reviews.default") in t.rows
    assert (FQDN, "9080", "-", "outbound", "EDS", "reviews.default") in t.rows
    assert ("inbound|9080||", "9080", "-", "inbound", "STATIC", "-") in t.rows
    assert ("xds-grpc", "-", "-", "-", "STATIC", "-") in t.rows


def test_listeners_table() -> None:
    t = table_for("listeners", from_envoy(_config_dump()))
    assert t.headers == ("NAME", "ADDRESS", "PORT", "TYPE/MATCH", "DESTINATION")
    assert ("virtualOutbound", "127.9.0.5", "15001", "HTTP: ALL", "Route: outbound") in t.rows
    assert ("inbound|9080", "127.9.0.5", "9080", "HTTP: ALL", "Inline Route: inbound|9080") in t.rows
    assert ("tcp|3306", "127.0.0.1", "13306", "TCP: SNI: db.example.com", "Cluster: outbound|3306||db.example.com") in t.rows


def test_routes_table() -> None:
    t = table_for("routes", from_envoy(_config_dump()), NOTES)
    assert t.headers == ("NAME", "DOMAINS", "MATCH", "DESTINATION", "VIRTUAL SERVICE")
    assert t.rows == [
        ("outbound", "reviews +5 more", "/* (end-user=jason)", f"outbound|9080|v2|{FQDN}", "reviews.default"),
        ("outbound", "reviews +5 more", "/*", f"80% outbound|9080|v1|{FQDN}, 20% outbound|9080|v2|{FQDN}", "reviews.default"),
        ("outbound", "*", "/*", "direct response 404", "-"),
    ]


def test_routes_missing_from_the_whole_dump_come_from_a_resource_dump() -> None:
    extra = {"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump.DynamicRouteConfig",
                          "version_info": "1", "route_config": ROUTES}]}
    assert from_envoy(_config_dump(with_routes=False)).routes == ()
    cfg = from_envoy(_config_dump(with_routes=False), None, [extra])
    assert [r["name"] for r in cfg.routes] == ["outbound"]
    assert len(from_envoy(_config_dump(), None, [extra]).routes) == 1  # no duplicates


def test_endpoints_table_has_health_and_outlier_status() -> None:
    t = table_for("endpoints", from_envoy(_config_dump(), CLUSTERS_JSON))
    assert t.headers == ("ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER")
    assert ("127.9.0.1:9080", "HEALTHY", "OK", f"outbound|9080|v1|{FQDN}") in t.rows
    assert ("127.9.0.2:9080", "HEALTHY", "FAILED", f"outbound|9080|v2|{FQDN}") in t.rows
    assert ("127.0.0.1:15010", "UNHEALTHY", "OK", "xds-grpc") in t.rows


def test_secrets_empty_says_why() -> None:
    t = table_for("secrets", from_envoy(_config_dump()))
    assert t.rows == [] and t.empty_note == NO_SECRETS
    assert "no certificates" in NO_SECRETS


def test_secrets_show_validity_and_serial() -> None:
    pem = _pem()
    secrets = [
        {"name": "default", "version_info": "1",
         "secret": {"name": "default", "tls_certificate": {"certificate_chain": {"inline_bytes": base64.b64encode(pem.encode()).decode()},
                                                          "private_key": {"inline_string": "[redacted]"}}}},
        {"name": "ROOTCA", "secret": {"name": "ROOTCA", "validation_context": {"trusted_ca": {"inline_string": pem}}}},
    ]
    t = table_for("secrets", from_envoy(_config_dump(secrets=secrets)))
    assert t.headers == ("RESOURCE NAME", "TYPE", "STATUS", "VALID FROM", "VALID TO", "SERIAL")
    assert ("default", "Cert Chain", "ACTIVE", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "abc123") in t.rows
    assert ("ROOTCA", "CA", "ACTIVE", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "abc123") in t.rows


def test_control_plane_view() -> None:
    raw = {
        "CDS": {f"outbound|9080|v1|{FQDN}": _cluster(f"outbound|9080|v1|{FQDN}"),
                "inbound|9080||": {**_cluster("inbound|9080||", "STATIC"), "load_assignment": {
                    "cluster_name": "inbound|9080||", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _sock("127.9.0.5", 40001)}}]}]}}},
        "EDS": {f"outbound|9080|v1|{FQDN}": {"cluster_name": f"outbound|9080|v1|{FQDN}", "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": _sock("127.9.0.1", 9080)}}]}]}},
        "LDS": {lst["name"]: lst for lst in LISTENERS},
        "RDS": {"outbound": ROUTES},
    }
    cfg = from_control_plane(raw)
    assert cfg.source == "control-plane"
    assert [c["name"] for c in cfg.clusters] == ["inbound|9080||", f"outbound|9080|v1|{FQDN}"]
    eps = table_for("endpoints", cfg).rows
    assert ("127.9.0.1:9080", "HEALTHY", "n/a (sent config)", f"outbound|9080|v1|{FQDN}") in eps
    assert ("127.9.0.5:40001", "HEALTHY", "n/a (sent config)", "inbound|9080||") in eps
    assert len(table_for("routes", cfg).rows) == 3


def test_section_data_is_json() -> None:
    cfg = from_envoy(_config_dump(), CLUSTERS_JSON)
    everything = section_data("all", cfg)
    assert set(everything) == set(SECTIONS)
    parsed = json.loads(json.dumps(everything))
    assert parsed["routes"][0]["virtual_hosts"][0]["domains"][-1] == "reviews"
    assert {"endpoint": "127.9.0.2:9080", "status": "HEALTHY", "outlierCheck": "FAILED",
            "cluster": f"outbound|9080|v2|{FQDN}", "weight": 1} in parsed["endpoints"]


@pytest.mark.parametrize("bad", ["cluster", "everything", ""])
def test_unknown_section(bad: str) -> None:
    cfg = from_envoy(_config_dump())
    with pytest.raises(NovameshError, match="unknown section"):
        table_for(bad, cfg)
    with pytest.raises(NovameshError, match="unknown section"):
        section_data(bad, cfg)


WORKLOADS = [
    {"id": "r1", "service": "reviews", "namespace": "default", "version": "v1", "address": "127.9.0.1"},
    {"id": "r2", "service": "reviews", "namespace": "default", "version": "v2", "address": "127.9.0.2"},
    {"id": "c1", "service": "client", "namespace": "default", "version": "", "address": "127.9.0.5"},
    {"id": "c2", "service": "client", "namespace": "other", "version": "", "address": "127.9.0.6"},
]


@pytest.mark.parametrize(
    ("ref", "namespace", "expected"),
    [
        ("r2", None, "r2"),
        ("client.default", None, "c1"),
        ("client", "other", "c2"),
        ("127.9.0.2", None, "r2"),
    ],
)
def test_resolve_workload(ref: str, namespace: str | None, expected: str) -> None:
    assert resolve_workload(ref, WORKLOADS, namespace)["id"] == expected


def test_resolve_workload_ambiguous_lists_choices() -> None:
    with pytest.raises(NovameshError, match=r"'reviews' matches 2 workloads; name one by id: r1 \(reviews.default v1 at 127.9.0.1\); r2"):
        resolve_workload("reviews", WORKLOADS)
    with pytest.raises(NovameshError, match="matches 2 workloads"):
        resolve_workload("client", WORKLOADS)


def test_resolve_workload_unknown() -> None:
    with pytest.raises(NotFoundError, match=r"no workload 'ratings'.*registered: client.default, client.other, reviews.default"):
        resolve_workload("ratings", WORKLOADS)
