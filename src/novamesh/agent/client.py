"""The agent's side of the control plane's workload API (docs/rest-api.md, "Workloads").

Errors::

    ControlPlaneUnavailable   no connection, timeout, or a 5xx answer (worth retrying)
    ConfigError               422: the control plane rejected the registration (its violations)
    ConflictError             409: e.g. the requested address belongs to another workload
    NovameshError             any other unexpected answer
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from ..errors import ConfigError, ConflictError, ControlPlaneUnavailable, NovameshError, Violation
from ..model.proxy import ProxyPort

__all__ = ["WorkloadSpec", "Lease", "ControlPlaneClient"]

_HINT = "is `novamesh control-plane` running? (set --control-plane or NOVAMESH_CONTROL_PLANE_URL)"


@dataclass(frozen=True)
class WorkloadSpec:
    """What an agent registers about its workload (everything but id, address and readiness)."""

    service: str
    namespace: str = "default"
    version: str = "v1"
    service_account: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    ports: tuple[ProxyPort, ...] = ()
    kind: str = "sidecar"

    def to_json(self) -> dict[str, Any]:
        """The registration body without ``id``, ``address`` and ``ready``."""
        return {
            "kind": self.kind,
            "service": self.service,
            "namespace": self.namespace,
            "version": self.version,
            "service_account": self.service_account,
            "labels": dict(self.labels),
            "ports": [p.to_dict() for p in self.ports],
        }


@dataclass(frozen=True)
class Lease:
    """The control plane's answer to a registration."""

    id: str
    address: str
    lease_ttl: float
    heartbeat_interval: float


class ControlPlaneClient:
    """Async client of the workload endpoints. Use as ``async with`` or call :meth:`aclose`.

    ``transport`` lets tests plug in :class:`httpx.MockTransport`.
    """

    def __init__(
        self, base_url: str, *, timeout: float = 5.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        # Several replicas: "http://a:15014,http://b:15014". A request that cannot connect to
        # one tries the next; the one that answered stays first.
        self.base_urls = [u.strip().rstrip("/") for u in base_url.split(",") if u.strip()] or [base_url.rstrip("/")]
        # trust_env=False: an agent started inside a mesh app inherits HTTP_PROXY pointing at
        # that app's sidecar; the control plane must be reached directly.
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, trust_env=False)

    @property
    def base_url(self) -> str:
        """The replica currently in use."""
        return self.base_urls[0]

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> ControlPlaneClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        failures: list[str] = []
        for i, base in enumerate(list(self.base_urls)):
            url = f"{base}{path}"
            try:
                response = await self._http.request(method, url, json=body)
            except httpx.TransportError as exc:
                failures.append(f"{url}: {exc!r}")
                continue
            if i:  # fail over: remember the replica that answered
                self.base_urls.remove(base)
                self.base_urls.insert(0, base)
            break
        else:
            raise ControlPlaneUnavailable(f"cannot reach the control plane at {'; '.join(failures)}; {_HINT}")
        url = f"{self.base_url}{path}"
        if response.status_code >= 500:
            raise ControlPlaneUnavailable(
                f"the control plane at {url} answered {response.status_code}: {_message(response)}"
            )
        return response

    async def register(
        self, spec: WorkloadSpec, *, id: str | None = None, address: str | None = None, ready: bool = False
    ) -> Lease:
        """``POST /api/v1/workloads``. Without ``id`` a new workload is made; with it the same id
        (and ``address``) is kept — used after the control plane lost our lease."""
        body = spec.to_json()
        body["ready"] = ready
        if id is not None:
            body["id"] = id
        if address is not None:
            body["address"] = address
        response = await self._request("POST", "/api/v1/workloads", body)
        _raise_for(response, f"registering workload {spec.service}.{spec.namespace}")
        data = response.json()
        return Lease(
            id=str(data["id"]),
            address=str(data["address"]),
            lease_ttl=float(data["lease_ttl"]),
            heartbeat_interval=float(data["heartbeat_interval"]),
        )

    async def heartbeat(self, id: str, ready: bool) -> bool:
        """``PUT /api/v1/workloads/{id}/heartbeat``. False if the lease is gone (404): the caller
        then registers again with the same id and address."""
        response = await self._request("PUT", f"/api/v1/workloads/{id}/heartbeat", {"ready": ready})
        if response.status_code == 404:
            return False
        _raise_for(response, f"heartbeat of workload {id}")
        return True

    async def deregister(self, id: str) -> None:
        """``DELETE /api/v1/workloads/{id}``; a workload that is already gone is fine."""
        response = await self._request("DELETE", f"/api/v1/workloads/{id}")
        if response.status_code != 404:
            _raise_for(response, f"deregistering workload {id}")


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("detail") or data)
    return str(data)


def _raise_for(response: httpx.Response, what: str) -> None:
    if response.is_success:
        return
    message = f"{what}: control plane answered {response.status_code}: {_message(response)}"
    if response.status_code == 409:
        raise ConflictError(message)
    if response.status_code == 422:
        try:
            raw = response.json().get("violations") or []
            violations = [Violation.from_dict(v) for v in raw if isinstance(v, dict)]
        except (ValueError, AttributeError):
            violations = []
        raise ConfigError(violations or [Violation(message=_message(response))], summary=what)
    raise NovameshError(message)
