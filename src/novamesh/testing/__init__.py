"""Helpers shipped for tests and users.

- :func:`wait_until` / :func:`wait_until_async` — poll a condition with a deadline (use them
  instead of ``sleep``; the async one inside coroutines).
- :mod:`novamesh.testing.echo` — the echo app (:class:`EchoServer`, ``python -m
  novamesh.testing.echo``): answers with its service, version, the path, headers and caller it saw.
- :mod:`novamesh.testing.load` — :func:`run_load` (N requests, counted) and :class:`Traffic`
  (steady background traffic that records every failure with its time).
- :mod:`novamesh.testing.clock` (``ManualClock``) and :mod:`novamesh.testing.mesh`
  (``LocalMesh``), re-exported here.

The heavier names are imported lazily so ``python -m novamesh.testing.echo`` does not import its own
module twice.
"""

from __future__ import annotations

from typing import Any

from .waiting import wait_until, wait_until_async

__all__ = [
    "wait_until", "wait_until_async", "EchoServer", "make_server", "run_load", "LoadResult", "Traffic", "Sample", "ManualClock",
    "LocalMesh",
]

_LAZY = {
    "EchoServer": "echo",
    "make_server": "echo",
    "run_load": "load",
    "LoadResult": "load",
    "Traffic": "load",
    "Sample": "load",
    "ManualClock": "clock",
    "LocalMesh": "mesh",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'novamesh.testing' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
