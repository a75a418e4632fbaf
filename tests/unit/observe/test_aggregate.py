"""Access-log entries → Istio labels and metric samples."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import struct_pb2
from prometheus_client import generate_latest

from novamesh.observe.aggregate import (
    LocalIdentity,
    Peer,
    http_labels,
    record_http,
    record_tcp,
    response_flags,
    tcp_labels,
)
from novamesh.observe.envoy_config import (
    LOG_INBOUND,
    LOG_OUTBOUND,
    UPSTREAM_LOCAL_PRINCIPAL_TAG,
    UPSTREAM_PEER_PRINCIPAL_TAG,
    UPSTREAM_PEER_TAG,
)
from novamesh.observe.workload_metrics import HTTP_LABELS, TCP_LABELS, WorkloadMetrics

ME = LocalIdentity(Peer("front-v1", "shop", "front", "v1"), "front.shop.svc.cluster.local")


def _entry(*, cluster: str = "", authority: str = "", code: int = 200, metadata: dict[str, str] | None = None,
           grpc: bool = False, ms: int = 12) -> accesslog_pb2.HTTPAccessLogEntry:
    e = accesslog_pb2.HTTPAccessLogEntry()
    e.common_properties.upstream_cluster = cluster
    e.common_properties.duration.FromMilliseconds(ms)
    if metadata:
        s = struct_pb2.Struct()
        s.update(metadata)
        e.common_properties.metadata.filter_metadata["novamesh"].CopyFrom(s)
    e.request.authority = authority
    e.request.request_body_bytes = 7
    if grpc:
        e.request.request_headers["content-type"] = "application/grpc"
        e.response.response_trailers["grpc-status"] = "14"
    e.response.response_code.value = code
    e.response.response_body_bytes = 1234
    return e


def test_peer_parse_fills_unknown() -> None:
    assert Peer.parse("back-v2,shop,back,v2") == Peer("back-v2", "shop", "back", "v2")
    assert Peer.parse("") == Peer()
    assert Peer.parse("a,,b") == Peer("a", "unknown", "b", "unknown")


def test_response_flags_codes_and_dash() -> None:
    flags = accesslog_pb2.ResponseFlags()
    assert response_flags(flags) == "-"
    flags.upstream_connection_failure = True
    flags.upstream_retry_limit_exceeded = True
    assert response_flags(flags) == "UF,URX"
    flags = accesslog_pb2.ResponseFlags(fault_injected=True)
    assert response_flags(flags) == "FI"


def test_source_reporter_labels_from_cluster_and_peer_metadata() -> None:
    labels = http_labels(ME, LOG_OUTBOUND, _entry(cluster="outbound|9080|v2|back.shop.svc.cluster.local",
                                                   metadata={"peer": "back-v2,shop,back,v2"}))
    assert set(labels) == set(HTTP_LABELS)
    assert labels["reporter"] == "source"
    assert (labels["source_workload"], labels["source_app"], labels["source_workload_namespace"]) == ("front-v1", "front", "shop")
    assert (labels["destination_workload"], labels["destination_version"]) == ("back-v2", "v2")
    assert labels["destination_service"] == "back.shop.svc.cluster.local"
    assert (labels["destination_service_name"], labels["destination_service_namespace"]) == ("back", "shop")
    assert labels["response_code"] == "200" and labels["response_flags"] == "-"
    assert labels["request_protocol"] == "http" and labels["connection_security_policy"] == "unknown"


def test_local_reply_resolves_the_authority_in_the_client_namespace() -> None:
    for authority, fqdn in (("back:9080", "back.shop.svc.cluster.local"), ("back.other", "back.other.svc.cluster.local"),
                            ("api.example.com", "api.example.com"), ("10.0.0.1:80", "10.0.0.1"), ("[::1]:80", "[::1]")):
        labels = http_labels(ME, LOG_OUTBOUND, _entry(authority=authority, code=503))
        assert labels["destination_service"] == fqdn
        assert labels["destination_workload"] == "unknown"
    assert http_labels(ME, LOG_OUTBOUND, _entry(authority="api.example.com"))["destination_service_namespace"] == "unknown"


def test_destination_reporter_labels_from_source_metadata() -> None:
    labels = http_labels(ME, LOG_INBOUND, _entry(cluster="inbound|9080||", metadata={"source": "client-v1,default,client,v1"}, grpc=True))
    assert labels["reporter"] == "destination"
    assert (labels["source_workload"], labels["source_workload_namespace"]) == ("client-v1", "default")
    assert (labels["destination_workload"], labels["destination_service"]) == ("front-v1", "front.shop.svc.cluster.local")
    assert labels["request_protocol"] == "grpc" and labels["grpc_response_status"] == "14"
    assert labels["connection_security_policy"] == "none"
    assert labels["source_principal"] == "unknown"
    # Without the header (a caller outside the mesh) the source is unknown.
    assert http_labels(ME, LOG_INBOUND, _entry())["source_workload"] == "unknown"


def test_record_http_counts_and_observes() -> None:
    m = WorkloadMetrics()
    record_http(m, ME, LOG_INBOUND, _entry(ms=30))
    record_http(m, ME, LOG_INBOUND, _entry(ms=30))
    intermediate = _entry()
    intermediate.common_properties.intermediate_log_entry = True
    record_http(m, ME, LOG_INBOUND, intermediate)  # not a finished request
    text = generate_latest(m.registry).decode()
    line = next(x for x in text.splitlines() if x.startswith("istio_requests_total{"))
    assert line.endswith(" 2.0")
    bucket = next(x for x in text.splitlines() if x.startswith("istio_request_duration_milliseconds_bucket{") and 'le="50.0"' in x)
    assert bucket.endswith(" 2.0")
    assert any(x.startswith("istio_response_bytes_sum{") and x.endswith(" 2468.0") for x in text.splitlines())


def test_record_tcp() -> None:
    m = WorkloadMetrics()
    e = accesslog_pb2.TCPAccessLogEntry()
    e.common_properties.upstream_cluster = "inbound|5432||"
    e.connection_properties.received_bytes = 10
    e.connection_properties.sent_bytes = 20
    record_tcp(m, ME, LOG_INBOUND, e)
    text = generate_latest(m.registry).decode().splitlines()
    for name, value in (("istio_tcp_received_bytes_total", "10.0"), ("istio_tcp_sent_bytes_total", "20.0"),
                        ("istio_tcp_connections_opened_total", "1.0"), ("istio_tcp_connections_closed_total", "1.0")):
        line = next(x for x in text if x.startswith(name + "{"))
        assert line.endswith(" " + value) and 'request_protocol="tcp"' in line
    assert len(TCP_LABELS) == len(set(TCP_LABELS))


def test_mutual_tls_principals_on_the_destination() -> None:
    e = _entry(metadata={"source": "client-v1,default,client,v1"})
    tls = e.common_properties.tls_properties
    tls.peer_certificate_properties.subject_alt_name.add(uri="spiffe://cluster.local/ns/default/sa/client")
    tls.local_certificate_properties.subject_alt_name.add(uri="spiffe://cluster.local/ns/shop/sa/front")
    labels = http_labels(ME, LOG_INBOUND, e)
    assert labels["source_principal"] == "spiffe://cluster.local/ns/default/sa/client"
    assert labels["destination_principal"] == "spiffe://cluster.local/ns/shop/sa/front"
    assert labels["connection_security_policy"] == "mutual_tls"


def _samples(m: WorkloadMetrics, name: str) -> dict[str, float]:
    """``{labels text: value}`` of one metric family's samples."""
    out = {}
    for line in generate_latest(m.registry).decode().splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels] = float(value)
    return out


