"""Turn translation output (protobuf JSON dicts) into Envoy protobuf messages."""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

# Importing the modules registers every type the translation may name in an Any.
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
# Per-route HTTP policies (translate/http_policies.py): CORS and fault filters, retry plugins.
from envoy.extensions.filters.http.cors.v3 import cors_pb2  # noqa: F401
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2  # noqa: F401
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2  # noqa: F401  (mesh mTLS)
from envoy.extensions.clusters.dynamic_forward_proxy.v3 import cluster_pb2 as dfp_cluster_pb2  # noqa: F401
from envoy.extensions.filters.http.dynamic_forward_proxy.v3 import dynamic_forward_proxy_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
# Tracing and access logs (translate/telemetry.py).
from envoy.config.trace.v3 import opentelemetry_pb2, zipkin_pb2  # noqa: F401
from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2  # noqa: F401
# Workload metrics (observe/envoy_config.py): gRPC access logs and the peer-identity filters.
from envoy.extensions.access_loggers.grpc.v3 import als_pb2  # noqa: F401
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2  # noqa: F401
from envoy.extensions.filters.http.header_to_metadata.v3 import header_to_metadata_pb2  # noqa: F401
# Authorization and JWT (translate/authz.py, translate/jwt.py).
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_authn_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2 as _jwks_tls_pb2  # noqa: F401

from .common import T

__all__ = ["to_message", "to_any", "MESSAGE_TYPES"]

MESSAGE_TYPES: dict[str, type[Message]] = {
    T.CLUSTER: cluster_pb2.Cluster,
    T.ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    T.LISTENER: listener_pb2.Listener,
    T.ROUTE: route_pb2.RouteConfiguration,
}


def to_message(type_url: str, resource: dict[str, Any]) -> Message:
    """Parse one resource dict into its Envoy message (raises ParseError on a translation bug)."""
    msg = MESSAGE_TYPES[type_url]()
    json_format.ParseDict(resource, msg)
    return msg


def to_any(type_url: str, resource: dict[str, Any]) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(to_message(type_url, resource))
    return packed
