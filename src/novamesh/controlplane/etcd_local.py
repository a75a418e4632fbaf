"""A local etcd cluster on loopback: the plan (names, ports, data directories) and the command
line of each member, plus a health check. Used by ``novamesh up`` for HA stacks
(:mod:`novamesh.stack_ha`) and by the test helpers (:mod:`novamesh.testing.ha`); starting and
stopping the processes is the caller's business (each supervises its processes its own way).

Errors: :func:`etcd_binary_or_fail` raises :class:`~novamesh.errors.NovameshError` naming the
package to install when there is no ``etcd`` binary.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..errors import NovameshError

__all__ = ["EtcdMemberPlan", "etcd_binary", "etcd_binary_or_fail", "member_argv", "member_healthy", "store_url"]


def etcd_binary() -> str | None:
    """Path of the ``etcd`` binary (Debian's etcd-server), or None."""
    return shutil.which("etcd")


def etcd_binary_or_fail() -> str:
    """Path of the ``etcd`` binary; NovameshError with the fix when it is missing."""
    binary = etcd_binary()
    if binary is None:
        raise NovameshError("etcd is not installed, and an HA control plane needs it: apt-get install etcd-server "
                            "(or run one replica on SQLite: controlPlane.replicas 1)")  # fmt: skip
    return binary


@dataclass(frozen=True)
class EtcdMemberPlan:
    """One member of a loopback cluster."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path

    @property
    def client_url(self) -> str:
        """``http://127.0.0.1:<client port>``."""
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """``http://127.0.0.1:<peer port>``."""
        return f"http://127.0.0.1:{self.peer_port}"


def member_argv(binary: str, member: EtcdMemberPlan, members: list[EtcdMemberPlan], token: str) -> list[str]:
    """The command line of ``member`` in a new cluster of ``members`` (token: the cluster's)."""
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    return [
        binary, "--name", member.name, "--data-dir", str(member.data_dir),
        "--listen-client-urls", member.client_url, "--advertise-client-urls", member.client_url,
        "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
        "--initial-cluster", initial, "--initial-cluster-token", token,
        "--initial-cluster-state", "new", "--log-level", "warn",
        "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "5m",
    ]  # fmt: skip


def store_url(members: list[EtcdMemberPlan]) -> str:
    """The control plane's ``--store`` URL: ``etcd://127.0.0.1:p1,127.0.0.1:p2,...``."""
    return "etcd://" + ",".join(f"127.0.0.1:{m.client_port}" for m in members)


def member_healthy(member: EtcdMemberPlan, timeout: float = 1.0) -> bool:
    """Whether ``member`` answers /health with a quorum behind it (False when unreachable)."""
    try:
        r = httpx.get(f"{member.client_url}/health", timeout=timeout, trust_env=False)
        return r.status_code == 200 and r.json().get("health") == "true"
    except (httpx.HTTPError, ValueError):
        return False