def _tcp_entry(kind: int, *, connected: bool = True) -> accesslog_pb2.TCPAccessLogEntry:
    e = accesslog_pb2.TCPAccessLogEntry()
    c = e.common_properties
    c.upstream_cluster = "outbound|3306|v1|mysql.default.svc.cluster.local"
    c.access_log_type = kind  # type: ignore[assignment]
    if kind == accesslog_pb2.AccessLogType.TcpUpstreamConnected:
        c.intermediate_log_entry = True  # as Envoy marks it
    if connected:
        c.upstream_local_address.socket_address.address = "127.0.0.1"
    if kind == accesslog_pb2.AccessLogType.TcpConnectionEnd:
        e.connection_properties.received_bytes = 5
        e.connection_properties.sent_bytes = 9
    return e


def test_tcp_opened_counted_when_connected_and_once() -> None:
    m = WorkloadMetrics()
    record_tcp(m, ME, LOG_OUTBOUND, _tcp_entry(accesslog_pb2.AccessLogType.TcpUpstreamConnected))
    [(labels, opened)] = _samples(m, "istio_tcp_connections_opened_total").items()
    assert opened == 1.0 and 'reporter="source"' in labels and 'destination_service="mysql.default.svc.cluster.local"' in labels
    assert 'source_workload="front-v1"' in labels and 'destination_service_name="mysql"' in labels
    assert list(_samples(m, "istio_tcp_connections_closed_total").values()) == [0.0]
    record_tcp(m, ME, LOG_OUTBOUND, _tcp_entry(accesslog_pb2.AccessLogType.TcpConnectionEnd))
    assert list(_samples(m, "istio_tcp_connections_opened_total").values()) == [1.0]  # not again
    assert list(_samples(m, "istio_tcp_connections_closed_total").values()) == [1.0]
    assert list(_samples(m, "istio_tcp_received_bytes_total").values()) == [5.0]
    assert list(_samples(m, "istio_tcp_sent_bytes_total").values()) == [9.0]


def test_tcp_never_connected_counted_opened_at_close_and_periodic_ignored() -> None:
    m = WorkloadMetrics()
    periodic = _tcp_entry(accesslog_pb2.AccessLogType.TcpPeriodic)
    periodic.common_properties.intermediate_log_entry = True
    record_tcp(m, ME, LOG_OUTBOUND, periodic)
    assert _samples(m, "istio_tcp_connections_opened_total") == {}
    failed = _tcp_entry(accesslog_pb2.AccessLogType.TcpConnectionEnd, connected=False)
    failed.common_properties.response_flags.upstream_connection_failure = True
    record_tcp(m, ME, LOG_OUTBOUND, failed)
    [(labels, opened)] = _samples(m, "istio_tcp_connections_opened_total").items()
    assert opened == 1.0 and 'response_flags="UF"' in labels


