"""The ``novamesh`` command line. Thin: parses, calls the library or the REST API, prints."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.table import Table

from .. import __version__
from ..config.loader import read_paths
from ..config.names import canonical_kind
from ..errors import NovameshError
from ..settings import Settings
from .common import ControlPlaneOpt, client_for, err, fail, out, user_name

__all__ = ["app", "main"]

app = typer.Typer(
    name="novamesh",
    help="novamesh: a service mesh with a Python control plane and real Envoy sidecars, "
    "configured with the Istio YAML you already write.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (scripts, CI logs) gets a wide console so tables are not truncated.


@app.command("version")
def version() -> None:
    """Print the novamesh version."""
    out.print(f"novamesh {__version__}")


@app.command("control-plane")
def control_plane(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Directory for the store and logs (default ~/.local/state/novamesh)."),
    xds_port: Optional[int] = typer.Option(None, "--xds-port", help="Plaintext ADS port (default 15010, loopback only)."),
    http_port: Optional[int] = typer.Option(None, "--http-port", help="REST API and metrics port (default 15014)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    store: Optional[str] = typer.Option(None, "--store", help="'sqlite' (default) or etcd://HOST:PORT[,HOST:PORT...] for HA replicas (env NOVAMESH_STORE)."),
) -> None:
    """Run the control plane: config store, workload registry, xDS server and REST API."""
    from ..controlplane.server import run_control_plane

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):  # one line per etcd request otherwise
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = Settings.from_env(
            data_dir=str(data_dir) if data_dir else None, xds_port=xds_port, http_port=http_port, store=store
        )
        run_control_plane(settings)
    except NovameshError as exc:
        fail(exc)


def _documents(files: list[str]) -> list[dict[str, str]]:
    return [{"file": name, "content": text} for name, text in read_paths(files)]


@app.command("apply")
def apply(
    filename: list[str] = typer.Option(..., "--filename", "-f", help="YAML file or directory (repeatable; '-' for stdin)."),
    namespace: str = typer.Option("default", "--namespace", "-n", help="Namespace for documents that name none."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and show what would change; store nothing."),
    author: str = typer.Option("", "--author", help="Recorded in the revision history (default: your user name)."),
    message: str = typer.Option("", "--message", "-m", help="Recorded in the revision history."),
    control_plane: Optional[str] = ControlPlaneOpt,
) -> None:
    """Apply Istio config: every document is validated, then all are stored as one revision, or none."""
    try:
        docs = _documents(filename)
        result = client_for(control_plane).post(
            "/api/v1/apply",
            {"documents": docs, "namespace": namespace, "dry_run": dry_run, "author": author or user_name(), "message": message},
        )
    except NovameshError as exc:
        fail(exc)
        return
    if result.get("dry_run"):
        from .history_cmds import print_diff

        print_diff(result.get("diff", ""))
    suffix = " (dry run)" if result.get("dry_run") else ""
    for ch in result["changes"]:
        out.print(f"{ch['kind'].lower()}/{ch['name']} ({ch['namespace']}) {ch['action']}{suffix}", highlight=False)
    if not result.get("dry_run"):
        out.print(f"revision {result['revision']}", style="dim", highlight=False)
    else:
        from .dryrun_output import print_dry_run_checks

        if not print_dry_run_checks(result):  # analysis and guarded-apply verdict; 1 if apply would be refused
            raise typer.Exit(1)


@app.command("get")
def get(
    kind: str = typer.Argument(..., help="virtualservice (vs), destinationrule (dr), serviceentry (se), workloadentry (we), 'workloads', or mesh-config (effective mesh-wide defaults)."),
    name: Optional[str] = typer.Argument(None, help="Resource name; all when omitted."),
    namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="Only this namespace (default: all)."),
    output: str = typer.Option("table", "--output", "-o", help="table, yaml or json."),
    control_plane: Optional[str] = ControlPlaneOpt,
) -> None:
    """Show stored config (or registered workloads with `get workloads`)."""
    try:
        client = client_for(control_plane)
        if kind.lower() in ("workloads", "workload", "wl"):
            _print_workloads(client.get("/api/v1/workloads"), output)
            return
        canon = canonical_kind(kind)
        if canon == "MeshConfig" and not name:  # the effective mesh-wide defaults (meshconfig_cmds.py)
            from .meshconfig_cmds import print_mesh_config

            print_mesh_config(client.get("/api/v1/mesh-config"), output)
            return
        if canon is None:
            raise NovameshError(f"unknown kind {kind!r}; use virtualservice (vs), destinationrule (dr), serviceentry (se), workloadentry (we) or workloads")
        if name:
            items = [client.get(f"/api/v1/resources/{canon}/{namespace or 'default'}/{name}")]
        else:
            items = client.get("/api/v1/resources", kind=canon, namespace=namespace)
    except NovameshError as exc:
        fail(exc)
        return
    _print_resources(items, output, single=bool(name))


def _print_resources(items: list[dict[str, Any]], output: str, single: bool) -> None:
    if output == "json":
        out.print_json(json.dumps(items[0] if single else items))
    elif output == "yaml":
        sys.stdout.write(yaml.safe_dump_all(items, sort_keys=False) if items else "")
    else:
        table = Table(box=None)
        for col in ("NAMESPACE", "KIND", "NAME", "HOSTS"):
            table.add_column(col)
        for m in items:
            spec = m.get("spec", {})
            hosts = spec.get("hosts") or ([spec["host"]] if "host" in spec else [spec.get("address", "")])
            table.add_row(m["metadata"].get("namespace", "default"), m["kind"], m["metadata"]["name"], ", ".join(hosts))
        if not items:
            err.print("no resources found")
        else:
            out.print(table)


def _print_workloads(items: list[dict[str, Any]], output: str) -> None:
    if output in ("json", "yaml"):
        text = json.dumps(items, indent=2) if output == "json" else yaml.safe_dump(items, sort_keys=False)
        sys.stdout.write(text + "\n")
        return
    table = Table(box=None)
    for col in ("ID", "SERVICE", "NAMESPACE", "VERSION", "ADDRESS", "PORTS", "READY", "LEASE"):
        table.add_column(col)
    for w in items:
        ports = ",".join(f"{p['number']}/{p['protocol']}" for p in w["ports"]) or "-"
        table.add_row(w["id"], w["service"], w["namespace"], w["version"], w["address"], ports, "yes" if w["ready"] else "no", f"{w['expires_in']}s")
    out.print(table)


@app.command("delete")
def delete(
    kind: Optional[str] = typer.Argument(None, help="Kind of the resource to delete (with NAME)."),
    name: Optional[str] = typer.Argument(None, help="Name of the resource to delete."),
    filename: Optional[list[str]] = typer.Option(None, "--filename", "-f", help="Delete what these files define."),
    namespace: str = typer.Option("default", "--namespace", "-n", help="Namespace of the resource."),
    control_plane: Optional[str] = ControlPlaneOpt,
) -> None:
    """Delete config: `delete -f FILE` or `delete KIND NAME`. Refused if what remains would break a reference."""
    try:
        client = client_for(control_plane)
        if filename:
            result = client.post("/api/v1/delete", {"documents": _documents(filename), "namespace": namespace})
        elif kind and name:
            canon = canonical_kind(kind)
            if canon is None:
                raise NovameshError(f"unknown kind {kind!r}")
            result = client.request("DELETE", f"/api/v1/resources/{canon}/{namespace}/{name}")
        else:
            raise NovameshError("say what to delete: `novamesh delete -f FILE` or `novamesh delete KIND NAME`")
    except NovameshError as exc:
        fail(exc)
        return
    for ch in result["changes"]:
        out.print(f"{ch['kind'].lower()}/{ch['name']} ({ch['namespace']}) {ch['action']}", highlight=False)


@app.command("proxy-status")
def proxy_status(
    output: str = typer.Option("table", "--output", "-o", help="table or json."),
    control_plane: Optional[str] = ControlPlaneOpt,
) -> None:
    """Each connected proxy and, per xDS type, SYNCED / STALE / NACK (with Envoy's error)."""
    try:
        items = client_for(control_plane).get("/api/v1/proxies")
    except NovameshError as exc:
        fail(exc)
        return
    if output == "json":
        out.print_json(json.dumps(items))
        return
    table = Table(box=None)
    for col in ("PROXY", "SERVICE", "VERSION", "ADDRESS", "CDS", "LDS", "EDS", "RDS"):
        table.add_column(col)
    errors = []
    for p in items:
        cells = []
        for t in ("CDS", "LDS", "EDS", "RDS"):
            st = p["types"][t]
            style = {"SYNCED": "green", "STALE": "yellow", "NACK": "red"}.get(st["status"], "dim")
            cells.append(f"[{style}]{st['status']}[/{style}]")
            if st["error"]:
                errors.append((p["id"], t, st["error"]))
        table.add_row(p["id"], f"{p['service']}.{p['namespace']}", p["version"], p["address"], *cells)
    if not items:
        err.print("no proxies connected")
        return
    out.print(table)
    for pid, t, e in errors:
        out.print(f"[red]{pid} rejected {t}:[/red] {e}", highlight=False)


def _register_extensions() -> None:
    """Commands that live in their own modules (agent, stacks)."""
    for module in ("agent_cmds", "stack_cmds", "gateway_cmds", "history_cmds", "context_cmds", "backup_cmds", "analyze_cmds", "observe_cmds", "inspect_cmds", "security_cmds"):
        try:
            mod = __import__(f"novamesh.cli.{module}", fromlist=["register"])
        except ModuleNotFoundError as exc:  # pragma: no cover - only while a module is missing
            if exc.name != f"novamesh.cli.{module}":
                raise
            continue
        mod.register(app)


_register_extensions()


def main() -> None:
    """Console-script entry point."""
    app()
