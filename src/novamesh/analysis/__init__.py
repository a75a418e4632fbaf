"""novamesh.analysis: analyzers over a config set, with Istio's message codes.

``novamesh analyze`` (cli/analyze_cmds.py) is a thin front end to this package::

    resources, messages, lines = load_paths(["mesh/"])          # IST0106 instead of raising
    ctx = build_context(files=(resources, messages, lines))      # + live=..., workloads=...
    found = analyze(ctx)                                         # sorted, most severe first
    print(render(found, "sarif"))

Analyzers are small functions registered with :func:`~.registry.analyzer` (a code from
:data:`~.messages.CATALOGUE`, a name, a description), one module per resource family under
:mod:`.analyzers`. ``live_only`` analyzers need the workload registry and run only with
``--live``. Raises: :func:`load_paths` raises :class:`~novamesh.errors.ConfigError` for paths
that cannot be read; nothing else here raises for bad config.
"""

from __future__ import annotations

from .context import Context
from .messages import (
    CATALOGUE,
    Level,
    Message,
    MessageType,
    documentation_url,
    message_type,
)
from .output import FORMATS, render, to_sarif
from .registry import Analyzer, all_analyzers, analyzer
from .runner import analyze, exceeds, worst_level
from .sources import build_context, live_resources, load_paths, load_texts

__all__ = [
    "CATALOGUE",
    "FORMATS",
    "Analyzer",
    "Context",
    "Level",
    "Message",
    "MessageType",
    "all_analyzers",
    "analyze",
    "analyzer",
    "build_context",
    "documentation_url",
    "exceeds",
    "live_resources",
    "load_paths",
    "load_texts",
    "message_type",
    "render",
    "to_sarif",
    "worst_level",
]
