"""Child-process helpers shared by the Envoy supervisor and the app runner."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .clock import Clock

__all__ = ["ProcessLike", "die_with_parent", "first_of", "race_timeout", "terminate", "tail", "exit_status"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_libc: ctypes.CDLL | None = None
if sys.platform.startswith("linux"):
    # Loaded in the parent: the child between fork and exec must not dlopen anything.
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(None, use_errno=True)  # the running process's symbols include libc's


class ProcessLike(Protocol):
    """The part of :class:`asyncio.subprocess.Process` the agent uses (fakes implement it)."""

    @property
    def pid(self) -> int:
        """Operating-system process id."""
        ...

    @property
    def returncode(self) -> int | None:
        """Exit code, ``-N`` if killed by signal N, ``None`` while running."""
        ...

    async def wait(self) -> int:
        """Wait for the process to exit and return its exit code."""
        ...

    def terminate(self) -> None:
        """Send SIGTERM."""
        ...

    def kill(self) -> None:
        """Send SIGKILL."""
        ...


def die_with_parent() -> None:
    """``preexec_fn``: have the kernel SIGTERM the child when the agent dies (Linux only).

    Without it a SIGKILLed agent leaves its Envoy holding the workload's ports, and the next
    ``novamesh run`` of the same workload cannot start.
    """
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


async def first_of(aw: Awaitable[T], rival: Awaitable[object]) -> tuple[bool, T | None]:
    """Await ``aw`` unless ``rival`` finishes first; the loser is cancelled.

    Returns ``(True, result)`` if ``aw`` finished (its exception propagates), else
    ``(False, None)``.
    """
    work: asyncio.Future[T] = asyncio.ensure_future(aw)
    other: asyncio.Future[object] = asyncio.ensure_future(rival)
    futures: set[asyncio.Future[Any]] = {work, other}
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        pending = [f for f in futures if not f.done()]
        for f in pending:
            f.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    if work.cancelled():
        return False, None
    return True, work.result()


async def race_timeout(aw: Awaitable[T], timeout: float, clock: Clock) -> tuple[bool, T | None]:
    """Await ``aw`` for at most ``timeout`` seconds of ``clock`` time: ``(True, result)``, or
    ``(False, None)`` if the time ran out (``aw`` is then cancelled)."""
    return await first_of(aw, clock.sleep(timeout))


async def terminate(proc: ProcessLike, timeout: float, clock: Clock, name: str = "process") -> int:
    """SIGTERM ``proc``, SIGKILL it if it is still running after ``timeout``; its exit code."""
    if proc.returncode is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    finished, code = await race_timeout(proc.wait(), timeout, clock)
    if finished and code is not None:
        return code
    log.warning("%s (pid %d) did not stop %.1fs after SIGTERM; sending SIGKILL", name, proc.pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    return await proc.wait()


def exit_status(code: int) -> int:
    """A shell-style exit status: ``-N`` (killed by signal N) becomes ``128 + N``."""
    return 128 - code if code < 0 else code


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of the text file ``path`` ("" if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
