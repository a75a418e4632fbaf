"""The bundled demo application: ``stack.yaml`` (four services as six echo workloads, and a load generator) and
``routing.yaml`` (a header match and an 80/20 canary for ``reviews``). ``novamesh demo`` runs it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["stack_file", "routing_file"]


def stack_file() -> Path:
    """Path of the bundled demo stack file."""
    return Path(str(resources.files(__name__).joinpath("stack.yaml")))


def routing_file() -> Path:
    """Path of the demo's routing config (DestinationRule and VirtualService for reviews)."""
    return Path(str(resources.files(__name__).joinpath("routing.yaml")))
