"""Time as a parameter: everything in the agent that waits takes a :class:`Clock`.

Tests pass a fake clock whose ``sleep`` advances ``monotonic`` instantly, so backoff, heartbeat
and deadline logic run without real waiting.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """A monotonic time source and a matching asynchronous sleep."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary fixed point; never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of this clock's time have passed."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic` and :func:`asyncio.sleep`."""

    def monotonic(self) -> float:
        """Current :func:`time.monotonic`."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """:func:`asyncio.sleep` for ``seconds`` (negative means zero)."""
        await asyncio.sleep(max(0.0, seconds))
