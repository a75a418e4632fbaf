"""REST API of the control plane (FastAPI; OpenAPI at /openapi.json). Contract: docs/rest-api.md."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from .. import __version__
from ..controlplane.guard import guarded
from ..controlplane.mesh import Mesh, resolve_kind
from ..errors import ConfigError, ConflictError, NotFoundError, NovameshError, StoreError
from ..observe.controlplane_metrics import ControlPlaneMetrics
from .backup_routes import backup_router

__all__ = ["create_app"]


class Document(BaseModel):
    file: str = ""
    content: str


class ApplyRequest(BaseModel):
    documents: list[Document] = Field(min_length=1)
    namespace: str = "default"
    dry_run: bool = False
    author: str = ""
    message: str = ""


class RollbackRequest(BaseModel):
    to: int | None = None
    author: str = ""
    message: str = ""
    dry_run: bool = False


def _revision_dict(rev: Any) -> dict[str, Any]:
    return {
        "revision": rev.number,
        "time": rev.time,
        "author": rev.author,
        "message": rev.message,
        "changes": [{"kind": c.key[0], "namespace": c.key[1], "name": c.key[2], "action": c.op} for c in rev.changes],
    }


class PortIn(BaseModel):
    number: int = Field(ge=1, le=65535)
    protocol: str = "HTTP"
    name: str = ""
    app_port: int = 0


class WorkloadIn(BaseModel):
    id: str | None = None
    address: str | None = None
    kind: str = "sidecar"
    service: str
    namespace: str = "default"
    version: str = ""
    service_account: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    ports: list[PortIn] = Field(default_factory=list)
    ready: bool = False


class HeartbeatIn(BaseModel):
    ready: bool | None = None


def _error(status: int, exc: NovameshError) -> JSONResponse:
    body: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, ConfigError):
        body["violations"] = [v.to_dict() for v in exc.violations]
    return JSONResponse(body, status_code=status)


def create_app(mesh: Mesh) -> FastAPI:
    """The FastAPI application serving ``mesh``."""
    app = FastAPI(title="novamesh control plane", version=__version__, description="See docs/rest-api.md.")

    @app.exception_handler(ConfigError)
    async def _config_error(_: Request, exc: ConfigError) -> JSONResponse:
        return _error(422, exc)

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return _error(404, exc)

    @app.exception_handler(ConflictError)
    async def _conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return _error(409, exc)

    @app.exception_handler(StoreError)
    async def _store_error(_: Request, exc: StoreError) -> JSONResponse:
        return _error(503, exc)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        snap = mesh.cache.snapshot
        return {"status": "ok", "revision": mesh.revision, "snapshot_version": snap.version if snap else ""}

    @app.post("/api/v1/apply")
    async def apply(req: ApplyRequest) -> dict[str, Any]:
        docs = [d.model_dump() for d in req.documents]
        result = await guarded(mesh, lambda: mesh.apply(docs, namespace=req.namespace, dry_run=req.dry_run, author=req.author, message=req.message))
        return result.to_dict()

    @app.post("/api/v1/delete")
    async def delete_docs(req: ApplyRequest) -> dict[str, Any]:
        docs = [d.model_dump() for d in req.documents]
        return (await guarded(mesh, lambda: mesh.delete_documents(docs, namespace=req.namespace, author=req.author, message=req.message))).to_dict()

    @app.get("/api/v1/resources")
    async def list_resources(kind: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        return [r.manifest for r in mesh.list(kind, namespace)]

    @app.get("/api/v1/resources/{kind}/{namespace}/{name}")
    async def get_resource(kind: str, namespace: str, name: str) -> dict[str, Any]:
        return mesh.get(kind, namespace, name).manifest

    @app.delete("/api/v1/resources/{kind}/{namespace}/{name}")
    async def delete_resource(kind: str, namespace: str, name: str, author: str = "") -> dict[str, Any]:
        key = (resolve_kind(kind), namespace, name)
        if key not in mesh.resources:
            raise NotFoundError(f"{key[0]} {namespace}/{name} not found")
        return (await guarded(mesh, lambda: mesh.delete([key], author=author))).to_dict()

    @app.get("/api/v1/revisions")
    async def revisions(
        kind: str | None = None, namespace: str = "default", name: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        key = (resolve_kind(kind), namespace, name) if kind and name else None
        return [_revision_dict(r) for r in mesh.history(key, limit)]

    @app.get("/api/v1/diff")
    async def diff(rev_from: int, rev_to: int | None = None) -> dict[str, Any]:
        return {"from": rev_from, "to": mesh.revision if rev_to is None else rev_to, "diff": mesh.diff(rev_from, rev_to)}

    @app.post("/api/v1/rollback")
    async def rollback(req: RollbackRequest) -> dict[str, Any]:
        return (await guarded(mesh, lambda: mesh.rollback(req.to, author=req.author, message=req.message, dry_run=req.dry_run))).to_dict()

    @app.post("/api/v1/workloads")
    async def register(w: WorkloadIn) -> dict[str, Any]:
        workload = mesh.registry.register(w.model_dump())
        return {
            "id": workload.id,
            "address": workload.address,
            "lease_ttl": mesh.settings.lease_ttl,
            "heartbeat_interval": mesh.settings.heartbeat_interval,
        }

    @app.put("/api/v1/workloads/{wid}/heartbeat")
    async def heartbeat(wid: str, hb: HeartbeatIn) -> dict[str, Any]:
        mesh.registry.heartbeat(wid, hb.ready)
        return {"lease_ttl": mesh.settings.lease_ttl}

    @app.delete("/api/v1/workloads/{wid}", status_code=204)
    async def deregister(wid: str) -> Response:
        mesh.registry.deregister(wid)
        return Response(status_code=204)

    @app.get("/api/v1/workloads")
    async def workloads() -> list[dict[str, Any]]:
        out = []
        for w in mesh.registry.workloads():
            d = w.to_dict()
            d["expires_in"] = round(mesh.registry.expires_in(w.id), 1)
            out.append(d)
        return out

    @app.get("/api/v1/proxies")
    async def proxies() -> list[dict[str, Any]]:
        return mesh.xds.status()

    @app.get("/api/v1/proxies/{pid}/config")
    async def proxy_config(pid: str) -> dict[str, Any]:
        for conn in mesh.xds.connections():
            if conn.proxy.id == pid:
                from ..translate import SHORT_NAMES

                raw = mesh.cache.raw_for(conn.proxy)
                return {SHORT_NAMES[t]: v for t, v in raw.items()}
        raise NotFoundError(f"no connected proxy with id {pid}")

    @app.get("/api/v1/mesh-config")
    async def mesh_config() -> dict[str, Any]:
        from ..translate.mesh_defaults import effective_mesh_config

        return effective_mesh_config(mesh.snapshot(), mesh.settings.connect_timeout)

    from ..security.api_routes import security_router

    app.include_router(security_router(mesh))  # tokens, CA status, trust bundle, root rotation
    metrics = ControlPlaneMetrics(mesh.xds, lambda: mesh.revision)
    mesh.xds.hooks = metrics.hooks  # push time, NACKs, convergence (docs/observability.md)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.include_router(backup_router(mesh))  # GET/POST /api/v1/backup, POST /api/v1/restore
    return app
