"""``novamesh gateway``: run an ingress or egress gateway (an Envoy with no app).

Thin: parses flags into an :class:`~novamesh.agent.workload.AgentConfig` of kind gateway and
runs an :class:`~novamesh.agent.runner.Agent` with the gateway bootstrap. ``gw`` is a hidden
alias.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from ..agent.gateway import DEFAULT_MAX_CONNECTIONS, gateway_builder, gateway_config
from ..agent.runner import Agent
from ..agent.workload import PortSpec, parse_labels, parse_port
from ..errors import NovameshError
from ..settings import Settings
from .agent_cmds import ControlPlaneOpt, DataDirOpt, _setup_logging

__all__ = ["register"]

GATEWAY_HELP = """Run a gateway: an Envoy without an app, configured by Gateway resources.

Gateways whose `selector` matches this gateway's labels (in any namespace) open their servers
on the gateway's address (its own loopback address, like a pod IP; see the log or
`novamesh proxy-status`), and VirtualServices bound with `gateways: [<namespace>/<name>]`
route what arrives. Give the labels your Gateways select with --label (e.g. istio=ingressgateway);
app=NAME is always set.

--port declares the ports the mesh reaches the gateway on, as the Service in front of an Istio
gateway does: with --name istio-egressgateway --namespace istio-system --port 8090, sidecars
route to istio-egressgateway.istio-system.svc.cluster.local:8090 (the egress pattern). An
ingress gateway needs no --port: clients connect to ADDRESS:<server port> directly.

Example: novamesh gateway --name istio-ingressgateway --label istio=ingressgateway
"""

_PORT_HELP = "Port the mesh reaches the gateway on, repeatable: NUMBER or NUMBER/PROTOCOL (HTTP default)."


def _ports(values: list[str]) -> tuple[PortSpec, ...]:
    ports = tuple(parse_port(v) for v in values)
    for given, port in zip(values, ports, strict=True):
        if port.app_port:
            raise NovameshError(f"--port {given!r}: a gateway has no app; write just NUMBER or NUMBER/PROTOCOL")
    return ports


def register(app: typer.Typer) -> None:
    """Add the ``gateway`` command (and its hidden alias ``gw``) to ``app``."""

    def gateway(
        name: Annotated[str, typer.Option("--name", help="Gateway name: its service name and app label.")],
        namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the gateway.")] = "istio-system",
        label: Annotated[list[str] | None, typer.Option("--label", "-l", help="Label key=value that Gateway selectors match, repeatable.")] = None,
        port: Annotated[list[str] | None, typer.Option("--port", "-p", help=_PORT_HELP)] = None,
        address: Annotated[str | None, typer.Option("--address", help="Loopback address to request; default: allocated.")] = None,
        max_connections: Annotated[int, typer.Option("--max-connections", min=1, help="Downstream connections accepted before new ones are refused.")] = DEFAULT_MAX_CONNECTIONS,
        control_plane: ControlPlaneOpt = None,
        data_dir: DataDirOpt = None,
    ) -> None:
        try:
            config = gateway_config(
                name=name, namespace=namespace, labels=parse_labels(label or []), ports=_ports(port or []), address=address
            )
            settings = Settings.from_env(control_plane_url=control_plane, data_dir=data_dir)
            _setup_logging()
            agent = Agent(config, settings, bootstrap_builder=gateway_builder(max_connections))
            code = asyncio.run(agent.run())
        except NovameshError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        raise typer.Exit(code)

    app.command("gateway", help=GATEWAY_HELP, no_args_is_help=True)(gateway)
    app.command("gw", help=GATEWAY_HELP, hidden=True, no_args_is_help=True)(gateway)
