"""``novamesh context ...``: named control planes, like kubectl contexts.

Stored in ``$XDG_CONFIG_HOME/novamesh/contexts.yaml`` (default ``~/.config/novamesh``)::

    current: prod
    contexts:
      prod: {controlPlane: "http://cp1:15014,http://cp2:15014", trustDomain: prod.example}
      local: {controlPlane: "http://127.0.0.1:15014"}

Every command that talks to the control plane uses, in order: ``--control-plane``, then
``NOVAMESH_CONTROL_PLANE_URL``, then the context named by ``NOVAMESH_CONTEXT``, then the current
context, then ``http://127.0.0.1:15014``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.table import Table

from ..errors import NotFoundError, NovameshError

__all__ = ["register", "contexts_path", "load_contexts", "save_contexts", "context_url"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def contexts_path() -> Path:
    """Where contexts live (``XDG_CONFIG_HOME`` honoured)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "novamesh" / "contexts.yaml"


def load_contexts() -> dict[str, Any]:
    """``{"current": str|None, "contexts": {name: {...}}}``; empty when there is no file.
    NovameshError (naming the file) when it is not valid."""
    path = contexts_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"current": None, "contexts": {}}
    except OSError as exc:
        raise NovameshError(f"cannot read {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise NovameshError(f"{path} is not valid YAML ({exc}); fix or delete it") from exc
    if not isinstance(data, dict) or not isinstance(data.get("contexts") or {}, dict):
        raise NovameshError(f"{path}: expected a mapping with 'current' and 'contexts'; fix or delete it")
    return {"current": data.get("current"), "contexts": dict(data.get("contexts") or {})}


def save_contexts(data: dict[str, Any]) -> Path:
    """Write ``data`` atomically; returns the path."""
    path = contexts_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path


def context_url(name: str | None = None) -> str | None:
    """The control-plane URL(s) of context ``name`` (default: ``NOVAMESH_CONTEXT``, then the
    current context); None when no context applies. NotFoundError for an unknown name."""
    name = name or os.environ.get("NOVAMESH_CONTEXT") or None
    data = load_contexts()
    name = name or data["current"]
    if not name:
        return None
    ctx = data["contexts"].get(name)
    if not isinstance(ctx, dict):
        known = ", ".join(sorted(data["contexts"])) or "none"
        raise NotFoundError(f"context {name!r} does not exist (known: {known}); add it with `novamesh context add {name} --control-plane URL`")
    return str(ctx.get("controlPlane") or "") or None


def _check_urls(urls: str) -> str:
    parts = [u.strip() for u in urls.split(",") if u.strip()]
    if not parts:
        raise NovameshError("--control-plane needs at least one URL, e.g. http://127.0.0.1:15014")
    for u in parts:
        if not re.match(r"^https?://[^/\s:]+(:\d+)?/?$", u):
            raise NovameshError(f"control-plane URL {u!r} is not http(s)://HOST[:PORT] (e.g. http://10.0.0.5:15014)")
    return ",".join(p.rstrip("/") for p in parts)


def register(app: typer.Typer) -> None:
    """Add ``novamesh context add|use|list|current|delete``."""
    from .common import err, fail, out

    ctx_app = typer.Typer(help="Named control planes: `context add`, `use`, `list`, `current`, `delete`.", no_args_is_help=True)
    app.add_typer(ctx_app, name="context")

    @ctx_app.command("add")
    def add(
        name: str = typer.Argument(..., help="Context name (letters, digits, . _ -)."),
        control_plane: str = typer.Option(..., "--control-plane", "-c", help="REST URL of the control plane; several replicas comma-separated."),
        trust_domain: Optional[str] = typer.Option(None, "--trust-domain", help="SPIFFE trust domain of that mesh (informational)."),
        use: bool = typer.Option(False, "--use", help="Also make it the current context."),
    ) -> None:
        """Add (or replace) a context. The first context added becomes the current one."""
        try:
            if not _NAME.match(name):
                raise NovameshError(f"context name {name!r} is not valid; use letters, digits, '.', '_' or '-' (at most 63)")
            urls = _check_urls(control_plane)
            data = load_contexts()
            entry: dict[str, str] = {"controlPlane": urls}
            if trust_domain:
                entry["trustDomain"] = trust_domain
            existed = name in data["contexts"]
            data["contexts"][name] = entry
            if use or not data["current"]:
                data["current"] = name
            path = save_contexts(data)
        except NovameshError as exc:
            fail(exc)
        out.print(f"context {name} {'updated' if existed else 'added'} ({path})" + (" — current" if data["current"] == name else ""), highlight=False)

    @ctx_app.command("use")
    def use_(name: str = typer.Argument(..., help="Context to make current.")) -> None:
        """Make NAME the current context."""
        try:
            data = load_contexts()
            if name not in data["contexts"]:
                known = ", ".join(sorted(data["contexts"])) or "none"
                raise NotFoundError(f"context {name!r} does not exist (known: {known}); add it with `novamesh context add {name} --control-plane URL`")
            data["current"] = name
            save_contexts(data)
        except NovameshError as exc:
            fail(exc)
        out.print(f"current context: {name}", highlight=False)

    @ctx_app.command("list")
    def list_() -> None:
        """List contexts; the current one is marked with *."""
        try:
            data = load_contexts()
        except NovameshError as exc:
            fail(exc)
        if not data["contexts"]:
            err.print("no contexts; add one with `novamesh context add NAME --control-plane URL`")
            return
        table = Table(box=None)
        for col in ("CURRENT", "NAME", "CONTROL PLANE", "TRUST DOMAIN"):
            table.add_column(col)
        for name, ctx in sorted(data["contexts"].items()):
            ctx = ctx if isinstance(ctx, dict) else {}
            table.add_row("*" if name == data["current"] else "", name, str(ctx.get("controlPlane", "")), str(ctx.get("trustDomain", "")))
        out.print(table)

    @ctx_app.command("current")
    def current() -> None:
        """Print the current context's name (exit 1 if there is none)."""
        try:
            data = load_contexts()
            if not data["current"]:
                raise NotFoundError("no current context; `novamesh context use NAME` (or `context add`)")
        except NovameshError as exc:
            fail(exc)
        out.print(str(data["current"]), highlight=False)

    @ctx_app.command("delete")
    def delete(name: str = typer.Argument(..., help="Context to delete.")) -> None:
        """Delete a context (if it was current, no context is current afterwards)."""
        try:
            data = load_contexts()
            if name not in data["contexts"]:
                raise NotFoundError(f"context {name!r} does not exist")
            del data["contexts"][name]
            if data["current"] == name:
                data["current"] = None
            save_contexts(data)
        except NovameshError as exc:
            fail(exc)
        out.print(f"context {name} deleted", highlight=False)
