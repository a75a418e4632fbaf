"""Prometheus scrape configuration for a mesh: the control plane and every workload.

Target labels follow Kubernetes' service-discovery names Istio's dashboards know (``namespace``,
``pod``, ``app``, ``version``); they never collide with the ``istio_*`` metric labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from ..errors import NovameshError

__all__ = ["control_plane_target", "workload_target_groups", "scrape_config", "FORMATS"]

FORMATS = ("static", "file_sd")
"""``static``: a whole prometheus.yml; ``file_sd``: the workload target groups as JSON."""


def control_plane_target(url: str) -> str:
    """``host:port`` of the control plane's ``/metrics`` from its REST URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NovameshError(f"control-plane URL {url!r} is not http(s)://HOST:PORT (e.g. http://127.0.0.1:15014)")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


def workload_target_groups(workloads: Iterable[Mapping[str, Any]], metrics_port: int) -> list[dict[str, Any]]:
    """One file_sd target group per registered workload (``<address>:<metrics_port>``)."""
    groups = []
    for w in sorted(workloads, key=lambda w: (str(w.get("namespace")), str(w.get("service")), str(w.get("id")))):
        if not w.get("address"):
            continue
        labels = dict(w.get("labels") or {})
        groups.append(
            {
                "targets": [f"{w['address']}:{metrics_port}"],
                "labels": {
                    "namespace": str(w.get("namespace") or "default"),
                    "pod": str(w.get("id")),
                    "app": str(labels.get("app") or w.get("service") or ""),
                    "version": str(labels.get("version") or w.get("version") or ""),
                    "kind": str(w.get("kind") or "sidecar"),
                },
            }
        )
    return groups


def scrape_config(
    control_plane_urls: Sequence[str],
    workloads: Iterable[Mapping[str, Any]],
    *,
    metrics_port: int = 15020,
    interval: str = "15s",
) -> dict[str, Any]:
    """A complete ``prometheus.yml`` (as a dict): one job for the control plane (every replica
    in ``control_plane_urls``), one for the workloads' merged metrics (``/stats/prometheus``)."""
    if not control_plane_urls:
        raise NovameshError("no control-plane URL given")
    cp = urlsplit(control_plane_urls[0])
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "novamesh-control-plane",
                "metrics_path": "/metrics",
                "scheme": cp.scheme or "http",
                "static_configs": [{"targets": [control_plane_target(u) for u in control_plane_urls], "labels": {"app": "istiod"}}],
            },
            {
                "job_name": "novamesh-workloads",
                "metrics_path": "/stats/prometheus",
                "static_configs": workload_target_groups(workloads, metrics_port),
            },
        ],
    }
