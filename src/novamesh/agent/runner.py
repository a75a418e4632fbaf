"""The agent: runs one workload (its sidecar Envoy and, for ``novamesh run``, its app).

Lifecycle of :meth:`Agent.run`:

1. register (not ready) → the control plane hands out the workload id and loopback address;
   pick free app ports on that address; register again with the ports;
2. write ``<data_dir>/workloads/<service>-<version>-<id>/bootstrap.json``, start Envoy, wait
   until it is ready (it has its clusters and listeners);
3. ``run`` only: start the app with HOST/PORT/HTTP_PROXY/... in its environment and wait until
   every app port accepts connections (or the app exits: then fail with its exit code);
4. heartbeat with the current readiness; re-register with the same id and address when the
   control plane lost the lease; keep everything running while it is unreachable;
5. on SIGTERM/SIGINT or app exit: deregister, wait ``deregister_grace`` (the push removing our
   endpoints reaches the other proxies), stop the app, drain Envoy, stop Envoy.

Exit code of ``run``: the app's exit code if it exited by itself (``128+N`` if killed by signal
N). If the agent is signalled, it stops the app and exits 0 if the app then exited cleanly, else
``128 + signal`` (143 for SIGTERM, 130 for SIGINT). ``agent`` mode exits 0 when signalled.
"""

from __future__ import annotations

import dataclasses
import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from ..errors import EnvoyError, NovameshError
from ..model.proxy import Proxy
from ..settings import Settings
from .bootstrap import build_bootstrap, csr_targets, write_bootstrap, xds_addresses
from .client import ControlPlaneClient, WorkloadSpec
from .clock import Clock, SystemClock
from .envoy import EnvoyProcess
from .health import HealthServer
from .identity import WorkloadIdentity, start_identity
from .sds import add_sds
from ..config.names import TLS_MODE_LABEL
from .metrics import Telemetry, start_telemetry
from .process import die_with_parent, exit_status, first_of, terminate
from .registration import Registration
from .workload import AgentConfig, app_environment, free_port, port_open

