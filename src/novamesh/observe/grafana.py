"""The Grafana dashboards shipped with novamesh (package data under ``dashboards/``) and the
PromQL they contain, so tests can check every query against the metrics we export."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

__all__ = ["DASHBOARDS", "load_dashboard", "queries", "metric_names"]

DASHBOARDS = ("mesh", "service", "workload", "control-plane")
"""Shipped dashboards: ``src/novamesh/observe/dashboards/<name>.json``."""

_FUNCTIONS = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "round", "vector", "max", "min", "avg",
    "count", "by", "without", "or", "and", "unless", "on", "ignoring", "group_left", "group_right",
    "label_values", "topk", "bottomk", "abs", "clamp_min", "clamp_max", "delta", "deriv", "time", "bool",
}


def load_dashboard(name: str) -> dict[str, Any]:
    """The dashboard JSON ``name`` (one of :data:`DASHBOARDS`)."""
    if name not in DASHBOARDS:
        raise ValueError(f"no dashboard {name!r}; choose one of {', '.join(DASHBOARDS)}")
    text = resources.files("novamesh.observe").joinpath("dashboards", f"{name}.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def queries(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every PromQL expression of the panels and every template-variable query."""
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield str(target["expr"])
    for var in dashboard.get("templating", {}).get("list", []):
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if var.get("type") == "query" and q:
            yield str(q)


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` reads (a lexical approximation good for our dashboards:
    label matchers, ``by``/``without`` lists, strings, ranges and numbers are skipped)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"label_values\(([^,)]*),[^)]*\)", r"\1", text)  # label_values(metric, label)
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {n for n in names if n not in _FUNCTIONS and not re.fullmatch(r"[0-9.eE]+", n)}
