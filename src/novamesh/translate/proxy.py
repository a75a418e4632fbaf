"""Entry points: translate a snapshot for a proxy class, then for one proxy.

Proxies whose translation inputs are equal form a *class* (kind, namespace and, for sidecars,
the Sidecar resource that applies to them; for gateways, their labels) and share
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
from .gateway import GATEWAY_KIND, bind_listeners, gateway_listeners_and_routes
from .listeners import OUTBOUND_LISTENER, listeners_for
from .mtls import has_identity, secure_inbound_all, strip_mesh_tls
from .peer_authn import InboundMtls, inbound_mtls
from .routes import outbound_route_config
from .scoping import outbound_policy, scoped_snapshot, sidecar_ref
from .tcp import add_l4, bind_to_proxy
from .telemetry import TelemetryPlan, apply_telemetry, plan_of, resolve_plan, with_plan
from .authz import AuthzPlan, apply_authz, apply_gateway_authz, resolve_authz, with_authz

__all__ = ["ClassKey", "class_inputs", "class_key", "translate_class", "translate_proxy", "Resources", "consistency_errors"]

Resources = dict[str, dict[str, dict[str, Any]]]
"""type URL -> resource name -> resource (protobuf JSON dict)."""

MTLS_PLAN = "novamesh:inbound-mtls"
"""Key of the class resources recording the inbound mTLS modes (not an xDS type)."""


@dataclass(frozen=True)
class ClassKey:
    kind: str
    namespace: str
    labels: tuple[tuple[str, str], ...] = ()
    """Gateways: the Gateways selecting a gateway are a function of its labels. Sidecars: used
    to find the Sidecar resource when ``sidecar`` is None."""
    sidecar: str | None = None
    """Sidecars: ``<ns>/<name>`` of the Sidecar resource that applies ("" = none)."""
    telemetry: TelemetryPlan | None = None
    """Sidecars: what the Telemetry resources say for them (None: resolve from ``labels``)."""
    authz: AuthzPlan | None = None
    """Sidecars: what AuthorizationPolicy / RequestAuthentication add (None: resolve from ``labels``)."""
    mtls: InboundMtls | None = None
    """Sidecars: the PeerAuthentication modes of their inbound ports (None: the default)."""


def class_inputs(proxy: Proxy) -> tuple[object, ...]:
    """Everything :func:`class_key` reads from ``proxy``: proxies with equal inputs have equal
    keys under one snapshot (xds/cache.py computes the key once per distinct inputs)."""
    return proxy.kind, proxy.namespace, proxy.labels, tuple(p.number for p in proxy.ports)


def class_key(proxy: Proxy, snapshot: MeshSnapshot | None = None) -> ClassKey:
    if proxy.kind != GATEWAY_KIND and snapshot is not None:  # proxies of one Sidecar share a class
        return ClassKey(proxy.kind, proxy.namespace, sidecar=sidecar_ref(snapshot, proxy.namespace, proxy.label_dict),
                        telemetry=resolve_plan(snapshot, proxy.namespace, proxy.label_dict),
                        authz=resolve_authz(snapshot, proxy.namespace, proxy.label_dict),
                        mtls=inbound_mtls(snapshot, proxy.namespace, proxy.label_dict, tuple(p.number for p in proxy.ports)))
    return ClassKey(proxy.kind, proxy.namespace, proxy.labels)


def translate_class(snapshot: MeshSnapshot, key: ClassKey, opts: TranslateOptions) -> Resources:
    """Everything shared by the proxies of one class. Pure and deterministic."""
    full, ref = snapshot, key.sidecar if key.sidecar is not None else sidecar_ref(snapshot, key.namespace, dict(key.labels))
    if key.kind != GATEWAY_KIND:  # a Sidecar's egress limits the services its proxies see
        snapshot = scoped_snapshot(snapshot, ref, key.namespace)
    endpoints: dict[str, dict[str, Any]] = {}
    for svc in snapshot.services.values():
        endpoints.update(endpoints_for_service(snapshot, svc))
    if key.kind == GATEWAY_KIND:  # same clusters as a sidecar; its own listeners and routes
        listeners, routes = gateway_listeners_and_routes(snapshot, dict(key.labels))
        clusters = outbound_clusters(snapshot, opts)
        apply_gateway_authz(resolve_authz(snapshot, key.namespace, dict(key.labels)), clusters, listeners)  # authz.py
        return {
            T.CLUSTER: dict(sorted(clusters.items())),
            T.ENDPOINT: dict(sorted(endpoints.items())),
            T.LISTENER: listeners,
            T.ROUTE: dict(sorted(routes.items())),
        }
    route = outbound_route_config(snapshot, key.namespace)
    out: Resources = {
        T.CLUSTER: dict(sorted(outbound_clusters(snapshot, opts).items())),
        T.ENDPOINT: dict(sorted(endpoints.items())),
        T.LISTENER: {},
        T.ROUTE: {route["name"]: route},
    }
    add_l4(out, snapshot, key.namespace, outbound_policy(full, ref), opts.connect_timeout)
    plan = key.telemetry if key.telemetry is not None else resolve_plan(full, key.namespace, dict(key.labels))
    modes = key.mtls if key.mtls is not None else inbound_mtls(full, key.namespace, dict(key.labels))
    out[MTLS_PLAN] = {"plan": {"plan": (modes, full.trust_domain)}}  # read by translate_proxy
    authz = key.authz if key.authz is not None else resolve_authz(full, key.namespace, dict(key.labels))
    return with_authz(with_plan(out, plan), authz)  # both applied per proxy by translate_proxy


def translate_proxy(class_resources: Resources, proxy: Proxy, opts: TranslateOptions) -> Resources:
    """The class translation plus this proxy's own listeners and inbound clusters."""
    if proxy.kind == GATEWAY_KIND:  # no app, no sidecar listeners: the servers, bound to its address
        gw = {**class_resources, T.LISTENER: bind_listeners(class_resources[T.LISTENER], proxy)}
        if not has_identity(proxy.labels):
            gw[T.CLUSTER] = strip_mesh_tls(gw[T.CLUSTER])  # no certificate: plain text to sidecars
        return gw
    clusters = dict(class_resources[T.CLUSTER])
    clusters.update(inbound_clusters(proxy, opts))
    listeners = listeners_for(proxy)
    bind_to_proxy(class_resources, clusters, listeners, proxy, OUTBOUND_LISTENER)  # TCP/TLS/CONNECT
    plan = plan_of(class_resources)
    if plan is not None:
        apply_telemetry(plan, proxy, clusters, listeners)
    apply_authz(class_resources, clusters, listeners)  # RBAC / JWT filters on inbound HCMs (authz.py)
    mtls, trust_domain = class_resources.get(MTLS_PLAN, {}).get("plan", {}).get("plan", (InboundMtls(), ""))
    secure_inbound_all(listeners, proxy, mtls, trust_domain or "cluster.local")  # PeerAuthentication (mtls.py)
    if not has_identity(proxy.labels):
        clusters = strip_mesh_tls(clusters)  # no certificate: no mesh mTLS to present
    return {
        T.CLUSTER: dict(sorted(clusters.items())),
        T.ENDPOINT: class_resources[T.ENDPOINT],
        T.LISTENER: dict(sorted(listeners.items())),
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
