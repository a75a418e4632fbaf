"""Proxy: what the control plane knows about one connected Envoy.

A proxy describes itself completely in its Envoy node metadata (written by the agent into the
bootstrap), so the control plane can program it even before — or without — a registry entry.
The metadata is a flat JSON-compatible dict under the key ``NOVAMESH`` of ``node.metadata``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ProxyPort", "Proxy", "METADATA_KEY"]

METADATA_KEY = "NOVAMESH"


@dataclass(frozen=True)
class ProxyPort:
    """A service port the workload serves: the sidecar listens on ``address:number`` and
    forwards to the app on ``app_host:app_port``."""

    number: int
    protocol: str = "HTTP"
    name: str = ""
    app_port: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "protocol": self.protocol, "name": self.name, "app_port": self.app_port}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProxyPort:
        return cls(
            number=int(d["number"]),
            protocol=str(d.get("protocol") or "HTTP").upper(),
            name=str(d.get("name") or ""),
            app_port=int(d.get("app_port") or 0),
        )


@dataclass(frozen=True)
class Proxy:
    """One Envoy (sidecar or gateway) as seen by the control plane."""

    id: str
    kind: str = "sidecar"
    service: str = ""
    namespace: str = "default"
    version: str = ""
    service_account: str = "default"
    address: str = "127.0.0.1"
    app_host: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    ports: tuple[ProxyPort, ...] = ()
    admin_port: int = 15000
    outbound_port: int = 15001
    telemetry_port: int = 0
    """Port of the agent's access-log (metrics) server on ``address``; 0: no workload metrics."""
    access_log_path: str = ""
    """File the sidecar writes access logs to when a Telemetry turns them on (local mode:
    ``<data_dir>/workloads/<dir>/access.log``); empty means Envoy's stdout."""

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def to_metadata(self) -> dict[str, Any]:
        """The dict the agent puts under ``node.metadata[METADATA_KEY]``."""
        return {
            "id": self.id,
            "kind": self.kind,
            "service": self.service,
            "namespace": self.namespace,
            "version": self.version,
            "service_account": self.service_account,
            "address": self.address,
            "app_host": self.app_host or self.address,
            "labels": dict(self.labels),
            "ports": [p.to_dict() for p in self.ports],
            "admin_port": self.admin_port,
            "outbound_port": self.outbound_port,
            **({"telemetry_port": self.telemetry_port} if self.telemetry_port else {}),
            **({"access_log_path": self.access_log_path} if self.access_log_path else {}),
        }

    @classmethod
    def from_metadata(cls, md: dict[str, Any]) -> Proxy:
        """Inverse of :meth:`to_metadata`; tolerant of missing optional keys."""
        labels = md.get("labels") or {}
        return cls(
            id=str(md["id"]),
            kind=str(md.get("kind") or "sidecar"),
            service=str(md.get("service") or ""),
            namespace=str(md.get("namespace") or "default"),
            version=str(md.get("version") or ""),
            service_account=str(md.get("service_account") or "default"),
            address=str(md.get("address") or "127.0.0.1"),
            app_host=str(md.get("app_host") or md.get("address") or "127.0.0.1"),
            labels=tuple(sorted((str(k), str(v)) for k, v in dict(labels).items())),
            ports=tuple(ProxyPort.from_dict(p) for p in md.get("ports") or []),
            admin_port=int(md.get("admin_port") or 15000),
            outbound_port=int(md.get("outbound_port") or 15001),
            telemetry_port=int(md.get("telemetry_port") or 0),
            access_log_path=str(md.get("access_log_path") or ""),
        )

    def node_id(self, domain_suffix: str = "cluster.local") -> str:
        """Istio-style node id: ``sidecar~<ip>~<id>~<ns>.svc.<suffix>``."""
        return f"{self.kind}~{self.address}~{self.id}~{self.namespace}.svc.{domain_suffix}"

