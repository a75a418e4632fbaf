"""REST endpoints for backups: ``GET``/``POST /api/v1/backup`` and ``POST /api/v1/restore``.

The server verifies every backup it restores (format, checksum, passphrase seal), whatever the
client did before, so the API cannot be used to restore a corrupted or tampered backup.
Contract: docs/rest-api.md; format: docs/backup.md.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from ..controlplane.backup import backup_mesh, restore_mesh
from ..controlplane.backup_ca import StoreCaMaterial, ca_for_backup
from ..controlplane.mesh import Mesh

__all__ = ["backup_router"]


class BackupRequest(BaseModel):
    """Body of ``POST /api/v1/backup``: a passphrase seals the backup and encrypts CA material."""

    passphrase: str | None = None
    include_ca: bool = True


class RestoreRequest(BaseModel):
    """Body of ``POST /api/v1/restore``. ``backup`` is the document as written by ``backup``;
    ``file`` names it in error messages."""

    backup: Any
    passphrase: str | None = None
    dry_run: bool = False
    author: str = ""
    message: str = ""
    file: str = "<backup>"
    replace_ca: bool = False
    restore_ca: bool = True


def backup_router(mesh: Mesh) -> APIRouter:
    """The backup endpoints of ``mesh`` (errors go through the app's exception handlers)."""
    router = APIRouter()

    def source(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    @router.get("/api/v1/backup")
    async def get_backup(request: Request, include_ca: bool = True) -> dict[str, Any]:
        ca = ca_for_backup(mesh.store, include=include_ca, passphrase=None)
        return await backup_mesh(mesh, source=source(request), ca=ca)

    @router.post("/api/v1/backup")
    async def post_backup(request: Request, req: BackupRequest) -> dict[str, Any]:
        ca = ca_for_backup(mesh.store, include=req.include_ca, passphrase=req.passphrase)
        return await backup_mesh(mesh, source=source(request), passphrase=req.passphrase or None, ca=ca)

    @router.post("/api/v1/restore")
    async def restore(req: RestoreRequest) -> dict[str, Any]:
        return await restore_mesh(
            mesh, req.backup, passphrase=req.passphrase or None, dry_run=req.dry_run,
            author=req.author, message=req.message, file=req.file,
            ca=StoreCaMaterial(mesh.store, replace=req.replace_ca) if req.restore_ca else None,
        )

    return router
