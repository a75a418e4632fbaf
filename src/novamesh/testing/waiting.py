"""Polling with a deadline: the one readiness helper every test uses instead of ``sleep``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_until"]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    message: str = "",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy; return it.

    Raises :class:`TimeoutError` (with ``message`` and the last value seen) when ``timeout``
    seconds pass first. Exceptions of the types in ``ignore`` (say ``httpx.ConnectError`` while a
    server starts) count as "not yet"; the last one is chained to the ``TimeoutError``. The
    predicate is always tried at least once, and once more at the deadline.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    last_exc: BaseException | None = None
    while True:
        expired = time.monotonic() >= deadline
        try:
            value = predicate()
        except ignore as exc:
            last_exc = exc
        else:
            if value:
                return value
            last = value
        if expired:
            what = message or getattr(predicate, "__name__", "condition")
            detail = f"; last error: {last_exc!r}" if last_exc is not None else f"; last value: {last!r}"
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}{detail}") from last_exc
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
