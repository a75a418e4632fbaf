"""`novamesh analyze`: run the analyzers over files (offline, for CI) and/or the live mesh.

Exit codes follow istioctl: 0 when no message reaches ``--failure-threshold``, 79 when one
does, 1 when the input cannot be read or the control plane cannot be reached, 2 for bad usage.
"""

from __future__ import annotations

import sys

import typer

from ..analysis import (
    FORMATS,
    Level,
    all_analyzers,
    analyze,
    build_context,
    exceeds,
    live_resources,
    load_paths,
    render,
)
from ..errors import NovameshError
from ..settings import Settings
from .common import ControlPlaneOpt, client_for, err, fail

__all__ = ["EXIT_FOUND_ISSUES", "register"]

EXIT_FOUND_ISSUES = 79
"""istioctl's exit code when analysis finds issues at or above the failure threshold."""


def _level(value: str, option: str) -> Level:
    try:
        return Level.parse(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _list_analyzers() -> None:
    for a in all_analyzers():
        live = " (live only)" if a.live_only else ""
        sys.stdout.write(f"* {a.code} {a.name}{live}\n    {a.description}\n")


def register(app: typer.Typer) -> None:
    """Add ``analyze`` to ``app``."""

    @app.command("analyze")
    def analyze_cmd(
        filename: list[str] | None = typer.Option(None, "--filename", "-f", help="YAML file or directory to analyze (repeatable; '-' for stdin). No control plane needed."),
        live: bool = typer.Option(False, "--live", help="Analyze the live mesh (config and workloads from the control plane); with -f, the files are laid over it as if applied."),
        namespace: str = typer.Option("default", "--namespace", "-n", help="Namespace for file documents that name none."),
        output: str = typer.Option("log", "--output", "-o", help=f"Output format: {', '.join(FORMATS)}."),
        failure_threshold: str = typer.Option("error", "--failure-threshold", help="Exit 79 when a message is at least this severe: error, warning or info."),
        output_threshold: str = typer.Option("info", "--output-threshold", help="Print only messages at least this severe: error, warning or info."),
        list_analyzers: bool = typer.Option(False, "--list-analyzers", "-L", help="List the analyzers and exit."),
        control_plane: str | None = ControlPlaneOpt,
    ) -> None:
        """Find problems in mesh config, with Istio's message codes (IST0101, ...) and ours (NM...)."""
        if output not in FORMATS:
            raise typer.BadParameter(f"unknown format {output!r}; use one of {', '.join(FORMATS)}", param_hint="--output")
        fail_level = _level(failure_threshold, "--failure-threshold")
        show_level = _level(output_threshold, "--output-threshold")
        if list_analyzers:
            _list_analyzers()
            return
        if not filename and not live:
            fail(NovameshError("nothing to analyze: pass -f FILE|DIR (offline) and/or --live (the running mesh)"))
        targets: list[str] = list(filename or [])
        try:
            files = load_paths(targets, namespace) if filename else None
            live_state = workloads = None
            if live:
                client = client_for(control_plane)
                live_state = live_resources(client.get("/api/v1/resources"))
                workloads = client.get("/api/v1/workloads")
                targets.insert(0, f"the live mesh at {client.base_url}")
        except NovameshError as exc:
            fail(exc)
        ctx = build_context(files=files, live=live_state, workloads=workloads,
                            domain_suffix=Settings.from_env().domain_suffix)
        messages = analyze(ctx)
        shown = [m for m in messages if m.level >= show_level]
        sys.stdout.write(render(shown, output))
        sys.stdout.flush()
        target = ", ".join(targets)
        if exceeds(messages, fail_level):
            err.print(f"analysis found issues at level {fail_level.label} or above in {target}; "
                      "see docs/analyze.md for each code", highlight=False, markup=False)
            raise typer.Exit(EXIT_FOUND_ISSUES)
        if not messages and output == "log":
            err.print(f"\u2714 No validation issues found when analyzing {target}.", highlight=False, markup=False)