def _connect(kind: int, *, cluster: str, code: int = 200) -> accesslog_pb2.HTTPAccessLogEntry:
    e = _entry(cluster=cluster, authority="mysql:3306", code=code)
    e.request.request_method = base_pb2.RequestMethod.Value("CONNECT")  # type: ignore[assignment]
    e.common_properties.access_log_type = kind  # type: ignore[assignment]
    return e


def test_connect_tunnel_counts_as_tcp() -> None:
    m = WorkloadMetrics()
    cluster = "outbound|3306||mysql.default.svc.cluster.local"
    record_http(m, ME, LOG_OUTBOUND, _connect(accesslog_pb2.AccessLogType.DownstreamTunnelSuccessfullyEstablished, cluster=cluster))
    assert list(_samples(m, "istio_tcp_connections_opened_total").values()) == [1.0]
    record_http(m, ME, LOG_OUTBOUND, _connect(accesslog_pb2.AccessLogType.DownstreamEnd, cluster=cluster))
    assert list(_samples(m, "istio_tcp_connections_opened_total").values()) == [1.0]
    assert list(_samples(m, "istio_tcp_received_bytes_total").values()) == [7.0]  # request body = from the app
    assert list(_samples(m, "istio_tcp_sent_bytes_total").values()) == [1234.0]
    assert _samples(m, "istio_requests_total") == {}
    # gRPC's CONNECT through the loop-back: its requests are logged one by one, not the tunnel.
    closed = _samples(m, "istio_tcp_connections_closed_total")
    record_http(m, ME, LOG_OUTBOUND, _connect(accesslog_pb2.AccessLogType.DownstreamEnd, cluster="outbound_loop"))
    assert _samples(m, "istio_tcp_connections_closed_total") == closed
    assert _samples(m, "istio_requests_total") == {}


def test_label_children_cached_per_label_set() -> None:
    m = WorkloadMetrics()
    for code in (200, 200, 503):
        record_http(m, ME, LOG_OUTBOUND, _entry(cluster="outbound|9080||back.shop.svc.cluster.local", code=code))
    counts = sorted(_samples(m, "istio_requests_total").values())
    assert counts == [1.0, 2.0]
    m.record_request(dict(zip(HTTP_LABELS, ["x"] * len(HTTP_LABELS), strict=True)), 1.0, 1, 1)
    assert sorted(_samples(m, "istio_requests_total").values()) == [1.0, 1.0, 2.0]


def test_source_reporter_falls_back_to_the_upstream_host_metadata() -> None:
    """A TCP connection (or a request the server never answered) brings no x-novamesh-peer: the
    destination workload is the one the chosen endpoint's EDS metadata names."""
    e = _tcp_entry(accesslog_pb2.AccessLogType.TcpConnectionEnd)
    tags = e.common_properties.custom_tags
    tags[UPSTREAM_PEER_TAG] = "mysql-v1,default,mysql,v1"
    tags[UPSTREAM_PEER_PRINCIPAL_TAG] = "spiffe://cluster.local/ns/default/sa/mysql"
    tags[UPSTREAM_LOCAL_PRINCIPAL_TAG] = "spiffe://cluster.local/ns/shop/sa/front"
    labels = tcp_labels(ME, LOG_OUTBOUND, e)
    assert (labels["destination_workload"], labels["destination_workload_namespace"]) == ("mysql-v1", "default")
    assert (labels["destination_app"], labels["destination_version"]) == ("mysql", "v1")
    assert labels["destination_principal"] == "spiffe://cluster.local/ns/default/sa/mysql"
    assert labels["source_principal"] == "spiffe://cluster.local/ns/shop/sa/front"
    assert labels["connection_security_policy"] == "unknown"  # the client side never reports it
    # The server's own answer wins over the endpoint metadata; "-" (no certificate) is unknown.
    http = _entry(cluster="outbound|9080||back.shop.svc.cluster.local", metadata={"peer": "back-v2,shop,back,v2"})
    http.common_properties.custom_tags[UPSTREAM_PEER_TAG] = "back-v1,shop,back,v1"
    http.common_properties.custom_tags[UPSTREAM_PEER_PRINCIPAL_TAG] = "-"
    labels = http_labels(ME, LOG_OUTBOUND, http)
    assert labels["destination_workload"] == "back-v2" and labels["destination_principal"] == "unknown"
    # The destination reporter ignores them (its peer is the downstream caller).
    inbound = _entry(metadata={"source": "client-v1,default,client,v1"})
    inbound.common_properties.custom_tags[UPSTREAM_PEER_TAG] = "back-v1,shop,back,v1"
    assert http_labels(ME, LOG_INBOUND, inbound)["destination_workload"] == "front-v1"
