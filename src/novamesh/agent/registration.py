"""Keeping one workload registered with the control plane.

:class:`Registration` registers the workload, heartbeats it with its current readiness, registers
it again with the *same* id and address when the control plane lost the lease (it restarted, or
the lease expired during an outage), and deregisters it on shutdown. While the control plane is
unreachable it keeps retrying and logs the outage once, not once per attempt: the workload's
Envoy and app keep running on the configuration they already have.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from ..errors import ControlPlaneUnavailable, NovameshError
from .client import ControlPlaneClient, Lease, WorkloadSpec
from .clock import Clock, SystemClock

__all__ = ["Registration"]

log = logging.getLogger(__name__)

ReadyProbe = Callable[[], Awaitable[bool]]


class Registration:
    """One workload's registration. ``ready_probe`` (if given) decides the ``ready`` flag of
    every heartbeat; otherwise the :attr:`ready` attribute does."""

    def __init__(
        self,
        client: ControlPlaneClient,
        spec: WorkloadSpec,
        *,
        address: str | None = None,
        clock: Clock | None = None,
        ready_probe: ReadyProbe | None = None,
    ) -> None:
        self.client = client
        self.spec = spec
        self.requested_address = address
        self.clock: Clock = clock or SystemClock()
        self.ready_probe = ready_probe
        self.ready = False
        """Readiness reported when there is no ``ready_probe``."""
        self.lease: Lease | None = None
        """The latest answer of the control plane; ``None`` before :meth:`register`."""
        self.available = True
        """Whether the last attempt reached the control plane."""
        self.reregistrations = 0
        """How many times a lost lease was registered again."""
        self._last_error = ""

    @property
    def id(self) -> str:
        """The workload id (after :meth:`register`)."""
        if self.lease is None:
            raise RuntimeError("workload is not registered yet")
        return self.lease.id

    @property
    def address(self) -> str:
        """The workload's loopback address (after :meth:`register`)."""
        if self.lease is None:
            raise RuntimeError("workload is not registered yet")
        return self.lease.address

    async def _current_ready(self) -> bool:
        return await self.ready_probe() if self.ready_probe is not None else self.ready

    async def register(self, spec: WorkloadSpec | None = None) -> Lease:
        """Register (or update) the workload; once it has an id, the same id and address are
        sent again. Raises the errors of :meth:`ControlPlaneClient.register`."""
        if spec is not None:
            self.spec = spec
        lease = await self.client.register(
            self.spec,
            id=self.lease.id if self.lease else None,
            address=self.lease.address if self.lease else self.requested_address,
            ready=await self._current_ready(),
        )
        if self.lease is not None and lease.address != self.lease.address:
            # The sidecar's listeners and the app are bound to the old address; say so loudly.
            log.error(
                "control plane moved workload %s from %s to %s; restart the workload",
                lease.id, self.lease.address, lease.address,
            )  # fmt: skip
        self.lease = lease
        return lease

    async def beat(self) -> bool:
        """One heartbeat (registering again if the lease was lost). Never raises for control-plane
        trouble; returns whether the control plane now holds a lease for this workload."""
        try:
            if not await self.client.heartbeat(self.id, await self._current_ready()):
                log.warning(
                    "control plane has no lease for workload %s; registering again as %s", self.id, self.address
                )
                await self.register()
                self.reregistrations += 1
        except ControlPlaneUnavailable as exc:
            if self.available:
                log.warning(
                    "%s. The workload keeps running; retrying every %.1fs (logged once per outage)",
                    exc, self.interval,
                )  # fmt: skip
            self.available = False
            return False
        except NovameshError as exc:
            if str(exc) != self._last_error:
                log.error("heartbeat of workload %s failed: %s", self.id, exc)
                self._last_error = str(exc)
            return False
        if not self.available:
            log.warning("control plane reachable again; workload %s is registered", self.id)
        self.available = True
        self._last_error = ""
        return True

    @property
    def interval(self) -> float:
        """Seconds between heartbeats, as the control plane asked."""
        return self.lease.heartbeat_interval if self.lease else 1.0

    async def run(self) -> None:
        """Heartbeat forever (until cancelled), one :meth:`beat` per :attr:`interval`."""
        while True:
            await self.clock.sleep(self.interval)
            await self.beat()

    async def deregister(self) -> bool:
        """Remove the workload (its endpoints go away at once). Returns False if the control
        plane could not be told; the lease then expires on its own after ``lease_ttl``."""
        if self.lease is None:
            return True
        try:
            await self.client.deregister(self.lease.id)
        except NovameshError as exc:
            log.warning("could not deregister workload %s (%s); its lease expires by itself", self.lease.id, exc)
            return False
        return True
