"""Gateway mode of the agent: an Envoy with no app, programmed by Gateway resources.

The agent runs it like a sidecar (register, bootstrap, supervise, drain) with ``kind`` gateway;
the control plane then sends it the listeners of the Gateways whose ``selector`` matches its
labels instead of the sidecar's outbound and inbound listeners. The bootstrap adds what only an
edge proxy needs:

- a process-wide cap on downstream connections (Envoy's overload manager), so a connection flood
  cannot exhaust file descriptors or memory; the admin listener is exempt, so the gateway stays
  observable while at the cap;
- the gateway's own address as the source of its upstream connections, so in local mode traffic
  leaving through an egress gateway comes from the gateway's address (the address an external
  firewall would allow), not from 127.0.0.1.
"""

from __future__ import annotations

import functools
from typing import Any

from ..model.proxy import Proxy
from ..settings import Settings
from .bootstrap import build_bootstrap
from .runner import BootstrapBuilder
from .workload import AgentConfig, PortSpec

__all__ = ["DEFAULT_MAX_CONNECTIONS", "gateway_bootstrap", "gateway_builder", "gateway_config"]

DEFAULT_MAX_CONNECTIONS = 10000
"""Downstream connections one gateway Envoy accepts before refusing new ones."""

_CONNECTIONS_MONITOR = "envoy.resource_monitors.global_downstream_max_connections"
_CONNECTIONS_CONFIG = (
    "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)


def gateway_bootstrap(proxy: Proxy, settings: Settings, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> dict[str, Any]:
    """The sidecar bootstrap plus the gateway's connection cap and upstream source address."""
    boot = build_bootstrap(proxy, settings)
    boot["overload_manager"] = {
        "resource_monitors": [
            {
                "name": _CONNECTIONS_MONITOR,
                "typed_config": {"@type": _CONNECTIONS_CONFIG, "max_active_downstream_connections": max_connections},
            }
        ]
    }
    boot["admin"]["ignore_global_conn_limit"] = True
    boot["cluster_manager"] = {"upstream_bind_config": {"source_address": {"address": proxy.address, "port_value": 0}}}
    return boot


def gateway_builder(max_connections: int = DEFAULT_MAX_CONNECTIONS) -> BootstrapBuilder:
    """A bootstrap builder for :class:`~novamesh.agent.runner.Agent` with this connection cap."""
    return functools.partial(gateway_bootstrap, max_connections=max_connections)


def gateway_config(
    *,
    name: str,
    namespace: str,
    labels: dict[str, str],
    ports: tuple[PortSpec, ...] = (),
    address: str | None = None,
    service_account: str = "",
) -> AgentConfig:
    """The :class:`AgentConfig` of a gateway: the gateway's name is its service (Istio deploys
    a gateway with a Service of the same name, which is how the mesh reaches an egress gateway:
    ``<name>.<namespace>.svc.cluster.local:<port>``); ``ports`` are the ports it is reachable on
    from the mesh. A gateway has no version and no app."""
    config = AgentConfig(
        service=name,
        namespace=namespace,
        version="",
        service_account=service_account or f"{name}-service-account",
        ports=ports,
        labels=labels,
        address=address,
        kind="gateway",
    )
    config.validate()
    return config
