"""LocalMesh: a real control plane and real agents (each with a real Envoy) as processes.

For end-to-end tests and for users who want to script a mesh. Every process runs on loopback;
each mesh takes its own random /24 of 127.0.0.0/8 for workload addresses, so several meshes
(a test run next to a demo) never collide.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..cli.client import ApiClient
from .waiting import wait_until

__all__ = ["LocalMesh", "WorkloadProcess", "free_port", "poll"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def poll(predicate: Callable[[], Any], timeout: float, message: str, interval: float = 0.05) -> Any:
    """:func:`novamesh.testing.waiting.wait_until` for end-to-end tests: any exception from the
    predicate (a server still starting, a process mid-restart) counts as 'not yet'."""
    return wait_until(predicate, timeout, interval, message, ignore=(Exception,))


_RE2_SPECIAL = frozenset(".|[](){}*+?^$\\")


def re2_literal(text: str) -> str:
    """``text`` as an RE2 pattern matching exactly it (Envoy's /stats filter is RE2)."""
    return "".join("\\" + ch if ch in _RE2_SPECIAL else ch for ch in text)


@dataclass
class WorkloadProcess:
    """One `novamesh run`/`novamesh agent` process."""

    service: str
    version: str
    namespace: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    mesh: LocalMesh
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.info["id"])

    @property
    def address(self) -> str:
        return str(self.info["address"])

    @property
    def proxy_url(self) -> str:
        """The sidecar's outbound listener, for use as an HTTP proxy."""
        return f"http://{self.address}:15001"

    @property
    def admin_url(self) -> str:
        return f"http://{self.address}:15000"

    def counters(self, regex: str) -> dict[str, int]:
        """This sidecar's Envoy counters and gauges whose names match ``regex`` (RE2), name ->
        value (histograms left out)."""
        resp = httpx.get(f"{self.admin_url}/stats", params={"filter": regex, "format": "json"}, timeout=5, trust_env=False)
        return {str(s["name"]): int(s["value"]) for s in resp.json().get("stats", []) if "value" in s}

    def counter(self, name: str) -> int:
        """One Envoy counter or gauge by its exact name; 0 while Envoy has not created it."""
        return self.counters(f"^{re2_literal(name)}$").get(name, 0)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL the agent's whole process group (agent, Envoy, app): a crashed host."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)


