"""Test helpers for the highly available control plane: a real etcd cluster and a LocalMesh
with several control-plane replicas sharing it. Everything binds to 127.0.0.1 on free ports.

::

    with EtcdCluster(tmp / "etcd", members=3) as etcd, HaMesh(tmp / "mesh", etcd, replicas=3) as mesh:
        mesh.start_replicas()
        mesh.echo("reviews")
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..cli.client import ApiClient
from ..controlplane import etcd_local
from .mesh import LocalMesh, free_port, poll

__all__ = ["etcd_binary", "EtcdMember", "EtcdCluster", "Replica", "HaMesh"]


def etcd_binary() -> str | None:
    """Path of the ``etcd`` binary (Debian's etcd-server), or None."""
    return etcd_local.etcd_binary()


@dataclass
class EtcdMember:
    """One etcd member process."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    """``members`` etcd processes forming one cluster under ``root`` (stopped on close)."""

    def __init__(self, root: Path, members: int = 1) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("etcd is not installed (apt-get install etcd-server)")
        self.binary = binary
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = f"novamesh-{uuid.uuid4().hex[:8]}"
        self.members = [
            EtcdMember(f"m{i}", free_port(), free_port(), self.root / f"m{i}", self.root / f"m{i}.log")
            for i in range(members)
        ]
        self._initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def url(self) -> str:
        """The store URL for ``--store``: ``etcd://127.0.0.1:p1,127.0.0.1:p2,...``."""
        return "etcd://" + ",".join(f"127.0.0.1:{m.client_port}" for m in self.members)

    def _start_member(self, m: EtcdMember) -> None:
        plans = [etcd_local.EtcdMemberPlan(x.name, x.client_port, x.peer_port, x.data_dir) for x in self.members]
        args = etcd_local.member_argv(self.binary, plans[self.members.index(m)], plans, self.token)
        log = open(m.log_path, "ab")
        m.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        """Start every member that is not running and wait until the cluster is healthy."""
        for m in self.members:
            if not m.running:
                self._start_member(m)
        self.wait_healthy(timeout)
        return self

    def healthy(self) -> bool:
        """Every member answers /health with a quorum behind it."""
        for m in self.members:
            if not m.running:
                raise RuntimeError(f"etcd member {m.name} exited: {m.log_path.read_text(errors='replace')[-2000:]}")
            r = httpx.get(f"{m.client_url}/health", timeout=1, trust_env=False)
            if r.status_code != 200 or r.json().get("health") != "true":
                return False
        return True

    def wait_healthy(self, timeout: float = 30.0) -> None:
        poll(self.healthy, timeout, f"etcd cluster healthy (logs under {self.root})", interval=0.1)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop every member (an etcd outage); :meth:`start` brings them back with their data."""
        for m in self.members:
            if m.running and m.proc is not None:
                m.proc.send_signal(sig)
        for m in self.members:
            if m.proc is not None:
                try:
                    m.proc.wait(15)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait(5)
                m.proc = None

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Replica:
    """One control-plane replica process."""

    index: int
    http_port: int
    xds_port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    csr_port: int = field(default_factory=free_port)
    """This replica's own CSR service port (every replica serves the CA from the shared store)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class HaMesh(LocalMesh):
    """A :class:`LocalMesh` whose control plane is ``replicas`` processes sharing ``etcd``.

    Agents get every replica's REST URL and xDS address. ``self.api`` fails over between
    replicas; :meth:`api_of` talks to one replica."""

    def __init__(self, root: Path, etcd: EtcdCluster, *, replicas: int = 3, settings: dict[str, Any] | None = None) -> None:
        super().__init__(root, settings=settings)
        self.etcd = etcd
        self.replicas = [
            Replica(i, free_port(), free_port(), self.root / f"control-plane-r{i}.log") for i in range(replicas)
        ]
        urls = ",".join(r.url for r in self.replicas)
        self.url = self.replicas[0].url
        self.env.update(
            {
                "NOVAMESH_CONTROL_PLANE_URL": urls,
                "NOVAMESH_XDS_ADDRESSES": ",".join(f"127.0.0.1:{r.xds_port}" for r in self.replicas),
                "NOVAMESH_STORE": etcd.url,
                # Agents ask replica 0's CSR service first and fail over in order, unless pinned
                # to one replica (pinned_env).
                "NOVAMESH_CSR_PORT": str(self.replicas[0].csr_port),
                "NOVAMESH_CSR_ADDRESSES": ",".join(f"127.0.0.1:{r.csr_port}" for r in self.replicas),
                "NOVAMESH_ETCD_PREFIX": f"/novamesh-{uuid.uuid4().hex[:8]}/",
            }
        )
        self.api.close()
        self.api = ApiClient(urls, timeout=10)

    def api_of(self, index: int) -> ApiClient:
        """A client of replica ``index`` only (close it after use)."""
        return ApiClient(self.replicas[index].url, timeout=10)

    def pinned_env(self, index: int) -> dict[str, str]:
        """Environment for a workload that talks only to replica ``index`` (REST, xDS and CSR)."""
        r = self.replicas[index]
        return {"NOVAMESH_CONTROL_PLANE_URL": r.url, "NOVAMESH_XDS_ADDRESSES": f"127.0.0.1:{r.xds_port}",
                "NOVAMESH_CSR_ADDRESSES": f"127.0.0.1:{r.csr_port}",
                "NOVAMESH_XDS_PORT": str(r.xds_port), "NOVAMESH_CSR_PORT": str(r.csr_port)}  # fmt: skip

    def start_replica(self, index: int, timeout: float = 30.0) -> None:
        r = self.replicas[index]
        env = dict(
            self.env,
            NOVAMESH_HTTP_PORT=str(r.http_port),
            NOVAMESH_XDS_PORT=str(r.xds_port),
            NOVAMESH_CSR_PORT=str(r.csr_port),
            NOVAMESH_DATA_DIR=str(self.root / f"data-r{index}"),
        )
        log = open(r.log_path, "ab")
        r.proc = subprocess.Popen(
            [sys.executable, "-m", "novamesh", "control-plane", "--log-level", "debug"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        poll(lambda: self._replica_healthy(r), timeout, f"control-plane replica {index} on {r.url}; log {r.log_path}")

    def _replica_healthy(self, r: Replica) -> bool:
        if not r.running:
            code = r.proc.returncode if r.proc else None
            raise RuntimeError(f"replica {r.index} exited with {code}: {r.log()[-3000:]}")
        return httpx.get(f"{r.url}/healthz", timeout=1, trust_env=False).status_code == 200

    def start_control_plane(self, timeout: float = 30.0) -> None:
        """Start every replica."""
        for i in range(len(self.replicas)):
            self.start_replica(i, timeout)

    def stop_replica(self, index: int, sig: int = signal.SIGTERM) -> None:
        r = self.replicas[index]
        if r.proc is not None and r.proc.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(r.proc.pid, signal.SIGKILL)
            else:
                r.proc.send_signal(sig)
            try:
                r.proc.wait(15)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait(5)
        r.proc = None

    def stop_control_plane(self, sig: int = signal.SIGTERM) -> None:
        for i in range(len(self.replicas)):
            self.stop_replica(i, sig)

    def cp_log(self) -> str:
        return "\n".join(f"--- replica {r.index}\n{r.log()}" for r in self.replicas)

    def proxies_of(self, index: int) -> list[dict[str, Any]]:
        """Proxies connected to replica ``index``."""
        api = self.api_of(index)
        try:
            return list(api.get("/api/v1/proxies"))
        finally:
            api.close()

    def replica_of(self, address: str) -> int | None:
        """Index of the running replica whose xDS stream serves the proxy at ``address``."""
        for r in self.replicas:
            if r.running and any(p.get("address") == address for p in self.proxies_of(r.index)):
                return r.index
        return None
