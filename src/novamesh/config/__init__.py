"""novamesh.config: typed Istio config, YAML loading with line numbers, and validation.

Everything public in :mod:`.types`, :mod:`.resource`, :mod:`.names`, :mod:`.loader` and
:mod:`.validate` is re-exported here. Loading raises :class:`novamesh.errors.ConfigError`
carrying every :class:`novamesh.errors.Violation` found; validation returns violations.
"""

from __future__ import annotations

from . import loader, names, resource, types, validate
from .loader import *  # noqa: F403
from .names import *  # noqa: F403
from .resource import *  # noqa: F403
from .types import *  # noqa: F403
from .validate import *  # noqa: F403

__all__ = [
    *types.__all__,
    *resource.__all__,
    *names.__all__,
    *loader.__all__,
    *validate.__all__,
]
