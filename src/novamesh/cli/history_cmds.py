"""`novamesh history`, `diff` and `rollback`: the config history kept by the control plane."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Optional

import typer
from rich.table import Table

from ..config.names import canonical_kind
from ..errors import NovameshError
from .common import ControlPlaneOpt, client_for, err, fail, out, user_name

__all__ = ["register", "print_diff"]


def print_diff(text: str) -> None:
    if not text:
        err.print("no differences")
        return
    if not sys.stdout.isatty():
        sys.stdout.write(text)
        return
    for line in text.splitlines():
        style = "green" if line.startswith("+") else "red" if line.startswith("-") else "cyan" if line.startswith("@@") else None
        out.print(line, style=style, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add the history commands to ``app``."""

    @app.command("history")
    def history(
        resource: Optional[str] = typer.Argument(None, help="KIND/NAME to show only the revisions that changed it (e.g. vs/reviews)."),
        namespace: str = typer.Option("default", "--namespace", "-n", help="Namespace of KIND/NAME."),
        limit: int = typer.Option(20, "--limit", help="How many revisions, newest first."),
        control_plane: Optional[str] = ControlPlaneOpt,
    ) -> None:
        """Config revisions, newest first: number, time, author, message and what changed."""
        params: dict[str, object] = {"limit": limit}
        try:
            if resource:
                kind, _, name = resource.partition("/")
                canon = canonical_kind(kind)
                if canon is None or not name:
                    raise NovameshError(f"expected KIND/NAME such as vs/reviews, got {resource!r}")
                params.update(kind=canon, name=name, namespace=namespace)
            revs = client_for(control_plane).get("/api/v1/revisions", **params)
        except NovameshError as exc:
            fail(exc)
            return
        table = Table(box=None)
        for col in ("REVISION", "TIME (UTC)", "AUTHOR", "MESSAGE", "CHANGES"):
            table.add_column(col)
        for r in revs:
            when = dt.datetime.fromtimestamp(r["time"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            changes = ", ".join(f"{c['action']} {c['kind'].lower()}/{c['name']}" for c in r["changes"])
            table.add_row(str(r["revision"]), when, r["author"], r["message"], changes)
        if not revs:
            err.print("no revisions yet")
        else:
            out.print(table)

    @app.command("diff")
    def diff(
        rev: int = typer.Argument(..., help="The older revision."),
        rev2: Optional[int] = typer.Argument(None, help="The newer revision (default: the current one)."),
        control_plane: Optional[str] = ControlPlaneOpt,
    ) -> None:
        """Unified YAML diff of the whole config set between two revisions."""
        try:
            result = client_for(control_plane).get("/api/v1/diff", rev_from=rev, rev_to=rev2)
        except NovameshError as exc:
            fail(exc)
            return
        print_diff(result["diff"])

    @app.command("rollback")
    def rollback(
        to: Optional[int] = typer.Option(None, "--to", help="Revision to return to (default: the one before the latest)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; change nothing."),
        author: str = typer.Option("", "--author", help="Recorded in the history (default: your user name)."),
        message: str = typer.Option("", "--message", "-m", help="Recorded in the history."),
        control_plane: Optional[str] = ControlPlaneOpt,
    ) -> None:
        """Return the config to an earlier revision, as a new revision (history is never rewritten)."""
        try:
            result = client_for(control_plane).post(
                "/api/v1/rollback", {"to": to, "dry_run": dry_run, "author": author or user_name(), "message": message}
            )
        except NovameshError as exc:
            fail(exc)
            return
        print_diff(result["diff"])
        suffix = " (dry run)" if result.get("dry_run") else ""
        for ch in result["changes"]:
            out.print(f"{ch['kind'].lower()}/{ch['name']} ({ch['namespace']}) {ch['action']}{suffix}", highlight=False)
        if not result["changes"]:
            out.print("already at that revision's config; nothing changed")
        elif not result.get("dry_run"):
            out.print(f"revision {result['revision']}", style="dim", highlight=False)
