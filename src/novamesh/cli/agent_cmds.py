"""``novamesh run`` and ``novamesh agent``: put a workload in the mesh.

Thin: parses flags into an :class:`~novamesh.agent.workload.AgentConfig` and runs an
:class:`~novamesh.agent.runner.Agent`; the exit code is the agent's (the app's, for ``run``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from ..agent.runner import Agent
from ..agent.workload import PORT_SYNTAX, AgentConfig, parse_labels, parse_port
from ..errors import NovameshError
from ..settings import Settings

__all__ = ["register", "build_config"]

RUN_HELP = f"""Run CMD as a mesh workload behind its own sidecar Envoy.

Registers the workload with the control plane, which gives it a loopback address of its own
(like a pod IP), starts Envoy, then starts CMD once Envoy has its configuration. Put `--` before
CMD. The workload becomes an endpoint of its service when Envoy is ready and every app port
accepts connections. On SIGTERM/SIGINT, or when CMD exits, it is removed from the endpoints,
CMD is stopped (SIGTERM, then SIGKILL), and Envoy is drained and stopped.

CMD gets this environment: HOST (the workload address: listen there), PORT (the app port of the
first --port), NOVAMESH_PORT_<port> (app port of each service port), HTTP_PROXY and http_proxy
(the sidecar's outbound listener: call other services as http://<service>:<port>/),
NOVAMESH_SERVICE, NOVAMESH_VERSION, NOVAMESH_NAMESPACE and NOVAMESH_ADDRESS.

Port syntax: {PORT_SYNTAX}.
Protocol is HTTP unless given; without =APP_PORT a free app port is picked.

Exit code: CMD's. If novamesh itself is signalled, 0 if CMD then exits cleanly, else
128+signal (143 for SIGTERM).

Example: novamesh run --service reviews --version v2 --port 9080 -- python reviews.py
"""

AGENT_HELP = f"""Run a sidecar Envoy for an app started some other way.

Like `novamesh run` without CMD. Every --port needs =APP_PORT: the port your app listens on at
--app-host.

Port syntax: {PORT_SYNTAX}.

A workload without ports is client-only: it serves nothing, and its app calls other services
through the outbound listener at ADDRESS:15001 (set the app's HTTP_PROXY to
http://ADDRESS:15001; pick ADDRESS with --address, or read it from the agent's log). Exits 0 on
SIGTERM/SIGINT, after deregistering and draining.

Example: novamesh agent --service ratings --port 9080=8080 --app-host 127.0.0.1
"""

_PORT_HELP = f"Service port, repeatable; syntax {PORT_SYNTAX}. Protocols: HTTP (default), HTTP2, GRPC, HTTPS, TLS, TCP."
_ADDRESS_HELP = "Loopback address to request (e.g. 127.1.0.7); default: the control plane allocates one."
_CP_HELP = "Control-plane REST URL (default: $NOVAMESH_CONTROL_PLANE_URL, else http://127.0.0.1:15014)."
_DATA_HELP = (
    "Where workload files go (DATA_DIR/workloads/SERVICE-VERSION-ID/; "
    "default: $NOVAMESH_DATA_DIR, else ~/.local/state/novamesh)."
)
_APP_HOST_HELP = "Address your app listens on (the APP_PORTs of --port)."

ServiceOpt = Annotated[str, typer.Option("--service", "-s", help="Service this workload serves (its mesh name).")]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the service.")]
VersionOpt = Annotated[str, typer.Option("--version", help="Version label of this workload (subsets select on it).")]
PortOpt = Annotated[list[str] | None, typer.Option("--port", "-p", help=_PORT_HELP)]
_LABEL_HELP = "Workload label key=value, repeatable; app=SERVICE and version=VERSION are always set unless overridden."
LabelOpt = Annotated[list[str] | None, typer.Option("--label", "-l", help=_LABEL_HELP)]
SaOpt = Annotated[str, typer.Option("--service-account", help="Service account: the workload's identity.")]
AddressOpt = Annotated[str | None, typer.Option("--address", help=_ADDRESS_HELP)]
ControlPlaneOpt = Annotated[str | None, typer.Option("--control-plane", help=_CP_HELP)]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help=_DATA_HELP)]
TokenFileOpt = Annotated[str | None, typer.Option("--token-file", help="File with the join token for the workload's first certificate (or env NOVAMESH_JOIN_TOKEN); see docs/security.md.")]
AppHostOpt = Annotated[str, typer.Option("--app-host", help=_APP_HOST_HELP)]
CommandArg = Annotated[
    list[str], typer.Argument(metavar="CMD", help="The app to run and its arguments, after `--`.", show_default=False)
]


def build_config(
    *,
    service: str,
    namespace: str = "default",
    version: str = "v1",
    ports: list[str] | None = None,
    labels: list[str] | None = None,
    service_account: str = "default",
    address: str | None = None,
    app_host: str = "127.0.0.1",
    command: list[str] | None = None,
) -> AgentConfig:
    """Flags → a validated :class:`AgentConfig` (raises :class:`NovameshError` on bad flags)."""
    config = AgentConfig(
        service=service,
        namespace=namespace,
        version=version,
        service_account=service_account,
        ports=tuple(parse_port(p) for p in ports or []),
        labels=parse_labels(labels or []),
        address=address,
        app_host=app_host,
        command=tuple(command or ()),
    )
    config.validate()
    return config


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s novamesh %(levelname)s %(message)s"
        )
    # One line per heartbeat and readiness poll would drown the workload's own log.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def _run_agent(config: AgentConfig, settings: Settings) -> int:
    return await Agent(config, settings).run()


def _start(
    make_config: Callable[[], AgentConfig], control_plane: str | None, data_dir: str | None, token_file: str | None = None
) -> None:
    """Build the config and settings, run the agent, exit with its code."""
    try:
        config = make_config()
        settings = Settings.from_env(control_plane_url=control_plane, data_dir=data_dir, join_token_file=token_file)
        _setup_logging()
        code = asyncio.run(_run_agent(config, settings))
    except NovameshError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the ``run`` and ``agent`` commands to ``app``."""

    @app.command("run", help=RUN_HELP, no_args_is_help=True)
    def run(
        service: ServiceOpt,
        command: CommandArg,
        namespace: NamespaceOpt = "default",
        version: VersionOpt = "v1",
        port: PortOpt = None,
        label: LabelOpt = None,
        service_account: SaOpt = "default",
        address: AddressOpt = None,
        control_plane: ControlPlaneOpt = None,
        data_dir: DataDirOpt = None,
        token_file: TokenFileOpt = None,
    ) -> None:
        def make_config() -> AgentConfig:
            return build_config(
                service=service, namespace=namespace, version=version, ports=port, labels=label,
                service_account=service_account, address=address, command=command,
            )  # fmt: skip

        _start(make_config, control_plane, data_dir, token_file)

    @app.command("agent", help=AGENT_HELP, no_args_is_help=True)
    def agent(
        service: ServiceOpt,
        namespace: NamespaceOpt = "default",
        version: VersionOpt = "v1",
        port: PortOpt = None,
        label: LabelOpt = None,
        service_account: SaOpt = "default",
        address: AddressOpt = None,
        app_host: AppHostOpt = "127.0.0.1",
        control_plane: ControlPlaneOpt = None,
        data_dir: DataDirOpt = None,
        token_file: TokenFileOpt = None,
    ) -> None:
        def make_config() -> AgentConfig:
            return build_config(
                service=service, namespace=namespace, version=version, ports=port, labels=label,
                service_account=service_account, address=address, app_host=app_host,
            )  # fmt: skip

        _start(make_config, control_plane, data_dir, token_file)
