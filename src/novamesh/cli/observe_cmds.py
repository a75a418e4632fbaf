"""`novamesh prometheus-config`: a Prometheus scrape configuration for the running mesh."""

from __future__ import annotations

import json
from typing import Optional

import typer
import yaml

from ..errors import NovameshError
from ..observe.scrape_config import FORMATS, scrape_config, workload_target_groups
from ..settings import Settings
from .common import ControlPlaneOpt, client_for, fail, out

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the observability commands to ``app``."""

    @app.command("prometheus-config")
    def prometheus_config(
        control_plane: Optional[str] = ControlPlaneOpt,
        fmt: str = typer.Option("static", "--format", "-f", help="static: a whole prometheus.yml; file_sd: workload targets as file_sd JSON."),
        interval: str = typer.Option("15s", "--interval", help="scrape_interval and evaluation_interval (Prometheus duration, e.g. 15s)."),
        metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Agents' metrics port (default: setting metrics_port, 15020)."),
    ) -> None:
        """Print a Prometheus scrape configuration for the control plane and every workload."""
        try:
            if fmt not in FORMATS:
                raise NovameshError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
            if not interval or not interval[0].isdigit() or interval[-1] not in "smhdwy":
                raise NovameshError(f"--interval {interval!r} is not a Prometheus duration such as 15s or 1m")
            port = metrics_port if metrics_port is not None else Settings.from_env().metrics_port
            if not 1 <= port <= 65535:
                raise NovameshError(f"--metrics-port {port} is not a TCP port (1-65535)")
            client = client_for(control_plane)
            workloads = client.get("/api/v1/workloads")
            if fmt == "file_sd":
                text = json.dumps(workload_target_groups(workloads, port), indent=2) + "\n"
            else:
                text = yaml.safe_dump(scrape_config(client.base_urls, workloads, metrics_port=port, interval=interval), sort_keys=False)
        except NovameshError as exc:
            fail(exc)
            return
        out.print(text, end="", highlight=False, markup=False, soft_wrap=True)
