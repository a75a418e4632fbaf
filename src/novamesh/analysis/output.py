"""Render messages as log lines, JSON, YAML or SARIF 2.1.0 (for GitHub code scanning)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from .. import __version__
from .messages import CATALOGUE, Level, Message, documentation_url

__all__ = ["FORMATS", "render", "render_log", "to_sarif"]

FORMATS: tuple[str, ...] = ("log", "json", "yaml", "sarif")
"""Output formats of ``novamesh analyze -o``."""

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {Level.ERROR: "error", Level.WARNING: "warning", Level.INFO: "note"}


def render_log(messages: Sequence[Message]) -> str:
    """One line per message, as istioctl prints it, then an indented ``fix:`` line:

    ``Error [IST0101] (VirtualService default/reviews mesh/vs.yaml:12) Referenced ...``
    """
    lines = []
    for m in messages:
        origin = " ".join(p for p in (m.resource, m.location) if p)
        lines.append(f"{m.level.label} [{m.code}] ({origin or '-'}) {m.text}")
        if m.hint:
            lines.append(f"    fix: {m.hint}")
    return "\n".join(lines) + ("\n" if lines else "")


def _uri(file: str) -> str | None:
    """A SARIF artifact URI: relative to the working directory when the file is under it (code
    scanning resolves URIs against the repository root), with forward slashes, percent-encoded.
    None for pseudo-files such as ``<stdin>``."""
    if file.startswith("<"):
        return None
    path = Path(file)
    if path.is_absolute():
        try:
            path = path.relative_to(Path(os.getcwd()))
        except ValueError:
            return path.as_uri()
    return quote(path.as_posix())


def to_sarif(messages: Sequence[Message]) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run: every message type as a rule, every message as a result.

    Results from files carry a physical location (artifact URI and start line); results about
    live resources carry only a logical location (``Kind/namespace/name``).
    """
    codes = sorted(CATALOGUE)
    rules: list[dict[str, Any]] = []
    for code in codes:
        rule: dict[str, Any] = {
            "id": code,
            "name": CATALOGUE[code].name,
            "shortDescription": {"text": CATALOGUE[code].name},
            "fullDescription": {"text": CATALOGUE[code].description},
            "help": {"text": f"{CATALOGUE[code].description} See {documentation_url(code)}"},
            "defaultConfiguration": {"level": _SARIF_LEVEL[CATALOGUE[code].level]},
        }
        if documentation_url(code).startswith("https://"):
            rule["helpUri"] = documentation_url(code)  # SARIF wants an absolute URI here
        rules.append(rule)
    results = []
    for m in messages:
        text = m.text + (f" Fix: {m.hint}" if m.hint else "")
        location: dict[str, Any] = {}
        uri = _uri(m.file) if m.file else None
        if uri is not None:
            physical: dict[str, Any] = {"artifactLocation": {"uri": uri}}
            if m.line is not None:
                physical["region"] = {"startLine": m.line}
            location["physicalLocation"] = physical
        if m.kind:
            location["logicalLocations"] = [
                {"fullyQualifiedName": f"{m.kind}/{m.namespace}/{m.name}", "kind": "resource"}
            ]
        result: dict[str, Any] = {
            "ruleId": m.code,
            "ruleIndex": codes.index(m.code),
            "level": _SARIF_LEVEL[m.level],
            "message": {"text": text},
        }
        if location:
            result["locations"] = [location]
        if m.path:
            result["properties"] = {"fieldPath": m.path}
        results.append(result)
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "novamesh-analyze",
                        "version": __version__,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }


def render(messages: Sequence[Message], fmt: str) -> str:
    """``messages`` in format ``fmt`` (one of :data:`FORMATS`); ValueError for another."""
    if fmt == "log":
        return render_log(messages)
    if fmt == "json":
        return json.dumps([m.to_dict() for m in messages], indent=2) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump([m.to_dict() for m in messages], sort_keys=False, allow_unicode=True)
    if fmt == "sarif":
        return json.dumps(to_sarif(messages), indent=2) + "\n"
    raise ValueError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")
