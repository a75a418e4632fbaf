"""ManualClock: a Clock whose time only moves when the test says so."""

from __future__ import annotations

import asyncio

__all__ = ["ManualClock"]


class ManualClock:
    """Implements :class:`novamesh.clock.Clock`. ``sleep`` waits until :meth:`advance` moves
    time past the sleeper's deadline."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self._now + seconds, fut))
        await fut

    @property
    def sleepers(self) -> int:
        return sum(1 for _, f in self._sleepers if not f.done())

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self._now += seconds
        keep = []
        for deadline, fut in self._sleepers:
            if fut.done():
                continue
            if deadline <= self._now:
                fut.set_result(None)
            else:
                keep.append((deadline, fut))
        self._sleepers = keep
