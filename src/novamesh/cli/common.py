"""What every CLI module shares: consoles, the --control-plane option, error printing."""

from __future__ import annotations

import getpass
import sys
from typing import NoReturn

import typer
from rich.console import Console

from ..errors import ConfigError, NovameshError
from ..settings import Settings
from .client import ApiClient

__all__ = ["out", "err", "ControlPlaneOpt", "CP_HELP", "client_for", "fail", "user_name"]

# Piped output (scripts, CI logs) gets a wide console so tables are not truncated.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200)

CP_HELP = "Control-plane REST URL (env NOVAMESH_CONTROL_PLANE_URL; default http://127.0.0.1:15014)."
ControlPlaneOpt = typer.Option(None, "--control-plane", "-c", help=CP_HELP, envvar="NOVAMESH_CONTROL_PLANE_URL")


def client_for(url: str | None) -> ApiClient:
    """A REST client for ``url``, else the current context's control plane (see
    ``novamesh context``), else the configured one."""
    from .context_cmds import context_url

    return ApiClient(url or context_url() or Settings.from_env().control_plane_url)


def fail(exc: NovameshError) -> NoReturn:
    """Print ``exc`` the way users need it (every violation with where and how to fix) and exit 1."""
    if isinstance(exc, ConfigError):
        err.print(f"[red]error:[/red] {exc.summary}: {len(exc.violations)} problem(s); nothing was changed", highlight=False)
        for v in exc.violations:
            err.print(f"  [bold]{v.location() or '-'}[/bold]", highlight=False)
            err.print(f"    {v.message}", highlight=False, markup=False)
            if v.hint:
                err.print(f"    fix: {v.hint}", highlight=False, markup=False)
    else:
        err.print("[red]error:[/red] ", end="")
        err.print(str(exc), highlight=False, markup=False)
    raise typer.Exit(1)


def user_name() -> str:
    """Who runs the CLI, recorded as the author of revisions."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some sandboxes
        return "unknown"
