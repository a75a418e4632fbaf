"""Wiring: one asyncio TaskGroup owns the ADS server, the REST API, the debouncer and the
lease reaper of a control plane."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from pathlib import Path

import grpc
import uvicorn
from envoy.service.discovery.v3 import ads_pb2_grpc

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import NovameshError
from ..settings import Settings
from .ha import ReapGuard, make_election, max_age_options, open_store, start_ha_tasks
from .autorollback import AutoRollback
from .backup_schedule import start_scheduled_backups
from .mesh import Mesh
from ..security.service import SecurityServer, bind_xds_ports
from ..security.xds_authn import AuthenticatedAds

__all__ = ["ControlPlane", "run_control_plane", "tune_gc"]

log = logging.getLogger(__name__)


class ControlPlane:
    """A running control plane: ``await cp.run()`` until :meth:`stop`."""

    def __init__(self, settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock
        data = Path(settings.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        self.store = open_store(settings, clock)
        self.mesh = Mesh(settings, self.store, clock=clock)
        self.autorollback = AutoRollback(self.mesh, clock)  # acts only with auto_rollback_on_nack
        self.autorollback.attach()
        self.election = make_election(settings, self.store, clock)
        if self.election is not None:
            self.mesh.leader = self.election
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def _reap_leases(self) -> None:
        interval = max(0.2, min(1.0, self.settings.lease_ttl / 5))
        guard = ReapGuard(self.store, self.settings.lease_ttl, self.clock)
        while True:
            gone = self.mesh.registry.expire() if guard.allow() else []
            for w in gone:
                log.info("lease of workload %s (%s.%s %s) expired; endpoints removed", w.id, w.service, w.namespace, w.address)
            await self.clock.sleep(interval)

    async def run(self) -> None:
        from ..api.app import create_app

        s = self.settings
        self.mesh.push()  # the first snapshot exists before any proxy can connect
        grpc_server = grpc.aio.server(
            options=[
                ("grpc.keepalive_time_ms", int(s.xds_keepalive * 1000)),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5000),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                *max_age_options(s),
            ]
        )
        security = SecurityServer(s, self.store, self.clock)  # CA + CSR service (15012, TLS)
        # Over mTLS a stream may only ask for the configuration of its certificate's identity.
        ads = AuthenticatedAds(self.mesh.xds, s.trust_domain, security.peer_name)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, grpc_server)
        plaintext = bind_xds_ports(grpc_server, s, security)  # mTLS behind csr_port and/or plaintext xds_port
        api = uvicorn.Server(
            uvicorn.Config(create_app(self.mesh), host=s.bind_host, port=s.http_port, log_level="warning", lifespan="off", access_log=False)
        )
        # Signals belong to run_control_plane (it stops everything in order), not to uvicorn.
        api.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        await grpc_server.start()
        try:
            await security.start()
            async with asyncio.TaskGroup() as tg:
                ca_reload = tg.create_task(security.run(), name="ca-reload")
                api_task = tg.create_task(api.serve(), name="rest-api")
                debounce = tg.create_task(self.mesh.debouncer.run(self.mesh.push), name="debounce")
                reaper = tg.create_task(self._reap_leases(), name="lease-reaper")
                rollbacks = tg.create_task(self.autorollback.run(), name="auto-rollback")
                ha = start_ha_tasks(tg, self.store, self.mesh, self.election)
                backups = start_scheduled_backups(tg, self.mesh, self.clock)  # None unless backup_interval > 0
                while not api.started and not api_task.done():
                    await asyncio.sleep(0.02)
                if api_task.done():
                    raise NovameshError(f"cannot serve the REST API on {s.bind_host}:{s.http_port} (port in use?); pass --http-port")
                self.ready.set()
                xds = f"plaintext {plaintext[0]}:{plaintext[1]}" if plaintext else "mTLS only"
                log.info("control plane ready: xDS %s, API http://%s:%d, data %s", xds, s.bind_host, s.http_port, s.data_dir)
                await self._stop.wait()
                api.should_exit = True
                reaper.cancel()
                ca_reload.cancel()
                rollbacks.cancel()
                debounce.cancel()
                for task in ha:
                    task.cancel()
                if backups is not None:
                    backups.cancel()
                if self.election is not None:
                    self.election.resign()
        finally:
            await security.stop()
            await grpc_server.stop(grace=1.0)
            self.store.close()


def run_control_plane(settings: Settings) -> None:
    """Blocking entry point used by ``novamesh control-plane``: runs until SIGINT/SIGTERM."""

    async def main() -> None:
        cp = ControlPlane(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, cp.stop)
        tune_gc(settings)
        await cp.run()

    asyncio.run(main())


def tune_gc(settings: Settings) -> None:
    """Process-wide GC tuning for a control-plane process (not for one embedded in another
    program): ``gc_threshold`` for generation 0, and everything alive after start-up (modules,
    protobuf descriptors, the loaded config) moved out of the collector's way (``gc.freeze``)."""
    if settings.gc_threshold > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(settings.gc_threshold, gen1, gen2)
    gc.freeze()
