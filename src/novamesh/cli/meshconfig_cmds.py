"""``novamesh get mesh-config``: the mesh-wide defaults in effect and where each value came from.

The control plane computes them (``GET /api/v1/mesh-config``,
:func:`novamesh.translate.mesh_defaults.effective_mesh_config`); this module only prints.
``novamesh get meshconfig default -n istio-system -o yaml`` still shows the stored resource.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml
from rich.table import Table

from .common import out

__all__ = ["print_mesh_config"]


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def print_mesh_config(data: dict[str, Any], output: str) -> None:
    """Print the answer of ``GET /api/v1/mesh-config`` as a table (configured values in bold),
    or whole as ``yaml`` / ``json``."""
    if output == "json":
        out.print_json(json.dumps(data))
        return
    if output == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
        return
    if data.get("meshConfig"):
        out.print(f"{data['meshConfig']} (revision {data.get('revision')})", highlight=False)
    else:
        out.print("no MeshConfig: every value below is a default (see docs/mesh-standards.md)", highlight=False)
    table = Table(box=None)
    for col in ("FIELD", "VALUE", "SOURCE"):
        table.add_column(col)
    for row in data.get("fields", []):
        style = "bold" if row.get("configured") else "dim"
        table.add_row(str(row["field"]), _cell(row["value"]), str(row["source"]), style=style)
    out.print(table)
