"""`novamesh proxy-config`, `describe` and `explain-flags`: look inside the running mesh.

Thin: fetches from the control plane's REST API and the sidecars' Envoy admin, hands the data to
:mod:`novamesh.observe.proxyconfig`, :mod:`novamesh.observe.describe` and
:mod:`novamesh.observe.flags`, and prints.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Optional

import httpx
import typer
import yaml
from rich.table import Table as RichTable

from ..config.loader import parse_manifest
from ..config.resource import Resource, ResourceKey, Source
from ..errors import ConfigError, NovameshError
from ..observe import describe as desc_mod
from ..observe import flags as flags_mod
from ..observe import proxyconfig as pc
from ..registry.registry import Workload
from ..settings import Settings
from .client import ApiClient
from .common import ControlPlaneOpt, client_for, err, fail, out

__all__ = ["fetch_state", "register"]


def fetch_state(client: ApiClient) -> tuple[dict[ResourceKey, Resource], list[Workload], list[dict[str, Any]]]:
    """The config set, workloads and proxy statuses, from the control plane."""
    resources: dict[ResourceKey, Resource] = {}
    for manifest in client.get("/api/v1/resources"):
        try:
            r = parse_manifest(manifest, source=Source(file="<control plane>"))
        except ConfigError:
            continue  # a kind this CLI does not know: describe what it does know
        resources[r.key] = r
    workloads = [Workload.from_dict(w) for w in client.get("/api/v1/workloads")]
    proxies = list(client.get("/api/v1/proxies"))
    return resources, workloads, proxies


def _print(data: Any, output: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


def _check_output(output: str, allowed: tuple[str, ...]) -> None:
    if output not in allowed:
        raise NovameshError(f"unknown output format {output!r}; use one of {', '.join(allowed)}")


def _admin_get(base: str, path: str, timeout: float) -> Any:
    try:
        resp = httpx.get(f"{base}{path}", timeout=timeout, trust_env=False)
    except httpx.TransportError as exc:
        raise NovameshError(
            f"cannot reach the sidecar's Envoy admin at {base} ({exc.__class__.__name__}: {exc}); "
            "is the workload running on this host? `--source control-plane` shows what was sent instead"
        ) from exc
    if resp.status_code != 200:
        raise NovameshError(f"Envoy admin {base}{path} answered {resp.status_code}: {resp.text[:200]}")
    return resp.json()


def _load_config(client: ApiClient, workload: dict[str, Any], source: str, settings: Settings) -> pc.ProxyConfig:
    if source == "control-plane":
        return pc.from_control_plane(client.get(f"/api/v1/proxies/{workload['id']}/config"))
    if source != "envoy":
        raise NovameshError(f"unknown --source {source!r}; use envoy (what the proxy runs) or control-plane (what was sent)")
    base = f"http://{workload['address']}:{settings.envoy_admin_port}"
    dump = _admin_get(base, "/config_dump", settings.admin_timeout)
    # Route configs fetched by name as well: the whole dump can omit them while RDS is settling.
    routes = _admin_get(base, "/config_dump?resource=dynamic_route_configs", settings.admin_timeout)
    clusters = _admin_get(base, "/clusters?format=json", settings.admin_timeout)
    return pc.from_envoy(dump, clusters, [routes])


def _print_table(table: pc.Table, title: str | None = None) -> None:
    if title:
        out.print(f"[bold]{title}[/bold]")
    if not table.rows:
        out.print(table.empty_note, highlight=False, markup=False)
        return
    rt = RichTable(box=None)
    for h in table.headers:
        rt.add_column(h, overflow="fold")
    for row in table.rows:
        rt.add_row(*row)
    out.print(rt, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add the inspection commands to ``app``."""

    @app.command("proxy-config")
    def proxy_config(
        section: str = typer.Argument(..., help="clusters, listeners, routes, endpoints, secrets or all."),
        workload: str = typer.Argument(..., help="Workload id, service[.namespace] (if one workload serves it) or address."),
        output: str = typer.Option("short", "--output", "-o", help="short, json or yaml."),
        source: str = typer.Option("envoy", "--source", help="envoy (the config the proxy runs, from its admin) or control-plane (what was sent)."),
        namespace: Optional[str] = typer.Option(None, "--namespace", "-n", help="Namespace of a service name given as WORKLOAD."),
        control_plane: Optional[str] = ControlPlaneOpt,
    ) -> None:
        """A proxy's clusters, listeners, routes, endpoints (with health) or secrets."""
        try:
            sections = pc.SECTIONS if section == "all" else (section,)
            if section != "all" and section not in pc.SECTIONS:
                raise NovameshError(f"unknown section {section!r}; use one of {', '.join(pc.SECTIONS)} or all")
            _check_output(output, ("short", "json", "yaml"))
            settings = Settings.from_env()
            client = client_for(control_plane)
            resources, workloads, _ = fetch_state(client)
            chosen = pc.resolve_workload(workload, [w.to_dict() for w in workloads], namespace)
            cfg = _load_config(client, chosen, source, settings)
        except NovameshError as exc:
            fail(exc)
            return
        if output != "short":
            _print(pc.section_data(section, cfg), output)
            return
        vss, drs = desc_mod.host_annotations(resources, workloads, settings.domain_suffix)
        notes = pc.Annotations(virtual_services=vss, destination_rules=drs)
        for s in sections:
            _print_table(pc.table_for(s, cfg, notes), s.upper() if len(sections) > 1 else None)
            if len(sections) > 1:
                out.print("")

    @app.command("describe")
    def describe(
        kind: str = typer.Argument(..., help="service (svc) or workload."),
        name: str = typer.Argument(..., help="Service name (or name.namespace, FQDN, ServiceEntry host); workload id or service."),
        namespace: str = typer.Option("default", "--namespace", "-n", help="Namespace of NAME."),
        output: str = typer.Option("text", "--output", "-o", help="text or json."),
        control_plane: Optional[str] = ControlPlaneOpt,
    ) -> None:
        """Which VirtualServices, DestinationRules, Sidecars, Gateways and policies apply, in sentences."""
        try:
            _check_output(output, ("text", "json"))
            settings = Settings.from_env()
            resources, workloads, proxies = fetch_state(client_for(control_plane))
            result: desc_mod.ServiceDescription | desc_mod.WorkloadDescription
            if kind.lower() in ("service", "services", "svc"):
                result = desc_mod.describe_service(name, namespace, resources, workloads, proxies, settings.domain_suffix)
            elif kind.lower() in ("workload", "workloads", "wl"):
                result = desc_mod.describe_workload(name, namespace, resources, workloads, proxies, settings.domain_suffix)
            else:
                raise NovameshError(f"cannot describe {kind!r}; use `describe service NAME` or `describe workload NAME`")
        except NovameshError as exc:
            fail(exc)
            return
        if output == "json":
            _print(result.to_dict(), "json")
        else:
            sys.stdout.write(desc_mod.render(result))

    @app.command("explain-flags")
    def explain_flags(
        flags: str = typer.Argument(..., help="Response flags from an access log (UO, URX,UF, -) or response_code_details."),
        service: Optional[str] = typer.Option(None, "--service", "-s", help="Name the config of this service that is involved."),
        namespace: str = typer.Option("default", "--namespace", "-n", help="Namespace of --service."),
        output: str = typer.Option("text", "--output", "-o", help="text or json."),
        control_plane: Optional[str] = ControlPlaneOpt,
    ) -> None:
        """Explain Envoy response flags: what happened, the likely cause and the config involved."""
        try:
            _check_output(output, ("text", "json"))
            facts = None
            label = ""
            if service:
                settings = Settings.from_env()
                resources, workloads, proxies = fetch_state(client_for(control_plane))
                d = desc_mod.describe_service(service, namespace, resources, workloads, proxies, settings.domain_suffix)
                facts, label = d.facts, d.name
            items = flags_mod.explain(flags, facts, label)
        except NovameshError as exc:
            fail(exc)
            return
        if output == "json":
            _print([e.to_dict() for e in items], "json")
        else:
            sys.stdout.write(flags_mod.render_explanations(items))
        if any(not e.known for e in items):
            err.print("some flags are unknown (see above)")
            raise typer.Exit(1)
