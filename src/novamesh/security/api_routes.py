"""REST endpoints of the CA: join tokens, the trust bundle, CA status and root rotation.

``POST /api/v1/tokens`` mints a join token; it answers only callers on loopback (the control
plane's own host), because the REST API has no authentication of its own yet. Contract:
docs/rest-api.md ("Security").
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..controlplane.mesh import Mesh
from ..errors import ConflictError, NovameshError
from .ca import PluggedCA, StoreCA, rotate_root
from .pki import cert_pem
from .service import ca_for, secrets_supported, tokens_for

__all__ = ["security_router"]


class TokenRequest(BaseModel):
    """Body of ``POST /api/v1/tokens``."""

    namespace: str = "default"
    service_account: str = "default"
    ttl: float | None = Field(default=None, gt=0)
    uses: int = Field(default=1, ge=1)


class RotateRequest(BaseModel):
    """Body of ``POST /api/v1/ca/rotate-root``: ``step`` is start, activate or finish."""

    step: Literal["start", "activate", "finish"]


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def security_router(mesh: Mesh) -> APIRouter:
    """The security endpoints of ``mesh`` (errors go through the app's exception handlers)."""
    router = APIRouter()

    def check() -> None:
        if mesh.settings.csr_port < 0 or not secrets_supported(mesh.store):
            raise ConflictError("the CA is off on this control plane (csr_port is -1 or the store keeps no secrets)")

    def forbidden(what: str) -> JSONResponse:
        msg = f"{what} only for callers on the control plane's host (run the CLI there)"
        return JSONResponse({"error": "SecurityError", "message": msg}, status_code=403)

    @router.post("/api/v1/tokens", response_model=None)
    async def create_token(req: TokenRequest, request: Request) -> dict[str, Any] | JSONResponse:
        check()
        if not _loopback(request):
            return forbidden("join tokens are minted")
        ttl = req.ttl if req.ttl is not None else mesh.settings.token_ttl
        try:
            token = tokens_for(mesh.settings, mesh.store, mesh.clock).create(req.namespace, req.service_account, ttl, req.uses)
        except NovameshError as exc:
            return JSONResponse({"error": "NovameshError", "message": str(exc)}, status_code=422)
        return {"token": token.value, "identity": token.identity.uri, "expires_at": token.expires_at, "uses": token.uses}

    @router.get("/api/v1/ca")
    async def ca_status() -> dict[str, Any]:
        check()
        return ca_for(mesh.settings, mesh.store, mesh.clock).status()

    bundle_ca: list[StoreCA | PluggedCA] = []  # one per API: every agent polls the bundle

    def polled_ca() -> StoreCA | PluggedCA:
        """The CA behind ``/ca/bundle``, built once: a StoreCA re-reads the store at most once a
        second, a plugged-in CA re-checks its files' times, instead of a store read and a
        certificate parse per request (agents ask every ``trust_bundle_check_interval``)."""
        if not bundle_ca:
            bundle_ca.append(ca_for(mesh.settings, mesh.store, mesh.clock))
        ca = bundle_ca[0]
        if isinstance(ca, PluggedCA):
            ca.maybe_reload()
        return ca

    @router.get("/api/v1/ca/bundle")
    async def ca_bundle() -> dict[str, Any]:
        check()
        ca = polled_ca()
        return {"trust_domain": mesh.settings.trust_domain, "roots": [cert_pem(r).decode() for r in ca.trust_bundle()],
                "signer": ca.signer_subject()}  # fmt: skip

    @router.post("/api/v1/ca/rotate-root", response_model=None)
    async def rotate(req: RotateRequest, request: Request) -> dict[str, Any] | JSONResponse:
        check()
        if not _loopback(request):
            return forbidden("the root is rotated")
        ca = ca_for(mesh.settings, mesh.store, mesh.clock)
        if not isinstance(ca, StoreCA):
            raise ConflictError("a plugged-in CA's root is rotated by replacing its files (root-cert.pem may hold both roots)")
        try:
            return rotate_root(ca, req.step)  # published at once by this replica (StoreCA.state_written)
        except NovameshError as exc:
            raise ConflictError(str(exc)) from exc

    return router
