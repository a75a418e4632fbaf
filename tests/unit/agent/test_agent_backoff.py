"""Restart backoff of the Envoy supervisor, with a fake clock and fake processes (no waiting)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from novamesh.agent.envoy import Backoff, EnvoyProcess
from novamesh.agent.process import ProcessLike, race_timeout
from novamesh.settings import Settings


class FakeClock:
    """``sleep`` advances time at once and records the delay."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class FakeProcess:
    """Runs for ``uptime`` seconds of fake time and crashes, or (uptime None) until terminated."""

    def __init__(self, pid: int, clock: FakeClock, uptime: float | None) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._clock = clock
        self._uptime = uptime
        self._terminated = asyncio.Event()

    async def wait(self) -> int:
        if self.returncode is None:
            if self._uptime is not None:
                await asyncio.sleep(0)
                self._clock.now += self._uptime
                self.returncode = 1
            else:
                await self._terminated.wait()
                self.returncode = -15
        return self.returncode

    def terminate(self) -> None:
        self._terminated.set()

    def kill(self) -> None:
        self._terminated.set()


class FakeLauncher:
    """Launch n crashes with ``uptimes[n]``; after the list, processes stay up."""

    def __init__(self, clock: FakeClock, uptimes: Sequence[float | None]) -> None:
        self.clock = clock
        self.uptimes = uptimes
        self.launched: list[FakeProcess] = []
        self.attempts = 0
        self.settled = asyncio.Event()

    async def __call__(self, args: Sequence[str], output: IO[bytes]) -> ProcessLike:
        assert "--disable-hot-restart" in args
        n = self.attempts
        self.attempts += 1
        uptime = self.uptimes[n] if n < len(self.uptimes) else None
        if isinstance(uptime, float) and uptime < 0:
            raise OSError("exec failed")
        proc = FakeProcess(1000 + n, self.clock, uptime)
        self.launched.append(proc)
        if uptime is None:
            self.settled.set()
        return proc


def test_backoff_doubles_caps_and_resets() -> None:
    b = Backoff(initial=0.5, maximum=10.0, reset_after=30.0)
    assert [b.next_delay(uptime=1.0) for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert b.next_delay(uptime=30.0) == 0.5  # stayed up long enough: healthy again
    assert b.next_delay(uptime=0.0) == 1.0


def _settings() -> Settings:
    return Settings(restart_backoff_initial=0.5, restart_backoff_max=10.0, restart_reset_after=30.0)


async def _supervise(tmp_path: Path, uptimes: Sequence[float | None]) -> tuple[FakeClock, FakeLauncher, EnvoyProcess]:
    clock = FakeClock()
    launcher = FakeLauncher(clock, uptimes)
    envoy = EnvoyProcess(
        tmp_path / "bootstrap.json",
        admin_address="127.0.0.1",
        admin_port=1,
        workdir=tmp_path,
        settings=_settings(),
        clock=clock,
        launcher=launcher,
        binary="/fake/envoy",
    )
    await envoy.start()
    await asyncio.wait_for(launcher.settled.wait(), timeout=10)  # safety net, not a timing check
    return clock, launcher, envoy


async def test_supervisor_restarts_with_backoff_and_resets_after_a_long_run(tmp_path: Path) -> None:
    clock, launcher, envoy = await _supervise(tmp_path, [0.0] * 7 + [100.0, 0.0])
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 0.5, 1.0]
    assert envoy.restarts == 9 and envoy.exits == 9
    assert envoy.pid == launcher.launched[-1].pid and envoy.running
    assert await envoy.stop() == -15
    assert not envoy.running


async def test_failed_exec_during_restart_is_retried(tmp_path: Path) -> None:
    clock, launcher, envoy = await _supervise(tmp_path, [0.0, -1.0])
    # crash -> 0.5s -> exec fails -> 1.0s -> running again
    assert clock.sleeps == [0.5, 1.0]
    assert envoy.running and envoy.restarts == 1 and launcher.attempts == 3
    await envoy.stop()


async def test_stop_during_backoff_does_not_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    launcher = FakeLauncher(clock, [0.0])
    blocked = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        blocked.set()
        await asyncio.Event().wait()  # until cancelled by stop()

    clock.sleep = slow_sleep  # type: ignore[method-assign]
    envoy = EnvoyProcess(
        tmp_path / "b.json", admin_address="127.0.0.1", admin_port=1, workdir=tmp_path,
        settings=_settings(), clock=clock, launcher=launcher, binary="/fake/envoy",
    )  # fmt: skip
    await envoy.start()
    await asyncio.wait_for(blocked.wait(), timeout=10)
    assert await envoy.stop() == 1
    assert len(launcher.launched) == 1


async def test_race_timeout_uses_the_injected_clock() -> None:
    clock = FakeClock()
    never = asyncio.Event()
    finished, value = await race_timeout(never.wait(), 5.0, clock)
    assert (finished, value) == (False, None)
    assert clock.sleeps == [5.0]

    async def answer() -> int:
        return 42

    assert await race_timeout(answer(), 5.0, clock) == (True, 42)
