"""`novamesh token create` and `novamesh ca status / rotate-root`: workload identity admin."""

from __future__ import annotations

import datetime as dt
from typing import Optional

import typer
from rich.table import Table

from ..errors import NovameshError
from .common import ControlPlaneOpt, client_for, err, fail, out

__all__ = ["register", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``2d`` → seconds; NovameshError otherwise."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], 0)
    number = value[:-1] if unit else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise NovameshError(f"--ttl {text!r} is not a duration; use e.g. 90s, 15m, 1h or 2d") from None
    if seconds <= 0:
        raise NovameshError(f"--ttl {text!r} must be positive")
    return seconds


def register(app: typer.Typer) -> None:
    """Add the ``token`` and ``ca`` command groups to ``app``."""
    token_app = typer.Typer(help="Join tokens: how a workload proves its identity for its first certificate.", no_args_is_help=True)
    ca_app = typer.Typer(help="The mesh CA: status and root rotation.", no_args_is_help=True)
    app.add_typer(token_app, name="token")
    app.add_typer(ca_app, name="ca")

    @token_app.command("create")
    def token_create(
        # Required, no default: a token grants an identity, so the caller names it explicitly.
        namespace: str = typer.Option(..., "--namespace", "-n", help="Namespace of the identity."),
        service_account: str = typer.Option(..., "--service-account", help="Service account of the identity."),
        ttl: Optional[str] = typer.Option(
            None, "--ttl", help="How long the token stays usable (90s, 15m, 1h, 2d). Default: the control plane's token_ttl setting.",
            show_default=False,
        ),
        uses: int = typer.Option(1, "--uses", help="How many workloads may join with it."),
        control_plane: Optional[str] = ControlPlaneOpt,
    ) -> None:
        """Mint a join token for spiffe://<trust-domain>/ns/NS/sa/SA (run on the control plane's
        host). Prints only the token on stdout, so `novamesh token create ... > token` works."""
        try:
            body: dict[str, object] = {"namespace": namespace, "service_account": service_account, "uses": uses}
            if ttl is not None:  # else the control plane applies its own token_ttl setting
                body["ttl"] = parse_duration(ttl)
            resp = client_for(control_plane).post("/api/v1/tokens", body)
        except NovameshError as exc:
            fail(exc)
        expires = dt.datetime.fromtimestamp(resp["expires_at"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        err.print(f"token for {resp['identity']}, {resp['uses']} use(s), expires {expires}", highlight=False)
        out.print(resp["token"], highlight=False, markup=False)

    @ca_app.command("status")
    def ca_status(control_plane: Optional[str] = ControlPlaneOpt) -> None:
        """The CA's mode, its roots (the trust bundle) and the rotation phase."""
        try:
            status = client_for(control_plane).get("/api/v1/ca")
        except NovameshError as exc:
            fail(exc)
        _print_status(status)

    @ca_app.command("rotate-root")
    def rotate_root(
        start: bool = typer.Option(False, "--start", help="Step 1: add a new root to the trust bundle (the old one still signs)."),
        activate: bool = typer.Option(False, "--activate", help="Step 2: the new root signs (wait one certificate lifetime after --start)."),
        finish: bool = typer.Option(False, "--finish", help="Step 3: drop the old root (wait one certificate lifetime after --activate)."),
        control_plane: Optional[str] = ControlPlaneOpt,
    ) -> None:
        """Rotate the self-signed root without downtime, one step per call."""
        steps = [name for name, on in (("start", start), ("activate", activate), ("finish", finish)) if on]
        try:
            if len(steps) != 1:
                raise NovameshError("give exactly one of --start, --activate, --finish")
            status = client_for(control_plane).post("/api/v1/ca/rotate-root", {"step": steps[0]})
        except NovameshError as exc:
            fail(exc)
        _print_status(status)


def _print_status(status: dict[str, object]) -> None:
    out.print(f"mode: {status.get('mode')}   phase: {status.get('phase')}", highlight=False)
    table = Table(box=None)
    for col in ("ROOT", "FINGERPRINT (SHA-256)", "NOT AFTER", "SIGNING"):
        table.add_column(col)
    roots = status.get("roots")
    for r in roots if isinstance(roots, list) else []:
        table.add_row(r["subject"], r["fingerprint"][:23] + "…", r["not_after"][:19], "yes" if r.get("signing") else "")
    out.print(table)
