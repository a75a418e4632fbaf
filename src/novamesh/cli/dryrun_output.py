"""Printing the checks of a dry run (``apply --dry-run``, ``rollback --dry-run``): the analyzers'
messages and the guarded-apply verdict that follow the diff."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.markup import escape

from ..analysis.messages import CATALOGUE, Message
from ..analysis.output import render_log
from ..errors import Violation
from .common import err, out

__all__ = ["print_dry_run_checks"]


def _message(d: Mapping[str, Any]) -> Message | None:
    code = str(d.get("code", ""))
    if code not in CATALOGUE:
        return None
    res = d.get("resource") or {}
    line = d.get("line")
    return Message(
        code, str(d.get("message", "")), kind=str(res.get("kind", "")), namespace=str(res.get("namespace", "")),
        name=str(res.get("name", "")), file=str(d.get("file") or ""), line=line if isinstance(line, int) else None,
        path=str(d.get("path", "")), hint=str(d.get("hint", "")),
    )


def print_dry_run_checks(result: Mapping[str, Any]) -> bool:
    """Print ``analysis`` and ``guard`` of a dry-run answer; False when the real write would be
    refused by the guard (the caller exits 1)."""
    analysis = result.get("analysis")
    if analysis is not None:
        messages = [m for m in (_message(d) for d in analysis) if m is not None]
        if messages:
            out.print("analysis (live config + these files):", style="bold", highlight=False)
            out.print(render_log(messages).rstrip("\n"), highlight=False, markup=False)
        else:
            out.print("analysis (live config + these files): no findings", highlight=False)
    guard = result.get("guard")
    if guard is None:
        return True
    if not guard.get("enabled"):
        out.print("guarded apply: off (guarded_apply=false); Envoy was not asked", style="yellow", highlight=False)
        return True
    if guard.get("ok"):
        checked = guard.get("checked") or []
        detail = f"checked {len(checked)} proxy class(es): {', '.join(checked)}" if checked else guard.get("note", "")
        out.print(f"guarded apply: Envoy accepts the result ({detail})", style="green", highlight=False)
        return True
    err.print("[red]guarded apply: this change would be REFUSED[/red]", highlight=False)
    for d in guard.get("violations", []):
        v = Violation.from_dict(d)
        err.print(f"  [bold]{escape(v.location() or '-')}[/bold] {escape(f'[{v.code}]')}", highlight=False)
        err.print(f"    {v.message}", highlight=False, markup=False)
        if v.hint:
            err.print(f"    fix: {v.hint}", highlight=False, markup=False)
    return False