__all__ = ["Agent", "BootstrapBuilder"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Makes the Envoy bootstrap for a proxy (tests substitute a static one).
BootstrapBuilder = Callable[[Proxy, Settings], dict[str, Any]]


class _Stopped(Exception):
    """A stop was requested while starting up."""


class Agent:
    """Runs one workload described by ``config`` until stopped; see the module docstring."""

    def __init__(
        self,
        config: AgentConfig,
        settings: Settings,
        *,
        clock: Clock | None = None,
        client: ControlPlaneClient | None = None,
        bootstrap_builder: BootstrapBuilder = build_bootstrap,
    ) -> None:
        config.validate()
        self.config = config
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.client = client or ControlPlaneClient(settings.control_plane_url)
        self._owns_client = client is None
        self.bootstrap_builder = bootstrap_builder
        self.identity: WorkloadIdentity | None = None
        """Key, certificate and SDS server (None: the workload runs without identity)."""
        self.registration = Registration(
            self.client, self._spec(()), address=config.address, clock=self.clock, ready_probe=self.check_ready
        )
        self.proxy: Proxy | None = None
        self.workdir: Path | None = None
        self.envoy: EnvoyProcess | None = None
        self.app: asyncio.subprocess.Process | None = None
        self.started = asyncio.Event()
        """Set once the workload is serving (Envoy ready, app ports open)."""
        self._stop = asyncio.Event()
        self._signal: int | None = None
        self._stopping = False
        self._health: HealthServer | None = None
        self._telemetry: Telemetry | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    def _xds_target(self) -> str:
        """Where this workload's Envoy gets its configuration (for error messages)."""
        s = self.settings
        if self.identity is not None and s.xds_tls:
            return ", ".join(f"{h}:{p}" for h, p in csr_targets(s)) + " (mTLS)"
        return ", ".join(f"{h}:{p}" for h, p in xds_addresses(s)) + " (plaintext)"

    def _spec(self, ports: tuple[Any, ...]) -> WorkloadSpec:
        c = self.config
        return WorkloadSpec(
            service=c.service,
            namespace=c.namespace,
            version=c.version,
            service_account=c.service_account,
            labels=self.labels,
            ports=ports,
            kind=c.kind,
        )

    @property
    def labels(self) -> dict[str, str]:
        """The workload's labels: Istio's ``app`` and ``version`` (what DestinationRule subsets
        usually select on; a gateway has no version), overridden by ``--label``."""
        version = {"version": self.config.version} if self.config.version else {}
        # Istio's marker of a sidecar holding a mesh certificate: clients use mTLS towards it. Not
        # on gateways: their servers speak what the Gateway resource says (plain text or TLS).
        tls = {TLS_MODE_LABEL: "istio"} if self.identity is not None and self.config.kind != "gateway" else {}
        return {"app": self.config.service, **version, **self.config.labels, **tls}

    @property
    def app_host(self) -> str:
        """Where the sidecar reaches the app: the workload address for ``run``."""
        return self.registration.address if self.config.command else self.config.app_host

    def request_stop(self, signum: int | None = None) -> None:
        """Begin shutdown (signal handlers call this with the signal number)."""
        if signum is not None and self._signal is None:
            self._signal = signum
            log.info("received %s; shutting down", signal.Signals(signum).name)
        self._stop.set()

    async def check_ready(self) -> bool:
        """Envoy is ready and every app port accepts connections (what /healthz/ready says)."""
        if self._stopping or self.envoy is None or self.proxy is None:
            return False
        if self.app is not None and self.app.returncode is not None:
            return False
        if not await self.envoy.is_ready():
            return False
        checks = [port_open(self.app_host, p.app_port) for p in self.proxy.ports if p.app_port]
        return all(await asyncio.gather(*checks))

    async def run(self, *, handle_signals: bool = True) -> int:
        """Run the workload until stopped; returns the exit code (see the module docstring).
        Startup failures raise (:class:`EnvoyError`, ``ControlPlaneUnavailable``, ...) after
        everything already started was shut down."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for sig in signals:
            loop.add_signal_handler(sig, self.request_stop, sig)
        code: int | None = None
        try:
            code = await self._start_and_serve()
        except _Stopped:
            pass
        finally:
            try:
                app_code = await self._shutdown()
            finally:
                for sig in signals:
                    loop.remove_signal_handler(sig)
        if code is not None:
            return code
        if not self.config.command:
            return 0
        if app_code == 0:
            return 0
        return 128 + (self._signal or signal.SIGTERM)

    async def _unless_stopped(self, aw: Awaitable[T]) -> T:
        """Await ``aw``, abandoning it (raising :class:`_Stopped`) if a stop is requested."""
        finished, value = await first_of(aw, self._stop.wait())
        if not finished:
            raise _Stopped
        return cast(T, value)

    async def _start_and_serve(self) -> int | None:
        """Start everything; returns the app's exit status if it ended by itself, else None."""
        reg, s = self.registration, self.settings
        lease = await self._unless_stopped(reg.register())
        log.info("registered workload %s at %s", lease.id, lease.address)
        # App ports are picked on the workload's own address, so they cannot collide with the
        # ports of other workloads' apps on the same host.
        gateway = self.config.kind == "gateway"  # serves its ports itself: no app ports
        ports = tuple(
            p.to_proxy_port(0 if gateway else p.app_port or free_port(lease.address)) for p in self.config.ports
        )
        await self._unless_stopped(reg.register(self._spec(ports)))
        self.proxy = Proxy(
            id=lease.id,
            kind=self.config.kind,
            service=self.config.service,
            namespace=self.config.namespace,
            version=self.config.version,
            service_account=self.config.service_account,
            address=lease.address,
            app_host=self.app_host,
            labels=tuple(sorted(self.labels.items())),
            ports=ports,
            admin_port=s.envoy_admin_port,
            outbound_port=s.outbound_port,
            telemetry_port=s.telemetry_port,
        )
        safe_id = re.sub(r"[^A-Za-z0-9._-]", "_", lease.id)
        self.workdir = Path(s.data_dir) / "workloads" / f"{self.config.service}-{self.config.version}-{safe_id}"
        # Access logs (when a Telemetry turns them on) go beside the bootstrap, one file per workload.
        self.proxy = dataclasses.replace(self.proxy, access_log_path=str(self.workdir / "access.log"))
        self.identity = await self._unless_stopped(
            start_identity(s, self.workdir, self.config.namespace, self.config.service_account)
        )
        if self.identity is not None:  # the proxy has a certificate to present (translate/mtls.py)
            labels = {**self.labels, TLS_MODE_LABEL: "istio"}
            self.proxy = dataclasses.replace(self.proxy, labels=tuple(sorted(labels.items())))
            await self._unless_stopped(reg.register(self._spec(ports)))  # sidecars: clients use mTLS to it
        bootstrap = self.bootstrap_builder(self.proxy, s)
        if self.identity is not None:
            add_sds(bootstrap, self.identity.sds.socket_path, s)  # and xDS over mTLS on 15012 (xds_tls)
            self._tasks.append(asyncio.create_task(self.identity.run(), name=f"cert-renewal {lease.id}"))
        config_path = write_bootstrap(self.workdir / "bootstrap.json", bootstrap)

        self._health = HealthServer(lease.address, s.health_port, self.check_ready)
        await self._health.start()
        self._telemetry = await start_telemetry(self.proxy, s, self.app_host)  # metrics: 15020

        self.envoy = EnvoyProcess(
            config_path,
            admin_address=lease.address,
            admin_port=s.envoy_admin_port,
            workdir=self.workdir,
            settings=s,
            clock=self.clock,
        )
        await self.envoy.start()
        try:
            await self._unless_stopped(self.envoy.wait_ready(s.ready_timeout))
        except EnvoyError as exc:
            raise EnvoyError(
                f"{exc}\n(is the control plane's xDS port {self._xds_target()} reachable? "
                f"`novamesh proxy-status` shows what it sent)"
            ) from exc
        log.info("envoy ready (admin http://%s:%d)", lease.address, s.envoy_admin_port)

        if self.config.command:
            code = await self._start_app(ports)
            if code is not None:
                return code

        self.started.set()
        await reg.beat()  # the first ready heartbeat: from now on we are an endpoint
        self._tasks.append(asyncio.create_task(reg.run(), name=f"heartbeat {lease.id}"))
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._stop.wait())]
        if self.app is not None:
            waiters.append(asyncio.ensure_future(self.app.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        if self.app is not None and self.app.returncode is not None and not self._stop.is_set():
            log.info("app exited with code %d; shutting down", self.app.returncode)
            return exit_status(self.app.returncode)
        return None

    async def _start_app(self, ports: tuple[Any, ...]) -> int | None:
        """Start the app and wait for its ports; its exit status if it exited meanwhile."""
        assert self.proxy is not None
        env = app_environment(
            os.environ,
            address=self.proxy.address,
            ports=ports,
            service=self.config.service,
            version=self.config.version,
            namespace=self.config.namespace,
            outbound_port=self.settings.outbound_port,
        )
        command = list(self.config.command)
        try:
            # Own session: Ctrl-C must reach the agent only, which then stops the app in order.
            self.app = await asyncio.create_subprocess_exec(
                *command, env=env, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent
            )
        except OSError as exc:
            log.error("cannot start the app %r: %s", command[0], exc)
            return 127 if isinstance(exc, FileNotFoundError) else 126
        log.info("app started (pid %d): %s", self.app.pid, " ".join(command))
        deadline = self.clock.monotonic() + self.settings.ready_timeout
        pending = list(ports)
        while pending:
            if self.app.returncode is not None:
                log.error("app exited with code %d before it accepted connections", self.app.returncode)
                return exit_status(self.app.returncode)
            if self._stop.is_set():
                raise _Stopped
            pending = [p for p in pending if not await port_open(self.proxy.address, p.app_port)]
            if not pending:
                break
            if self.clock.monotonic() >= deadline:
                p = pending[0]
                raise NovameshError(
                    f"the app did not accept connections on {self.proxy.address}:{p.app_port} (service port "
                    f"{p.number}) within {self.settings.ready_timeout:.0f}s; it must listen on $HOST:$PORT "
                    f"(or $HOST:$NOVAMESH_PORT_{p.number})"
                )
            await self.clock.sleep(self.settings.agent_poll_interval)
        return None

    async def _shutdown(self) -> int | None:
        """Deregister, stop the app, drain and stop Envoy. Returns the app's exit code."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        s = self.settings
        if self.registration.lease is not None:
            if await self.registration.deregister():
                log.info("deregistered workload %s", self.registration.id)
            await self.clock.sleep(s.deregister_grace)
        app_code: int | None = None
        if self.app is not None:
            app_code = await terminate(self.app, s.stop_timeout, self.clock, "app")
        if self.envoy is not None:
            with contextlib.suppress(Exception):  # a failed drain must not leave Envoy running
                await self.envoy.drain(s.drain_time)
            await self.envoy.stop(s.stop_timeout)
        if self._health is not None:
            await self._health.stop()
        if self.identity is not None:
            await self.identity.stop()
        if self._telemetry is not None:
            await self._telemetry.stop()
        if self._owns_client:
            await self.client.aclose()
        return app_code
