"""Synchronous REST client the CLI uses; turns API errors back into our exception tree."""

from __future__ import annotations

from typing import Any

import httpx

from ..errors import ConfigError, ControlPlaneUnavailable, NotFoundError, NovameshError, StoreError, Violation

__all__ = ["ApiClient"]


class ApiClient:
    """Thin wrapper over the control plane's REST API (docs/rest-api.md)."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        # Several replicas ("http://a:15014,http://b:15014"): a request that cannot connect to one
        # tries the next.
        self.base_urls = [u.strip().rstrip("/") for u in base_url.split(",") if u.strip()] or [base_url.rstrip("/")]
        self.base_url = self.base_urls[0]
        self._http = httpx.Client(timeout=timeout, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._request_any(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ControlPlaneUnavailable(
                f"cannot reach the control plane at {','.join(self.base_urls)} ({exc.__class__.__name__}: {exc}). "
                "Is `novamesh control-plane` running? Pass --control-plane URL or set NOVAMESH_CONTROL_PLANE_URL."
            ) from exc
        if resp.status_code == 204:
            return None
        try:
            body = resp.json()
        except ValueError:
            body = {"message": resp.text}
        if resp.is_success:
            return body
        message = body.get("message", resp.text) if isinstance(body, dict) else resp.text
        if resp.status_code == 422 and isinstance(body, dict) and "violations" in body:
            violations = [Violation.from_dict(v) for v in body["violations"]]
            summary = message.split(":", 1)[0] if message else "configuration rejected"
            raise ConfigError(violations, summary=summary)
        if resp.status_code == 422:
            raise NovameshError(f"the control plane rejected the request: {message}")
        if resp.status_code == 404:
            raise NotFoundError(message)
        if resp.status_code == 503:
            raise StoreError(message)
        raise NovameshError(f"control plane answered {resp.status_code}: {message}")

    def _request_any(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for base in self.base_urls[:-1]:
            try:
                return self._http.request(method, f"{base}{path}", **kwargs)
            except httpx.ConnectError:
                continue
        return self._http.request(method, f"{self.base_urls[-1]}{path}", **kwargs)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body)
