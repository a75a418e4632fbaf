"""``novamesh proxy-config``: a proxy's clusters, listeners, routes, endpoints and secrets.

Pure: the CLI fetches Envoy's admin ``/config_dump`` and ``/clusters?format=json`` (the config
the proxy actually runs) or the control plane's ``GET /api/v1/proxies/{id}/config`` (what was
sent), and this module normalises either into a :class:`ProxyConfig` and builds the tables
``-o short`` prints (the columns istioctl uses) or the documents ``-o json|yaml`` prints.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config.names import parse_outbound_cluster
from ..errors import NotFoundError, NovameshError

__all__ = [
    "NO_SECRETS",
    "SECTIONS",
    "Annotations",
    "EndpointStatus",
    "ProxyConfig",
    "Table",
    "from_control_plane",
    "from_envoy",
    "resolve_workload",
    "section_data",
    "table_for",
]

SECTIONS = ("clusters", "listeners", "routes", "endpoints", "secrets")
"""What ``proxy-config`` shows (``all`` is every one of them)."""

NO_SECRETS = (
    "no secrets: this proxy holds no certificates. Certificates reach Envoy over SDS from its agent once "
    "the control plane's CA has signed them; if this stays empty, check the agent's log and `novamesh proxy-status`."
)

_HCM = "envoy.filters.network.http_connection_manager"
_TCP = "envoy.filters.network.tcp_proxy"


@dataclass(frozen=True)
class EndpointStatus:
    """One host of one cluster, with its health as Envoy (or the control plane) sees it."""

    endpoint: str
    status: str
    outlier_check: str
    cluster: str
    weight: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "status": self.status, "outlierCheck": self.outlier_check,
                "cluster": self.cluster, "weight": self.weight}


@dataclass(frozen=True)
class ProxyConfig:
    """A proxy's config, from Envoy (``source="envoy"``) or from the control plane."""

    source: str
    clusters: tuple[dict[str, Any], ...] = ()
    listeners: tuple[dict[str, Any], ...] = ()
    routes: tuple[dict[str, Any], ...] = ()
    endpoints: tuple[EndpointStatus, ...] = ()
    secrets: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Annotations:
    """What the config set says about hosts, for the VIRTUAL SERVICE / DESTINATION RULE columns:
    FQDN -> ``name.namespace`` of the VirtualService / DestinationRule that applies."""

    virtual_services: Mapping[str, str] = field(default_factory=dict)
    destination_rules: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Table:
    """Headers and rows of a ``-o short`` table (plus a note printed when there are no rows)."""

    headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    empty_note: str = ""


# -- workload lookup ---------------------------------------------------------------------------
def resolve_workload(ref: str, workloads: Sequence[Mapping[str, Any]], namespace: str | None = None) -> dict[str, Any]:
    """The workload ``ref`` names: an id, ``service[.namespace]`` (when exactly one workload
    serves it) or an address. Several matches: an error listing them; none: the known ones."""
    for w in workloads:
        if w.get("id") == ref:
            return dict(w)
    service, _, ns = ref.partition(".")
    ns = ns or namespace or ""
    matches = [w for w in workloads if w.get("service") == service and (not ns or w.get("namespace") == ns)]
    if not matches:
        matches = [w for w in workloads if w.get("address") == ref]
    if len(matches) == 1:
        return dict(matches[0])
    if matches:
        choices = "; ".join(f"{w['id']} ({w.get('service')}.{w.get('namespace')} {w.get('version') or ''} at {w.get('address')})" for w in matches)
        raise NovameshError(f"{ref!r} matches {len(matches)} workloads; name one by id: {choices}")
    known = ", ".join(sorted({f"{w.get('service')}.{w.get('namespace')}" for w in workloads})) or "none"
    raise NotFoundError(f"no workload {ref!r} (by id, service[.namespace] or address); registered: {known}. See `novamesh get workloads`.")


