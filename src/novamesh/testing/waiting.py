"""Polling with a deadline: the one readiness helper every test uses instead of ``sleep``.

:func:`wait_until` for plain code and threads; :func:`wait_until_async` inside a coroutine (it
sleeps with ``await``, so the event loop keeps running the servers and tasks being waited for).
Both try the predicate at least once, and once more at the deadline, and raise
:class:`TimeoutError` naming what was awaited and the last value or error seen.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

from ..clock import SYSTEM_CLOCK, Clock

__all__ = ["wait_until", "wait_until_async"]

T = TypeVar("T")


def _timeout_error(predicate: object, timeout: float, message: str, last: object, last_exc: BaseException | None) -> TimeoutError:
    what = message or getattr(predicate, "__name__", "condition")
    detail = f"; last error: {last_exc!r}" if last_exc is not None else f"; last value: {last!r}"
    return TimeoutError(f"timed out after {timeout:g}s waiting for {what}{detail}")


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
            raise _timeout_error(predicate, timeout, message, last, last_exc) from last_exc
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))


@overload
async def wait_until_async(
    predicate: Callable[[], Awaitable[T]],
    timeout: float,
    interval: float = ...,
    message: str = ...,
    *,
    ignore: tuple[type[BaseException], ...] = ...,
    clock: Clock | None = ...,
) -> T: ...


@overload
async def wait_until_async(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = ...,
    message: str = ...,
    *,
    ignore: tuple[type[BaseException], ...] = ...,
    clock: Clock | None = ...,
) -> T: ...


async def wait_until_async(
    predicate: Callable[[], Awaitable[T] | T],
    timeout: float,
    interval: float = 0.05,
    message: str = "",
    *,
    ignore: tuple[type[BaseException], ...] = (),
    clock: Clock | None = None,
) -> T:
    """:func:`wait_until` for coroutines: ``predicate`` may be a plain function or return an
    awaitable (an ``async def``, or ``lambda: client.get(...)``), which is awaited.

    Returns the first truthy value; raises :class:`TimeoutError` (with ``message`` and the last
    value seen, the last ignored exception chained) once ``timeout`` seconds of ``clock``
    (default: the system clock) pass. ``ignore`` works as in :func:`wait_until`, for the call
    and the await. Between attempts it sleeps ``interval`` with ``clock.sleep``, so other tasks
    run. An attempt in progress is not interrupted: give a predicate that may hang its own
    timeout.
    """
    clock = clock or SYSTEM_CLOCK
    deadline = clock.monotonic() + timeout
    last: object = None
    last_exc: BaseException | None = None
    while True:
        expired = clock.monotonic() >= deadline
        try:
            result = predicate()
            value: T = await result if inspect.isawaitable(result) else result
        except ignore as exc:
            last_exc = exc
        else:
            if value:
                return value
            last = value
        if expired:
            raise _timeout_error(predicate, timeout, message, last, last_exc) from last_exc
        await clock.sleep(max(0.0, min(interval, deadline - clock.monotonic())))
