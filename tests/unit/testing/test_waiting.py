"""wait_until / wait_until_async: the value returned, the attempts made, and the timeout error.

The async timeouts run on a ManualClock (a driver task moves it whenever the helper sleeps), so
the number of attempts is exact and no test depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from novamesh.testing.clock import ManualClock
from novamesh.testing.waiting import wait_until, wait_until_async


class Countdown:
    """Falsy for the first ``falsy`` calls, then ``value``; counts the calls."""

    def __init__(self, falsy: int, value: object = "done", error: type[Exception] | None = None) -> None:
        self.falsy, self.value, self.error, self.calls = falsy, value, error, 0

    def __call__(self) -> object:
        self.calls += 1
        if self.calls <= self.falsy:
            if self.error is not None:
                raise self.error(f"not yet ({self.calls})")
            return None if self.calls % 2 else 0
        return self.value


async def _drive(clock: ManualClock, task: asyncio.Task[object], step: float) -> None:
    """Advance ``clock`` by ``step`` each time ``task`` sleeps on it, until it finishes."""
    while not task.done():
        if clock.sleepers:
            clock.advance(step)
        await asyncio.sleep(0)


async def _run_on(clock: ManualClock, waiting: Awaitable[object], step: float) -> object:
    task: asyncio.Task[object] = asyncio.ensure_future(waiting)
    await _drive(clock, task, step)
    return task.result()


# -- wait_until (sync) -----------------------------------------------------------------------


def test_wait_until_returns_the_first_truthy_value() -> None:
    pred = Countdown(3, value={"ready": True})
    assert wait_until(pred, timeout=5, interval=0.001) == {"ready": True}
    assert pred.calls == 4


def test_wait_until_times_out_with_the_message_and_last_value() -> None:
    pred = Countdown(10**9)
    with pytest.raises(TimeoutError, match=r"waiting for the answer; last value: (None|0)") as info:
        wait_until(pred, timeout=0.02, interval=0.005, message="the answer")
    assert pred.calls >= 2  # once at the start, once at the deadline
    assert info.value.__cause__ is None


def test_wait_until_ignores_listed_errors_and_chains_the_last() -> None:
    pred = Countdown(10**9, error=ConnectionError)
    with pytest.raises(TimeoutError, match=r"last error: ConnectionError") as info:
        wait_until(pred, timeout=0.02, interval=0.005, ignore=(ConnectionError,))
    assert isinstance(info.value.__cause__, ConnectionError)


# -- wait_until_async ------------------------------------------------------------------------


async def test_async_plain_predicate_returns_the_first_truthy_value() -> None:
    pred = Countdown(3, value=[1])
    assert await wait_until_async(pred, timeout=5, interval=0.001) == [1]
    assert pred.calls == 4


async def test_async_predicate_is_awaited() -> None:
    pred = Countdown(2, value="up")

    async def check() -> object:
        await asyncio.sleep(0)
        return pred()

    assert await wait_until_async(check, timeout=5, interval=0.001) == "up"
    assert pred.calls == 3
    # a lambda returning an awaitable works the same way
    assert await wait_until_async(lambda: asyncio.sleep(0, result=7), timeout=5) == 7


async def test_async_lets_other_tasks_run_while_waiting() -> None:
    event = asyncio.Event()

    async def set_later() -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        event.set()

    setter = asyncio.create_task(set_later())
    assert await wait_until_async(event.is_set, timeout=5, interval=0.001, message="the event") is True
    await setter


async def test_async_times_out_after_exactly_the_deadline_on_the_clock() -> None:
    clock = ManualClock()
    pred = Countdown(10**9)
    waiting = wait_until_async(pred, timeout=1.0, interval=0.25, message="reviews to be ready", clock=clock)
    with pytest.raises(TimeoutError, match=r"timed out after 1s waiting for reviews to be ready; last value: None"):
        await _run_on(clock, waiting, 0.25)
    assert pred.calls == 5  # t = 0, 0.25, 0.5, 0.75 and once more at the deadline (1.0)


async def test_async_succeeds_on_the_attempt_at_the_deadline() -> None:
    clock = ManualClock()
    pred = Countdown(4, value="last chance")
    waiting = wait_until_async(pred, timeout=1.0, interval=0.25, clock=clock)
    assert await _run_on(clock, waiting, 0.25) == "last chance"
    assert pred.calls == 5


async def test_async_zero_timeout_tries_once() -> None:
    pred = Countdown(1)
    with pytest.raises(TimeoutError, match="waiting for Countdown|waiting for condition"):
        await wait_until_async(pred, timeout=0)
    assert pred.calls == 1


async def test_async_ignored_errors_count_as_not_yet_and_the_last_is_chained() -> None:
    clock = ManualClock()
    pred = Countdown(10**9, error=ConnectionError)

    async def check() -> object:
        return pred()

    waiting = wait_until_async(check, timeout=0.5, interval=0.25, ignore=(ConnectionError,), clock=clock)
    with pytest.raises(TimeoutError, match=r"last error: ConnectionError\('not yet \(3\)'\)") as info:
        await _run_on(clock, waiting, 0.25)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert pred.calls == 3


async def test_async_errors_not_ignored_propagate_at_once() -> None:
    pred = Countdown(10**9, error=ValueError)
    with pytest.raises(ValueError, match="not yet"):
        await wait_until_async(pred, timeout=5, ignore=(ConnectionError,))
    assert pred.calls == 1
