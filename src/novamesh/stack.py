"""Stacks: a YAML file describing a local mesh (control plane, workloads, config) that
``novamesh up`` starts and ``novamesh down`` stops. The format is documented in docs/stacks.md.

This module is the entry point and holds :class:`StackRunner`, which starts the processes,
waits for them with deadlines, and records their pids in ``<dataDir>/stack-state.json`` so
:func:`stop_stack` works from another process. The rest lives in sibling modules, re-exported
here:

- :mod:`novamesh.stack_file`: the model (:class:`Stack`...) and :func:`load_stack`, which reads
  and validates a file (every problem is a :class:`~novamesh.errors.Violation` naming the file,
  line and field path);
- :mod:`novamesh.stack_procs`: the started processes, the state file, :func:`stop_stack` and
  :func:`running_stacks`;
- :mod:`novamesh.stack_ha`: ``controlPlane: {replicas: N, store: etcd}`` (etcd and replicas).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from .errors import ConfigError, ControlPlaneUnavailable, NovameshError, Violation
from .settings import Settings
from .stack_file import ControlPlaneSpec, PortSpec, Stack, WorkloadSpec, config_files, load_stack, stack_data_dir
from .stack_ha import start_ha_control_plane
from .stack_procs import (
    STATE_FILE,
    ProcessStatus,
    Progress,
    StackProcess,
    log_tail,
    proc_start_time,
    read_state,
    running_stacks,
    stop_processes,
    stop_stack,
)

__all__ = [
    "PortSpec",
    "WorkloadSpec",
    "ControlPlaneSpec",
    "Stack",
    "load_stack",
    "config_files",
    "StackRunner",
    "ProcessStatus",
    "Progress",
    "stop_stack",
    "running_stacks",
    "stack_data_dir",
    "STATE_FILE",
]


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class StackRunner:
    """Starts and stops one stack's processes."""

    def __init__(
        self,
        stack: Stack,
        settings: Settings | None = None,
        *,
        novamesh_command: Sequence[str] | None = None,
        control_plane_timeout: float = 30.0,
        workload_timeout: float | None = None,
    ) -> None:
        """``settings`` defaults to :meth:`Settings.from_env`; the stack's ``controlPlane``
        section overrides it. ``novamesh_command`` (default ``python -m novamesh``) is how the
        ``control-plane`` and ``run`` commands are invoked."""
        base = settings or Settings.from_env()
        cp = stack.control_plane
        typed = Settings.from_env({f"NOVAMESH_{k.upper()}": v for k, v in cp.settings.items()})
        eff = base.replace(**{k: getattr(typed, k) for k in cp.settings})
        eff = eff.replace(http_port=cp.http_port, xds_port=cp.xds_port)
        if cp.xds_port is not None and "csr_port" not in cp.settings and eff.csr_port == Settings().csr_port:
            eff = eff.replace(csr_port=cp.xds_port + 2)  # moved xDS: keep Istio's 15010/15012 spacing
        self.data_dir = stack_data_dir(stack, eff)
        host = "127.0.0.1" if eff.bind_host in ("0.0.0.0", "::", "") else eff.bind_host
        self.url = f"http://{host}:{eff.http_port}"
        self.settings = eff.replace(data_dir=str(self.data_dir), control_plane_url=self.url)
        self.agent_url = self.url
        """What workloads get as --control-plane (every replica's URL in an HA stack)."""
        self.stack = stack
        self.log_dir = self.data_dir / "logs"
        self.state_file = self.data_dir / STATE_FILE
        self.novamesh_command = list(novamesh_command or [sys.executable, "-m", "novamesh"])
        self.control_plane_timeout = control_plane_timeout
        self.workload_timeout = workload_timeout if workload_timeout is not None else self.settings.ready_timeout + 15
        self._procs: list[StackProcess] = []

    # -- environment and commands ------------------------------------------------------------

    def process_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment of every started process: ours, plus every effective setting as
        ``NOVAMESH_*`` (so all processes agree), plus ``extra``."""
        env = dict(os.environ)
        for f in dataclasses.fields(Settings):
            env[f"NOVAMESH_{f.name.upper()}"] = str(getattr(self.settings, f.name))
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    def control_plane_argv(self) -> list[str]:
        """The control-plane command line."""
        s = self.settings
        return [*self.novamesh_command, "control-plane", "--data-dir", str(self.data_dir),
                "--http-port", str(s.http_port), "--xds-port", str(s.xds_port)]

    def workload_argv(self, workload: WorkloadSpec) -> list[str]:
        """The ``novamesh run`` command line of one replica."""
        argv = [*self.novamesh_command, "run", "--service", workload.service, "--namespace", workload.namespace,
                "--version", workload.version]
        for port in workload.ports:
            argv += ["--port", port.run_flag()]
        command = [sys.executable if a == "python" else a for a in workload.command[:1]] + list(workload.command[1:])
        return [*argv, "--control-plane", self.agent_url, "--", *command]

    # -- up ----------------------------------------------------------------------------------

    def up(self, progress: Progress | None = None) -> None:
        """Start the control plane, apply config, start every workload replica, and return once
        all are registered and ready. On any failure (or Ctrl-C) everything started is stopped
        again and the error names the process that failed, with the tail of its log."""
        say = progress or (lambda _msg: None)
        self._check_not_running()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_control_plane(say)
            self._apply_config(say)
            self._start_workloads(say)
        except BaseException:
            say("startup failed; stopping what was started")
            self.down()
            raise
        say(f"stack {self.stack.name} is up")

    def _check_not_running(self) -> None:
        state = read_state(self.data_dir)
        if state is not None:
            alive = [p for p in state if p.alive()]
            if alive:
                raise NovameshError(
                    f"stack '{self.stack.name}' is already running from {self.data_dir} "
                    f"({', '.join(f'{p.name} pid {p.pid}' for p in alive[:3])}); "
                    f"stop it with `novamesh down --data-dir {self.data_dir}`"
                )
            self.state_file.unlink(missing_ok=True)  # stale: every process is gone
        host = self.url.split("//", 1)[1].rsplit(":", 1)[0]
        for what, port in (("HTTP", self.settings.http_port), ("xDS", self.settings.xds_port)):
            if not _port_free(host, port):
                raise NovameshError(
                    f"control-plane {what} port {host}:{port} is already in use (another stack or "
                    f"control plane?); stop it with `novamesh down`, or pick another port with "
                    f"controlPlane.{'httpPort' if what == 'HTTP' else 'xdsPort'}"
                )

    def _spawn(self, role: str, name: str, argv: list[str], log: Path, env: dict[str, str],
               key: tuple[str, str, str] | None = None) -> StackProcess:
        with log.open("ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n".encode())
            out.flush()
            # A new session: Ctrl-C in our terminal does not reach the children, so `down`
            # decides the order (workloads drain first); SIGKILL can then take the whole group.
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.stack.directory, start_new_session=True)
        proc = StackProcess(role, name, popen.pid, log, proc_start_time(popen.pid), key, popen)
        self._procs.append(proc)
        self._write_state()
        return proc

    def _start_control_plane(self, say: Progress) -> None:
        if self.stack.control_plane.store == "etcd":
            return start_ha_control_plane(self, say)
        say(f"starting the control plane on {self.url} (data in {self.data_dir})")
        proc = self._spawn("control-plane", "control-plane", self.control_plane_argv(),
                           self.log_dir / "control-plane.log", self.process_env())

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1.0, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            self._wait(healthy, self.control_plane_timeout, [proc], "the control plane to answer /healthz")
        except TimeoutError as exc:
            raise ControlPlaneUnavailable(str(exc)) from None
        say("control plane is up")

    def _apply_config(self, say: Progress) -> None:
        files = config_files(self.stack)
        if not files:
            return
        documents = [{"file": str(f), "content": f.read_text()} for f in files]
        body = {"documents": documents, "namespace": "default", "dry_run": False,
                "author": "novamesh up", "message": f"stack {self.stack.name}"}
        try:
            response = httpx.post(f"{self.url}/api/v1/apply", json=body, timeout=30.0, trust_env=False)
        except httpx.HTTPError as exc:
            raise ControlPlaneUnavailable(f"applying config to {self.url}: {exc}") from exc
        answer = _json(response)
        if response.status_code == 422:
            violations = [Violation.from_dict(v) for v in answer.get("violations", []) if isinstance(v, dict)]
            raise ConfigError(violations or [Violation(str(answer.get("message", response.text)))],
                              f"stack {self.stack.name}: config rejected by the control plane")
        if response.status_code != 200:
            raise NovameshError(f"applying config failed: HTTP {response.status_code}: {answer.get('message', response.text)}")
        changes = answer.get("changes", [])
        summary = ", ".join(f"{c.get('kind')} {c.get('namespace')}/{c.get('name')} {c.get('action')}" for c in changes)
        say(f"applied {len(files)} config file(s) (revision {answer.get('revision')}): {summary or 'no changes'}")

    def _start_workloads(self, say: Progress) -> None:
        # Servers first; clients (no ports, e.g. load generators) once every server is ready,
        # so they do not see startup errors. `down` stops them in the reverse order.
        before = {w.get("id") for w in self.api_workloads()}  # leftovers of an earlier run are not ours
        servers = [w for w in self.stack.workloads if not w.is_client]
        clients = [w for w in self.stack.workloads if w.is_client]
        for role, group in (("workload", servers), ("client", clients)):
            if not any(w.replicas for w in group):
                continue
            for workload in group:
                env = self.process_env(workload.env)
                for i in range(workload.replicas):
                    say(f"starting {workload.label} replica {i}")
                    self._spawn(role, f"{workload.label}#{i}", self.workload_argv(workload),
                                self.log_dir / workload.log_name(i), env, workload.key)
            self._wait_ready(group, before, "every workload" if role == "workload" else "every client")
            say(f"{sum(w.replicas for w in group)} {role} process(es) ready")

    def _wait_ready(self, group: list[WorkloadSpec], before: Collection[Any], what: str) -> None:
        def all_ready() -> bool:
            counts = self._ready_counts(exclude=before)
            return all(counts.get(w.key, 0) >= w.replicas for w in group)

        try:
            self._wait(all_ready, self.workload_timeout, [*self._procs], f"{what} to be ready")
        except TimeoutError as exc:
            counts = self._ready_counts(exclude=before)
            missing = [w for w in group if counts.get(w.key, 0) < w.replicas]
            detail = "\n".join(
                f"{w.label}: {counts.get(w.key, 0)}/{w.replicas} ready; last lines of "
                f"{self.log_dir / w.log_name(0)}:\n{log_tail(self.log_dir / w.log_name(0))}"
                for w in missing[:3]
            )
            raise NovameshError(f"{exc}\n{detail}") from None

    def _ready_counts(self, exclude: Collection[Any] = ()) -> dict[tuple[str, str, str], int]:
        clients = {w.key for w in self.stack.workloads if w.is_client}
        counts: dict[tuple[str, str, str], int] = {}
        for w in self.api_workloads():
            if w.get("id") in exclude:
                continue
            key = (str(w.get("service")), str(w.get("namespace")), str(w.get("version")))
            if w.get("ready") or key in clients:
                counts[key] = counts.get(key, 0) + 1
        return counts

    def _wait(self, predicate: Callable[[], bool], timeout: float, watch: list[StackProcess], what: str) -> None:
        """Poll ``predicate`` until true; fail fast when a watched process exits."""
        deadline = time.monotonic() + timeout
        while True:
            for proc in watch:
                if not proc.alive():
                    raise NovameshError(
                        f"{proc.name} exited (code {proc.returncode()}) while waiting for {what}; "
                        f"last lines of {proc.log}:\n{log_tail(proc.log)}"
                    )
            if predicate():
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.2)

    # -- while running -----------------------------------------------------------------------

    def api_workloads(self) -> list[dict[str, Any]]:
        """``GET /api/v1/workloads`` (empty when the control plane does not answer)."""
        try:
            response = httpx.get(f"{self.url}/api/v1/workloads", timeout=2.0, trust_env=False)
        except httpx.HTTPError:
            return []
        data = _json(response, default=[])
        return [w for w in data if isinstance(w, dict)] if response.status_code == 200 and isinstance(data, list) else []

    def status(self) -> list[ProcessStatus]:
        """Every process with whether it runs, and (for workloads, matched by service and
        version in start order) its address and readiness from the control plane."""
        procs = self._procs or (read_state(self.data_dir) or [])
        by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for w in sorted(self.api_workloads(), key=lambda w: str(w.get("address", ""))):
            by_key.setdefault((str(w.get("service")), str(w.get("namespace")), str(w.get("version"))), []).append(w)
        out: list[ProcessStatus] = []
        for p in procs:
            entry = by_key.get(p.key, [{}]).pop(0) if p.key and by_key.get(p.key) else {}
            address = str(entry.get("address", "")) if entry else (self.url if p.role == "control-plane" else "")
            ready = bool(entry.get("ready")) if entry else None
            out.append(ProcessStatus(p.name, p.pid, p.alive(), p.log, address, ready))
        return out

    def exited(self) -> list[ProcessStatus]:
        """Processes of this runner that are no longer running."""
        return [s for s in self.status() if not s.running]

    # -- down --------------------------------------------------------------------------------

    def down(self, progress: Progress | None = None) -> None:
        """Stop workloads (SIGTERM, then SIGKILL after a deadline), then the control plane."""
        procs = self._procs or (read_state(self.data_dir) or [])
        stop_processes(procs, self.settings, progress or (lambda _msg: None))
        self._procs = []
        self.state_file.unlink(missing_ok=True)

    def _write_state(self) -> None:
        state = {"name": self.stack.name, "stack_file": str(self.stack.file), "control_plane_url": self.url,
                 "processes": [p.to_json() for p in self._procs]}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_file)


def _json(response: httpx.Response, default: Any = None) -> Any:
    try:
        return response.json()
    except ValueError:
        return {} if default is None else default
