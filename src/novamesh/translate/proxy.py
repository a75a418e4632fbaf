"""Entry points: translate a snapshot for a proxy class, then for one proxy.

Proxies whose translation inputs are equal form a *class* (today: kind and namespace) and share
one class translation: outbound clusters, endpoints and routes. Only what names the proxy's own
address or app ports (listeners, inbound clusters) is built per proxy, which is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..model.proxy import Proxy
from ..model.snapshot import MeshSnapshot
from .clusters import TranslateOptions, inbound_clusters, outbound_clusters
from .common import T
from .endpoints import endpoints_for_service
from .listeners import listeners_for
from .routes import outbound_route_config

__all__ = ["ClassKey", "class_key", "translate_class", "translate_proxy", "Resources", "consistency_errors"]

Resources = dict[str, dict[str, dict[str, Any]]]
"""type URL -> resource name -> resource (protobuf JSON dict)."""


@dataclass(frozen=True)
class ClassKey:
    kind: str
    namespace: str


def class_key(proxy: Proxy) -> ClassKey:
    return ClassKey(proxy.kind, proxy.namespace)


def translate_class(snapshot: MeshSnapshot, key: ClassKey, opts: TranslateOptions) -> Resources:
    """Everything shared by the proxies of one class. Pure and deterministic."""
    endpoints: dict[str, dict[str, Any]] = {}
    for svc in snapshot.services.values():
        endpoints.update(endpoints_for_service(snapshot, svc))
    route = outbound_route_config(snapshot, key.namespace)
    return {
        T.CLUSTER: dict(sorted(outbound_clusters(snapshot, opts).items())),
        T.ENDPOINT: dict(sorted(endpoints.items())),
        T.LISTENER: {},
        T.ROUTE: {route["name"]: route},
    }


def translate_proxy(class_resources: Resources, proxy: Proxy, opts: TranslateOptions) -> Resources:
    """The class translation plus this proxy's own listeners and inbound clusters."""
    clusters = dict(class_resources[T.CLUSTER])
    clusters.update(inbound_clusters(proxy, opts))
    return {
        T.CLUSTER: dict(sorted(clusters.items())),
        T.ENDPOINT: class_resources[T.ENDPOINT],
        T.LISTENER: dict(sorted(listeners_for(proxy).items())),
        T.ROUTE: class_resources[T.ROUTE],
    }


def consistency_errors(res: Resources) -> list[str]:
    """go-control-plane's Consistent(): every EDS cluster has an assignment and every RDS name
    a listener references exists. Catches translation bugs before Envoy does."""
    errors = []
    for name, c in res[T.CLUSTER].items():
        if c.get("type") == "EDS":
            svc_name = c["eds_cluster_config"]["service_name"]
            if svc_name not in res[T.ENDPOINT]:
                errors.append(f"cluster {name}: no endpoints resource {svc_name}")
    for lname, ln in res[T.LISTENER].items():
        for chain in ln.get("filter_chains", []):
            for f in chain.get("filters", []):
                rds = f.get("typed_config", {}).get("rds")
                if rds and rds["route_config_name"] not in res[T.ROUTE]:
                    errors.append(f"listener {lname}: no route config {rds['route_config_name']}")
    return errors
