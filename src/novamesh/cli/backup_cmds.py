"""`novamesh backup` and `novamesh restore`: the control plane's config in one verified file."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..controlplane.backup import (
    PASSPHRASE_ENV,
    dump_backup,
    read_backup_file,
    read_passphrase,
    verify_backup,
    write_backup_file,
)
from ..controlplane.backup_schedule import backup_file_name
from ..errors import NovameshError
from .common import ControlPlaneOpt, client_for, err, fail, out, user_name
from .history_cmds import print_diff

__all__ = ["register"]

PASSPHRASE_HELP = f"File whose first line is the passphrase (else ${PASSPHRASE_ENV})."


def _default_name(meta: dict[str, Any]) -> str:
    created = dt.datetime.strptime(str(meta["created"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    return backup_file_name(int(meta["revision"]), created.timestamp())


def _describe(meta: dict[str, Any]) -> str:
    return (f"revision {meta['revision']} of {meta['source']}, created {meta['created']}, "
            f"{meta['resource_count']} resource(s), trust domain {meta['trust_domain']}")


def register(app: typer.Typer) -> None:
    """Add `backup` and `restore` to ``app``."""

    @app.command("backup")
    def backup(
        output: Optional[str] = typer.Option(None, "--output", "-o", help="File to write ('-' for stdout); default novamesh-backup-r<REV>-<UTC time>.json here."),
        passphrase_file: Optional[Path] = typer.Option(None, "--passphrase-file", help=PASSPHRASE_HELP + " Seals the backup (HMAC) and encrypts CA material."),
        force: bool = typer.Option(False, "--force", help="Overwrite FILE if it exists."),
        no_ca: bool = typer.Option(False, "--no-ca", help="Leave the CA's root key and certificates out (they need a passphrase)."),
        control_plane: Optional[str] = ControlPlaneOpt,
    ) -> None:
        """Write every resource at the current revision, metadata and a checksum to one file."""
        try:
            passphrase = read_passphrase(passphrase_file)
            client = client_for(control_plane)
            doc = (client.post("/api/v1/backup", {"passphrase": passphrase, "include_ca": not no_ca}) if passphrase
                   else client.get("/api/v1/backup" + ("?include_ca=false" if no_ca else "")))
            verified = verify_backup(doc, passphrase=passphrase, file="<control plane answer>")  # nothing broke in transit
            if output == "-":
                sys.stdout.write(dump_backup(doc))
                return
            path = Path(output or _default_name(verified.metadata))
            if path.exists() and not force:
                raise NovameshError(f"{path} already exists; pass --force to overwrite it or -o another file")
            try:
                write_backup_file(path, doc)
            except OSError as exc:
                raise NovameshError(f"cannot write the backup to {path}: {exc}") from exc
        except NovameshError as exc:
            fail(exc)
        out.print(f"backup of {_describe(verified.metadata)} written to {path}", highlight=False)
        out.print(f"sha256 {verified.checksum}", style="dim", highlight=False)
        if verified.ca_material is not None:
            out.print("includes the CA (root keys and certificates), encrypted with the passphrase", highlight=False)
        if not passphrase:
            err.print(f"note: not sealed with a passphrase, so the checksum catches corruption but not deliberate edits; "
                      f"pass --passphrase-file or set {PASSPHRASE_ENV} to seal it", style="dim", highlight=False)

    @app.command("restore")
    def restore(
        file: Path = typer.Argument(..., help="A file written by `novamesh backup`."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Verify and show what would change; change nothing."),
        verify_only: bool = typer.Option(False, "--verify-only", help="Only check format, checksum and passphrase seal, offline (no control plane)."),
        passphrase_file: Optional[Path] = typer.Option(None, "--passphrase-file", help=PASSPHRASE_HELP + " Needed for sealed backups."),
        author: str = typer.Option("", "--author", help="Recorded in the history (default: your user name)."),
        message: str = typer.Option("", "--message", "-m", help="Recorded in the history (default: which backup was restored)."),
        replace_ca: bool = typer.Option(False, "--replace-ca", help="Replace a different root CA this control plane has "
                                        "(workloads holding its certificates stop being trusted until they renew)."),
        no_ca: bool = typer.Option(False, "--no-ca", help="Restore only the config, not the backup's CA material."),
        control_plane: Optional[str] = ControlPlaneOpt,
    ) -> None:
        """Make the config equal to a backup, as ONE revision, after verifying it; report what changed."""
        try:
            passphrase = read_passphrase(passphrase_file)
            doc = read_backup_file(file)
            verified = verify_backup(doc, passphrase=passphrase, file=str(file))  # the server checks again
            if verify_only:
                seal = "passphrase seal OK" if verified.sealed else "not sealed (checksum only)"
                out.print(f"{file}: backup of {_describe(verified.metadata)}; checksum OK, {seal}", highlight=False)
                return
            result = client_for(control_plane).post("/api/v1/restore", {
                "backup": doc, "passphrase": passphrase, "dry_run": dry_run,
                "author": author or user_name(), "message": message, "file": str(file),
                "replace_ca": replace_ca, "restore_ca": not no_ca,
            })
        except NovameshError as exc:
            fail(exc)
        _report(result, str(file))


def _report(result: dict[str, Any], file: str) -> None:
    seal = ", passphrase seal OK" if result.get("sealed") else ""
    err.print(f"{file}: backup of {_describe(result['backup'])}; checksum OK{seal}", highlight=False)
    for warning in result.get("warnings", []):
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    print_diff(result.get("diff", ""))
    if result.get("ca") and result["ca"] != "not in the backup":
        err.print(f"CA: {result['ca']}", highlight=False)
    suffix = " (dry run)" if result.get("dry_run") else ""
    for ch in result["changes"]:
        out.print(f"{ch['kind'].lower()}/{ch['name']} ({ch['namespace']}) {ch['action']}{suffix}", highlight=False)
    if all(ch["action"] == "unchanged" for ch in result["changes"]):
        out.print("the config already equals the backup; nothing changed")
    elif result.get("dry_run"):
        out.print("dry run: nothing was changed", style="dim")
    else:
        out.print(f"revision {result['revision']}", style="dim", highlight=False)
