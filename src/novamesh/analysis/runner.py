"""Run analyzers over a :class:`Context` and collect their messages."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .context import Context
from .messages import Level, Message
from .registry import Analyzer, all_analyzers

__all__ = ["analyze", "exceeds", "worst_level"]

log = logging.getLogger(__name__)


def analyze(ctx: Context, analyzers: Sequence[Analyzer] | None = None) -> list[Message]:
    """Messages of every analyzer that applies (``live_only`` ones only with workloads; the
    input's IST0106 findings come from ``schema.ValidationAnalyzer``),
    de-duplicated and sorted (most severe first). An analyzer that raises is reported as
    IST0001 InternalError instead of aborting the run."""
    found: list[Message] = []
    for a in all_analyzers() if analyzers is None else analyzers:
        if a.live_only and not ctx.live:
            continue
        try:
            found += list(a.run(ctx))
        except Exception as exc:
            log.exception("analyzer %s failed", a.name)
            found.append(Message("IST0001", f"analyzer {a.name} failed: {type(exc).__name__}: {exc}",
                                 hint="report this as a novamesh bug; other analyzers still ran"))
    unique = dict.fromkeys(found)
    return sorted(unique, key=Message.sort_key)


def worst_level(messages: Sequence[Message]) -> Level | None:
    """The most severe level among ``messages``, or None when there are none."""
    return max((m.level for m in messages), default=None)


def exceeds(messages: Sequence[Message], threshold: Level) -> bool:
    """Whether any message is at or above ``threshold`` (the exit-code rule of ``analyze``)."""
    worst = worst_level(messages)
    return worst is not None and worst >= threshold
