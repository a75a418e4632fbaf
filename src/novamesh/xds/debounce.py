"""Debounce: coalesce bursts of changes into one push.

A push starts once no change arrived for ``quiet`` seconds, or ``max_delay`` seconds after the
first change of a burst, whichever comes first (Istio's PILOT_DEBOUNCE_AFTER / _MAX).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..clock import SYSTEM_CLOCK, Clock

__all__ = ["Debouncer"]


class Debouncer:
    """Call :meth:`trigger` on every change; :meth:`run` calls ``push`` once per burst."""

    def __init__(self, quiet: float, max_delay: float, clock: Clock = SYSTEM_CLOCK) -> None:
        self._quiet = quiet
        self._max = max_delay
        self._clock = clock
        self._event = asyncio.Event()
        self._first: float | None = None
        self._last = 0.0
        self.bursts = 0
        self.triggers = 0

    def trigger(self) -> None:
        now = self._clock.monotonic()
        if self._first is None:
            self._first = now
        self._last = now
        self.triggers += 1
        self._event.set()

    async def run(self, push: Callable[[], None]) -> None:
        """Loop forever (until cancelled), calling ``push`` after each settled burst."""
        while True:
            await self._event.wait()
            while True:
                assert self._first is not None
                until = min(self._last + self._quiet, self._first + self._max)
                now = self._clock.monotonic()
                if now >= until:
                    break
                await self._clock.sleep(until - now)
            self._event.clear()
            self._first = None
            self.bursts += 1
            push()
