"""Debounce with a manual clock: quiet period and maximum delay."""

from __future__ import annotations

import asyncio

from novamesh.testing.clock import ManualClock
from novamesh.xds.debounce import Debouncer


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_burst_is_one_push_after_quiet_period() -> None:
    clock = ManualClock()
    d = Debouncer(quiet=0.1, max_delay=1.0, clock=clock)
    pushes: list[float] = []
    task = asyncio.create_task(d.run(lambda: pushes.append(clock.monotonic())))
    try:
        for _ in range(5):
            d.trigger()
            await _settle()
            clock.advance(0.05)
            await _settle()
        assert pushes == []
        clock.advance(0.1)
        await _settle()
        assert len(pushes) == 1
    finally:
        task.cancel()


async def test_max_delay_bounds_a_continuous_stream() -> None:
    clock = ManualClock()
    d = Debouncer(quiet=0.1, max_delay=0.5, clock=clock)
    pushes: list[float] = []
    start = clock.monotonic()
    task = asyncio.create_task(d.run(lambda: pushes.append(clock.monotonic())))
    try:
        for _ in range(20):  # a change every 50 ms never leaves a quiet period
            d.trigger()
            await _settle()
            clock.advance(0.05)
            await _settle()
        assert pushes, "a push must happen within max_delay even without a quiet period"
        assert pushes[0] - start <= 0.5 + 1e-9
    finally:
        task.cancel()