class LocalMesh:
    """A control plane plus workloads, all real processes, under ``root``."""

    def __init__(self, root: Path, *, settings: dict[str, Any] | None = None, namespace: str = "default") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.xds_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.namespace = namespace
        rnd = random.Random()
        pool = f"127.{rnd.randint(64, 250)}.{rnd.randint(1, 250)}.0/24"
        self.env = dict(os.environ)
        for k in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            self.env.pop(k, None)
        self.env.update(
            {
                "NOVAMESH_CONTROL_PLANE_URL": self.url,
                "NOVAMESH_XDS_PORT": str(self.xds_port),
                "NOVAMESH_CSR_PORT": str(free_port()),
                "NOVAMESH_HTTP_PORT": str(self.http_port),
                "NOVAMESH_DATA_DIR": str(self.root / "data"),
                "NOVAMESH_ADDRESS_POOL": pool,
                "NOVAMESH_ENVOY_CONCURRENCY": "1",
                "NOVAMESH_DEREGISTER_GRACE": "1.0",
                "NOVAMESH_DRAIN_TIME": "2",
                "PYTHONUNBUFFERED": "1",
            }
        )
        for k, v in (settings or {}).items():
            self.env[f"NOVAMESH_{k.upper()}"] = str(v)
        self.cp: subprocess.Popen[bytes] | None = None
        self.workloads: list[WorkloadProcess] = []
        self.api = ApiClient(self.url, timeout=10)
        self._cp_logs = 0

    # -- control plane --------------------------------------------------------------------
    def start_control_plane(self, timeout: float = 30.0) -> None:
        self._cp_logs += 1
        log = open(self.root / f"control-plane-{self._cp_logs}.log", "wb")
        self.cp = subprocess.Popen(
            [sys.executable, "-m", "novamesh", "control-plane", "--log-level", "debug"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        poll(lambda: self._healthy(), timeout, f"control plane on {self.url}; log: {self.root}")

    def _healthy(self) -> bool:
        if self.cp is not None and self.cp.poll() is not None:
            raise RuntimeError(f"control plane exited with {self.cp.returncode}: {self.cp_log()[-3000:]}")
        return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200

    def cp_log(self) -> str:
        return (self.root / f"control-plane-{self._cp_logs}.log").read_text(errors="replace")

    def stop_control_plane(self, sig: int = signal.SIGTERM) -> None:
        if self.cp is not None and self.cp.poll() is None:
            self.cp.send_signal(sig)
            try:
                self.cp.wait(15)
            except subprocess.TimeoutExpired:
                self.cp.kill()
                self.cp.wait(5)
        self.cp = None

    # -- workloads ------------------------------------------------------------------------
    def run(
        self,
        service: str,
        *,
        version: str = "v1",
        ports: Sequence[int | str] = (),
        command: Sequence[str] | None = None,
        namespace: str | None = None,
        env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
        wait_ready: bool = True,
        timeout: float = 60.0,
    ) -> WorkloadProcess:
        """Start ``novamesh run`` (with ``command``) or ``novamesh agent`` (without)."""
        ns = namespace or self.namespace
        args = [sys.executable, "-m", "novamesh", "run" if command else "agent", "--service", service, "--namespace", ns, "--version", version]
        for p in ports:
            args += ["--port", str(p)]
        args += list(extra_args)
        if command:
            args += ["--", *command]
        idx = len(self.workloads)
        log_path = self.root / f"{service}-{version}-{idx}.log"
        log = open(log_path, "wb")
        penv = dict(self.env, **(env or {}))
        proc = subprocess.Popen(args, env=penv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wp = WorkloadProcess(service, version, ns, proc, log_path, self)
        self.workloads.append(wp)
        if wait_ready:
            self.wait_ready(wp, timeout)
        return wp

    def echo(self, service: str, version: str = "v1", port: int = 9080, **kw: Any) -> WorkloadProcess:
        """A workload running the echo app."""
        return self.run(service, version=version, ports=[port], command=[sys.executable, "-m", "novamesh.testing.echo"], **kw)

    def client(self, name: str = "client", **kw: Any) -> WorkloadProcess:
        """A sidecar with no app: tests send requests through its outbound listener."""
        return self.run(name, **kw)

    def gateway(self, name: str, *args: str, namespace: str = "istio-system") -> WorkloadProcess:
        """Start ``novamesh gateway --name NAME --namespace NAMESPACE ARGS`` and wait until it is
        registered and ready; :meth:`close` stops it."""
        cmd = [sys.executable, "-m", "novamesh", "gateway", "--name", name, "--namespace", namespace, *args]
        log_path = self.root / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wp = WorkloadProcess(name, "", namespace, proc, log_path, self)
        self.workloads.append(wp)
        self.wait_ready(wp)
        return wp

    def workload(self, service: str) -> WorkloadProcess:
        """The first workload of ``service`` this mesh started."""
        found = next((w for w in self.workloads if w.service == service), None)
        if found is None:
            raise LookupError(f"no workload of service {service!r} was started here")
        return found

    def _find(self, wp: WorkloadProcess) -> dict[str, Any] | None:
        if wp.proc.poll() is not None:
            raise RuntimeError(f"{wp.service} {wp.version} exited with {wp.proc.returncode}:\n{wp.log()[-3000:]}")
        mine = [w for w in self.api.get("/api/v1/workloads") if w["service"] == wp.service and w["version"] == wp.version and w["namespace"] == wp.namespace and w["ready"]]
        taken = {o.info.get("id") for o in self.workloads if o is not wp}
        for w in mine:
            if w["id"] not in taken:
                return dict(w)
        return None

    def wait_ready(self, wp: WorkloadProcess, timeout: float = 60.0) -> None:
        """Until the workload is registered, ready, and its Envoy admin answers /ready."""
        wp.info = poll(lambda: self._find(wp), timeout, f"workload {wp.service} {wp.version} ready; log {wp.log_path}")
        poll(lambda: httpx.get(f"{wp.admin_url}/ready", timeout=1, trust_env=False).status_code == 200, timeout, f"{wp.service} Envoy ready")

    def workloads_info(self) -> list[dict[str, Any]]:
        return list(self.api.get("/api/v1/workloads"))

    # -- config ---------------------------------------------------------------------------
    def apply(self, yaml_text: str, file: str = "test.yaml") -> dict[str, Any]:
        return dict(self.api.post("/api/v1/apply", {"documents": [{"file": file, "content": yaml_text}]}))

    def proxies(self) -> list[dict[str, Any]]:
        return list(self.api.get("/api/v1/proxies"))

    def wait_synced(self, timeout: float = 20.0) -> None:
        """Until every connected proxy reports SYNCED for every type it subscribed to."""

        def synced() -> bool:
            ps = self.proxies()
            return bool(ps) and all(
                st["status"] in ("SYNCED", "NOT SENT") for p in ps for st in p["types"].values()
            )

        poll(synced, timeout, "all proxies SYNCED")

    def cli(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``novamesh ARGS`` against this mesh."""
        return subprocess.run(
            [sys.executable, "-m", "novamesh", *args], env=self.env, capture_output=True, text=True, input=input, timeout=timeout
        )

    # -- teardown -------------------------------------------------------------------------
    def close(self) -> None:
        for wp in reversed(self.workloads):
            if wp.proc.poll() is None:
                wp.proc.send_signal(signal.SIGTERM)
        for wp in self.workloads:
            try:
                wp.proc.wait(20)
            except subprocess.TimeoutExpired:
                wp.kill()
        self.stop_control_plane()
        self.api.close()

    def __enter__(self) -> LocalMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
