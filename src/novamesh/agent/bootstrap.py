"""The Envoy bootstrap an agent writes for its sidecar.

The bootstrap is deliberately small: it names the node (with the full :class:`Proxy` description
in ``node.metadata["NOVAMESH"]``, so the control plane can program the proxy from its first ADS
request), binds the admin interface to the workload's own loopback address, and points every
dynamic resource at one ADS stream to the control plane. Everything else — listeners, clusters,
routes, endpoints — arrives over xDS.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import NovameshError
from ..model.proxy import METADATA_KEY, Proxy
from ..observe.envoy_config import als_cluster
from ..settings import Settings
from ..config.names import is_ip

__all__ = ["XDS_CLUSTER", "build_bootstrap", "write_bootstrap", "duration", "xds_addresses", "csr_targets", "aim_xds_cluster"]

#: Name of the static cluster that carries the ADS stream.
XDS_CLUSTER = "xds-grpc"

_HTTP_OPTIONS_TYPE = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def duration(seconds: float) -> str:
    """A protobuf JSON ``Duration`` (``"1.500s"``) for ``seconds``."""
    return f"{seconds:.3f}s"


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}



def _host_ports(value: str, setting: str, default: tuple[str, int]) -> list[tuple[str, int]]:
    out = []
    for part in value.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            if part.strip():
                raise NovameshError(f"{setting} entry {part.strip()!r} is not HOST:PORT (e.g. 127.0.0.1:{default[1]})")
            continue
        out.append((host.strip("[]"), int(port)))
    return out or [default]


def xds_addresses(settings: Settings) -> list[tuple[str, int]]:
    """Every control-plane replica's plaintext xDS address: ``settings.xds_addresses``
    ("h:p,h:p") when set, else ``xds_host:xds_port``."""
    return _host_ports(settings.xds_addresses, "xds_addresses", (settings.xds_host, settings.xds_port))


def csr_targets(settings: Settings) -> list[tuple[str, int]]:
    """Every replica's port 15012 (CSR service and mTLS xDS): ``settings.csr_addresses`` when
    set, else ``xds_host:csr_port``."""
    return _host_ports(settings.csr_addresses, "csr_addresses", (settings.xds_host, settings.csr_port))


def aim_xds_cluster(cluster: dict[str, Any], addresses: list[tuple[str, int]]) -> dict[str, Any]:
    """Point the ``xds-grpc`` cluster at ``addresses`` (every control-plane replica), in place."""
    # STATIC needs IP literals; a host name (e.g. a control plane on another VM) needs DNS.
    cluster["type"] = "STATIC" if all(is_ip(h) for h, _ in addresses) else "STRICT_DNS"
    cluster["load_assignment"] = {
        "cluster_name": XDS_CLUSTER,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(h, p)}} for h, p in addresses]}],
    }
    return cluster


def _xds_cluster(settings: Settings) -> dict[str, Any]:
    return aim_xds_cluster({
        "name": XDS_CLUSTER,
        "connect_timeout": duration(1.0),
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS_TYPE: {
                "@type": f"type.googleapis.com/{_HTTP_OPTIONS_TYPE}",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        # gRPC needs HTTP/2; keepalive notices a control plane that vanished
                        # without closing the connection (e.g. its host went away).
                        "connection_keepalive": {
                            "interval": duration(settings.xds_keepalive),
                            "timeout": duration(settings.xds_keepalive_timeout),
                        }
                    }
                },
            }
        },
    }, xds_addresses(settings))


FRAGMENT_RUNTIME_KEY = "envoy.reloadable_features.http_reject_path_with_fragment"
"""Envoy's runtime guard; ``False`` makes Envoy strip a request target's fragment (Istio sets it)."""


def build_bootstrap(proxy: Proxy, settings: Settings) -> dict[str, Any]:
    """The Envoy v3 bootstrap (a JSON-able dict) for ``proxy``.

    The admin interface binds ``proxy.address:proxy.admin_port`` (the workload's loopback
    address, never a wildcard). CDS and LDS come over ADS from ``settings.xds_host:xds_port``.
    """
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {
            "id": proxy.node_id(settings.domain_suffix),
            "cluster": f"{proxy.service}.{proxy.namespace}",
            "metadata": {METADATA_KEY: proxy.to_metadata()},
        },
        "admin": {"address": _socket_address(proxy.address, proxy.admin_port)},
        "static_resources": {"clusters": [_xds_cluster(settings), *als_cluster(proxy)]},  # ALS: metrics
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                # Envoy's default reconnect backoff grows to 30 s; a control plane that comes
                # back (restart, restore, new certificate) should be found within a few seconds.
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER, "retry_policy": {"retry_back_off": {
                    "base_interval": duration(0.5), "max_interval": duration(settings.xds_retry_max_interval)}}}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": dict(ads),
            "lds_config": dict(ads),
        },
        "stats_config": {"use_all_default_tags": True},
        "layered_runtime": {
            "layers": [
                # Strip a URI fragment (`/admin#x` -> `/admin`) instead of refusing it with 400,
                # as Istio's bootstrap does: the fragment is gone before normalization and the
                # RBAC filters, so the policy evaluates, and the app receives, the path alone.
                {"name": "static", "static_layer": {FRAGMENT_RUNTIME_KEY: False}},
                {"name": "admin", "admin_layer": {}},
            ]
        },
    }


def write_bootstrap(path: Path, bootstrap: dict[str, Any]) -> Path:
    """Write ``bootstrap`` as JSON to ``path`` (parents created, replaced atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(bootstrap, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
