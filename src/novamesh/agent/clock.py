"""Time as a parameter: everything in the agent that waits takes a :class:`Clock`.

The agent needs only the monotonic half of :class:`novamesh.clock.Clock`; the real clock is
the shared :class:`novamesh.clock.SystemClock`.

Tests pass a fake clock whose ``sleep`` advances ``monotonic`` instantly, so backoff, heartbeat
and deadline logic run without real waiting.
"""

from __future__ import annotations

from typing import Protocol

from ..clock import SystemClock

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """A monotonic time source and a matching asynchronous sleep."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary fixed point; never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of this clock's time have passed."""
        ...
