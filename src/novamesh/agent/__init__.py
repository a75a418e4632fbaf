"""The agent: one per workload or gateway.

It registers the workload with the control plane, writes the Envoy bootstrap, starts and
supervises Envoy, starts the app (``novamesh run``) once Envoy is ready, heartbeats, and on
shutdown deregisters, stops the app and drains Envoy. Entry point: :class:`Agent`.
"""

from .bootstrap import build_bootstrap, write_bootstrap
from .client import ControlPlaneClient, Lease, WorkloadSpec
from .clock import Clock, SystemClock
from .envoy import Activity, Backoff, DrainResult, EnvoyProcess, find_envoy, validate_config
from .registration import Registration
from .runner import Agent
from .workload import AgentConfig, PortSpec, parse_labels, parse_port

__all__ = [
    "Activity",
    "Agent",
    "AgentConfig",
    "Backoff",
    "Clock",
    "ControlPlaneClient",
    "DrainResult",
    "EnvoyProcess",
    "Lease",
    "PortSpec",
    "Registration",
    "SystemClock",
    "WorkloadSpec",
    "build_bootstrap",
    "find_envoy",
    "parse_labels",
    "parse_port",
    "validate_config",
    "write_bootstrap",
]
