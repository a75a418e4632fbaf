"""Fold a proxy's xDS resources into one static Envoy bootstrap.

Used to check generated config with ``envoy --mode validate`` (tests today; guarded apply
later): EDS clusters get their ClusterLoadAssignment inline and RDS references are replaced by
the route configuration itself, so Envoy validates every resource we would have sent.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .common import T
from .proxy import Resources

__all__ = ["static_bootstrap"]


def static_bootstrap(res: Resources, admin_address: str = "127.0.0.1", admin_port: int = 0) -> dict[str, Any]:
    clusters = []
    for c in res[T.CLUSTER].values():
        c = copy.deepcopy(c)
        if c.get("type") == "EDS":
            name = c.pop("eds_cluster_config")["service_name"]
            c["type"] = "STATIC"
            c["load_assignment"] = copy.deepcopy(res[T.ENDPOINT].get(name, {"cluster_name": c["name"]}))
        clusters.append(c)
    listeners = []
    for ln in res[T.LISTENER].values():
        ln = copy.deepcopy(ln)
        for chain in ln.get("filter_chains", []):
            for f in chain.get("filters", []):
                tc = f.get("typed_config", {})
                rds = tc.pop("rds", None)
                if rds is not None:
                    tc["route_config"] = copy.deepcopy(res[T.ROUTE][rds["route_config_name"]])
        listeners.append(ln)
    if '"sds-grpc"' in json.dumps(listeners) + json.dumps(clusters):  # mesh mTLS: the agent's SDS cluster
        clusters.append({"name": "sds-grpc", "type": "STATIC", "connect_timeout": "1s", "http2_protocol_options": {},
                         "load_assignment": {"cluster_name": "sds-grpc", "endpoints": [
                             {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": "/nonexistent/sds.sock"}}}}]}]}})  # fmt: skip
    return {
        "node": {"id": "validate", "cluster": "validate"},  # SDS needs a node
        "admin": {"address": {"socket_address": {"address": admin_address, "port_value": admin_port}}},
        "static_resources": {"clusters": clusters, "listeners": listeners},
    }