# -- normalising -------------------------------------------------------------------------------
def _items(dump: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    configs = dump.get("configs", [])
    return configs if isinstance(configs, list) else []


def from_envoy(config_dump: Mapping[str, Any], clusters_json: Mapping[str, Any] | None = None,
               extra_dumps: Sequence[Mapping[str, Any]] = ()) -> ProxyConfig:
    """Normalise Envoy's ``/config_dump`` (whole, or ``?resource=`` answers in ``extra_dumps``)
    and ``/clusters?format=json`` (endpoint health) into a :class:`ProxyConfig`."""
    clusters: dict[str, dict[str, Any]] = {}
    listeners: dict[str, dict[str, Any]] = {}
    routes: dict[str, dict[str, Any]] = {}
    secrets: dict[str, dict[str, Any]] = {}
    for dump in (config_dump, *extra_dumps):
        for item in _items(dump):
            kind = str(item.get("@type", "")).rsplit(".", 1)[-1]
            if kind == "ClustersConfigDump":
                entries = [*item.get("static_clusters", []), *item.get("dynamic_active_clusters", []), *item.get("dynamic_warming_clusters", [])]
            elif kind == "ListenersConfigDump":
                entries = [*item.get("static_listeners", []), *item.get("dynamic_listeners", [])]
            elif kind == "RoutesConfigDump":
                entries = [*item.get("static_route_configs", []), *item.get("dynamic_route_configs", [])]
            elif kind == "SecretsConfigDump":
                entries = [*item.get("static_secrets", []), *item.get("dynamic_active_secrets", []), *item.get("dynamic_warming_secrets", [])]
            else:
                entries = [item]  # a ?resource= answer: one entry per item
            for entry in entries:
                if "cluster" in entry and isinstance(entry["cluster"], dict):
                    clusters.setdefault(str(entry["cluster"].get("name")), dict(entry["cluster"]))
                elif "listener" in entry or "active_state" in entry or "warming_state" in entry:
                    state = entry.get("active_state") or entry.get("warming_state") or entry
                    lst = state.get("listener")
                    if isinstance(lst, dict):
                        listeners.setdefault(str(lst.get("name")), dict(lst))
                elif "route_config" in entry:
                    routes.setdefault(str(entry["route_config"].get("name")), dict(entry["route_config"]))
                elif "secret" in entry:
                    secrets.setdefault(str(entry.get("name") or entry["secret"].get("name")), dict(entry))
    endpoints: list[EndpointStatus] = []
    for cs in (clusters_json or {}).get("cluster_statuses", []):
        for hs in cs.get("host_statuses", []):
            endpoints.append(_host_status(str(cs.get("name")), hs))
    return ProxyConfig(
        source="envoy",
        clusters=tuple(clusters[k] for k in sorted(clusters)),
        listeners=tuple(listeners[k] for k in sorted(listeners)),
        routes=tuple(routes[k] for k in sorted(routes)),
        endpoints=tuple(sorted(endpoints, key=lambda e: (e.cluster, e.endpoint))),
        secrets=tuple(secrets[k] for k in sorted(secrets)),
    )


def _address(addr: Mapping[str, Any]) -> str:
    sa = addr.get("socket_address")
    if isinstance(sa, dict):
        return f"{sa.get('address')}:{sa.get('port_value', 0)}"
    pipe = addr.get("pipe")
    if isinstance(pipe, dict):
        return f"unix://{pipe.get('path')}"
    return "-"


def _host_status(cluster: str, hs: Mapping[str, Any]) -> EndpointStatus:
    health = hs.get("health_status", {})
    status = str(health.get("eds_health_status") or "HEALTHY")
    failures = [k for k in ("failed_active_health_check", "failed_active_degraded_check", "pending_dynamic_removal",
                            "pending_active_hc", "excluded_via_immediate_hc_fail", "active_hc_timeout")
                if health.get(k)]
    if health.get("failed_active_health_check"):
        status = "UNHEALTHY"
    outlier = "FAILED" if health.get("failed_outlier_check") else "OK"
    if failures and status == "HEALTHY":
        status = "UNHEALTHY"
    return EndpointStatus(_address(hs.get("address", {})), status, outlier, cluster, int(hs.get("weight", 1) or 1))


def from_control_plane(raw: Mapping[str, Mapping[str, Any]]) -> ProxyConfig:
    """Normalise the control plane's view (``{"CDS"|"EDS"|"LDS"|"RDS": {name: resource}}``)."""
    def ordered(t: str) -> tuple[dict[str, Any], ...]:
        section = raw.get(t, {})
        return tuple(dict(section[k]) for k in sorted(section))

    clusters = ordered("CDS")
    endpoints: list[EndpointStatus] = []
    assignments = [*ordered("EDS"), *(c["load_assignment"] for c in clusters if isinstance(c.get("load_assignment"), dict))]
    for cla in assignments:
        name = str(cla.get("cluster_name"))
        for group in cla.get("endpoints", []):
            for lb in group.get("lb_endpoints", []):
                addr = lb.get("endpoint", {}).get("address", {})
                status = str(lb.get("health_status") or "HEALTHY")
                weight = int(lb.get("load_balancing_weight", 1) or 1)
                endpoints.append(EndpointStatus(_address(addr), status, "n/a (sent config)", name, weight))
    return ProxyConfig(
        source="control-plane",
        clusters=clusters,
        listeners=ordered("LDS"),
        routes=ordered("RDS"),
        endpoints=tuple(sorted(endpoints, key=lambda e: (e.cluster, e.endpoint))),
    )


# -- tables ------------------------------------------------------------------------------------
def _cluster_row(c: Mapping[str, Any], notes: Annotations) -> tuple[str, ...]:
    name = str(c.get("name", ""))
    kind = str(c.get("type") or (c.get("cluster_type") or {}).get("name") or "EDS")
    parsed = parse_outbound_cluster(name)
    if parsed is not None:
        port, subset, fqdn = parsed
        dr = notes.destination_rules.get(fqdn, "-")
        return (fqdn, str(port), subset or "-", "outbound", kind, dr)
    parts = name.split("|")
    if len(parts) == 4 and parts[0] == "inbound":
        return (name, parts[1], "-", "inbound", kind, "-")
    return (name, "-", "-", "-", kind, "-")


def _chain_match(chain: Mapping[str, Any]) -> str:
    m = chain.get("filter_chain_match") or {}
    parts: list[str] = []
    if m.get("server_names"):
        parts.append("SNI: " + ",".join(m["server_names"]))
    if m.get("destination_port"):
        parts.append(f"port {m['destination_port']}")
    if m.get("transport_protocol"):
        parts.append(f"transport {m['transport_protocol']}")
    if m.get("application_protocols"):
        parts.append("ALPN: " + ",".join(m["application_protocols"]))
    return "; ".join(parts) or "ALL"


def _chain_destination(chain: Mapping[str, Any]) -> tuple[str, str]:
    for f in chain.get("filters", []):
        cfg = f.get("typed_config", {})
        if f.get("name") == _HCM or str(cfg.get("@type", "")).endswith("HttpConnectionManager"):
            if "rds" in cfg:
                return "HTTP", f"Route: {cfg['rds'].get('route_config_name')}"
            inline = cfg.get("route_config", {})
            return "HTTP", f"Inline Route: {inline.get('name', '-')}"
        if f.get("name") == _TCP or str(cfg.get("@type", "")).endswith("TcpProxy"):
            if "cluster" in cfg:
                return "TCP", f"Cluster: {cfg['cluster']}"
            wc = cfg.get("weighted_clusters", {}).get("clusters", [])
            return "TCP", "Clusters: " + ", ".join(f"{c.get('name')} ({c.get('weight')})" for c in wc)
    names = ",".join(str(f.get("name", "")).rsplit(".", 1)[-1] for f in chain.get("filters", []))
    return "-", names or "-"


def _listener_rows(lst: Mapping[str, Any]) -> list[tuple[str, ...]]:
    addr = _address(lst.get("address", {}))
    host, _, port = addr.rpartition(":")
    chains = [*lst.get("filter_chains", [])]
    if lst.get("default_filter_chain"):
        chains.append(lst["default_filter_chain"])
    rows: list[tuple[str, ...]] = []
    for chain in chains or [{}]:
        kind, dest = _chain_destination(chain)
        rows.append((str(lst.get("name", "")), host or addr, port or "-", f"{kind}: {_chain_match(chain)}", dest))
    return rows


def _domains(domains: Sequence[str]) -> str:
    if not domains:
        return "-"
    shortest = sorted(domains, key=lambda d: (len(d), d))
    first = shortest[0]
    return first if len(domains) == 1 else f"{first} +{len(domains) - 1} more"


def _route_match(m: Mapping[str, Any]) -> str:
    if "prefix" in m:
        path = "/*" if m["prefix"] == "/" else f"{m['prefix']}*"
    elif "path" in m:
        path = str(m["path"])
    elif "safe_regex" in m:
        path = f"regex {m['safe_regex'].get('regex')}"
    elif "path_separated_prefix" in m:
        path = f"{m['path_separated_prefix']}/*"
    elif "connect_matcher" in m:
        path = "CONNECT"
    else:
        path = "*"
    conds = []
    for h in m.get("headers", []):
        sm = h.get("string_match") or {}
        if "exact" in sm:
            conds.append(f"{h.get('name')}={sm['exact']}")
        elif "prefix" in sm:
            conds.append(f"{h.get('name')}^={sm['prefix']}")
        elif "safe_regex" in sm:
            conds.append(f"{h.get('name')}~{sm['safe_regex'].get('regex')}")
        elif h.get("present_match") is not None:
            conds.append(f"{h.get('name')} {'present' if h.get('present_match') else 'absent'}")
        else:
            conds.append(str(h.get("name")))
        if h.get("invert_match"):
            conds[-1] = "not " + conds[-1]
    for q in m.get("query_parameters", []):
        conds.append(f"?{q.get('name')}")
    return path + (f" ({', '.join(conds)})" if conds else "")


def _route_destination(route: Mapping[str, Any]) -> str:
    if "direct_response" in route:
        return f"direct response {route['direct_response'].get('status')}"
    if "redirect" in route:
        return "redirect"
    action = route.get("route", {})
    if "cluster" in action:
        return str(action["cluster"])
    wc = action.get("weighted_clusters", {}).get("clusters", [])
    if wc:
        return ", ".join(f"{c.get('weight')}% {c.get('name')}" for c in wc)
    if "cluster_header" in action:
        return f"cluster from header {action['cluster_header']}"
    return "-"


def _vhost_host(name: str) -> str:
    return name.rsplit(":", 1)[0]


def _route_rows(rc: Mapping[str, Any], notes: Annotations) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for vh in rc.get("virtual_hosts", []):
        domains = _domains(vh.get("domains", []))
        vs = notes.virtual_services.get(_vhost_host(str(vh.get("name", ""))), "-")
        for r in vh.get("routes", []):
            rname = str(r.get("name", ""))
            rows.append((str(rc.get("name", "")), domains, _route_match(r.get("match", {})), _route_destination(r),
                         vs if rname not in ("default", "not_found") else "-"))
    return rows


def _secret_row(entry: Mapping[str, Any]) -> tuple[str, ...]:
    secret = entry.get("secret", {})
    name = str(entry.get("name") or secret.get("name", ""))
    if "tls_certificate" in secret:
        kind, data = "Cert Chain", secret["tls_certificate"].get("certificate_chain", {})
    elif "validation_context" in secret:
        kind, data = "CA", secret["validation_context"].get("trusted_ca", {})
    else:
        return (name, "other", "-", "-", "-", "ACTIVE")
    valid_from = valid_to = serial = "-"
    pem: bytes | None = None
    if "inline_bytes" in data:
        pem = base64.b64decode(data["inline_bytes"])
    elif "inline_string" in data:
        pem = str(data["inline_string"]).encode()
    if pem:
        try:
            from cryptography import x509

            cert = x509.load_pem_x509_certificates(pem)[0]
            valid_from = cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
            valid_to = cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
            serial = format(cert.serial_number, "x")
        except ValueError:
            serial = "unreadable"
    return (name, kind, "ACTIVE", valid_from, valid_to, serial)


def table_for(section: str, cfg: ProxyConfig, notes: Annotations | None = None) -> Table:
    """The ``-o short`` table of ``section`` (one of :data:`SECTIONS`)."""
    notes = notes or Annotations()
    if section == "clusters":
        return Table(("SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION RULE"),
                     [_cluster_row(c, notes) for c in cfg.clusters], "no clusters")
    if section == "listeners":
        return Table(("NAME", "ADDRESS", "PORT", "TYPE/MATCH", "DESTINATION"),
                     [row for lst in cfg.listeners for row in _listener_rows(lst)], "no listeners")
    if section == "routes":
        return Table(("NAME", "DOMAINS", "MATCH", "DESTINATION", "VIRTUAL SERVICE"),
                     [row for rc in cfg.routes for row in _route_rows(rc, notes)], "no routes")
    if section == "endpoints":
        return Table(("ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"),
                     [(e.endpoint, e.status, e.outlier_check, e.cluster) for e in cfg.endpoints], "no endpoints")
    if section == "secrets":
        return Table(("RESOURCE NAME", "TYPE", "STATUS", "VALID FROM", "VALID TO", "SERIAL"),
                     [_secret_row(s) for s in cfg.secrets], NO_SECRETS)
    raise NovameshError(f"unknown section {section!r}; use one of {', '.join(SECTIONS)} or all")


def section_data(section: str, cfg: ProxyConfig) -> Any:
    """What ``-o json|yaml`` prints for ``section`` (``all``: a dict of every section)."""
    if section == "all":
        return {s: section_data(s, cfg) for s in SECTIONS}
    if section == "endpoints":
        return [e.to_dict() for e in cfg.endpoints]
    if section in SECTIONS:
        return list(getattr(cfg, section))
    raise NovameshError(f"unknown section {section!r}; use one of {', '.join(SECTIONS)} or all")

