"""The analyzer registry: small functions, each registered with a code, a name and a description.

An analyzer is a function ``(Context) -> Iterable[Message]``; :func:`analyzer` registers it.
The modules of :mod:`novamesh.analysis.analyzers` (one per resource family) register theirs
when imported; :func:`all_analyzers` imports them and returns the registry sorted by code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .context import Context
from .messages import CATALOGUE, Message

__all__ = ["Analyzer", "AnalyzerFn", "all_analyzers", "analyzer"]

AnalyzerFn = Callable[[Context], Iterable[Message]]


@dataclass(frozen=True)
class Analyzer:
    """A registered analyzer. ``live_only`` ones need the registry (``--live``)."""

    code: str
    name: str
    description: str
    run: AnalyzerFn
    live_only: bool = False


_REGISTRY: dict[str, Analyzer] = {}


def analyzer(code: str, name: str, description: str, *, live_only: bool = False) -> Callable[[AnalyzerFn], AnalyzerFn]:
    """Register the decorated function as analyzer ``name`` reporting ``code``."""
    if code not in CATALOGUE:
        raise ValueError(f"analyzer {name}: code {code} is not in the message catalogue")

    def register(fn: AnalyzerFn) -> AnalyzerFn:
        if name in _REGISTRY and _REGISTRY[name].run is not fn:
            raise ValueError(f"analyzer name {name!r} is registered twice")
        _REGISTRY[name] = Analyzer(code, name, description, fn, live_only)
        return fn

    return register


def all_analyzers() -> list[Analyzer]:
    """Every registered analyzer, sorted by code then name."""
    from . import analyzers  # noqa: F401 - importing registers them

    return sorted(_REGISTRY.values(), key=lambda a: (a.code, a.name))
