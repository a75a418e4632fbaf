"""Time as a parameter: everything that waits or stamps takes a :class:`Clock`.

Tests pass a :class:`ManualClock` (see ``novamesh.testing``) so leases, debounce and backoff run
without real waiting.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock", "SYSTEM_CLOCK"]


class Clock(Protocol):
    """What novamesh needs from time."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (persisted timestamps, lease expiry)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds (durations, debounce)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
