"""``python -m bench.cp_counted control-plane``: the control plane with class translations counted.

Wraps ``novamesh.xds.cache.translate_class`` so every class translation appends one line to
``$BENCH_TRANSLATIONS_FILE`` (the in-process ``TranslationCache.translations`` counter is not
exported on /metrics yet). Benchmark instrumentation only; nothing else changes.
"""

from __future__ import annotations

import os
from typing import Any

import novamesh.xds.cache as cache
from novamesh.cli.main import main

_path = os.environ.get("BENCH_TRANSLATIONS_FILE", "")
_orig = cache.translate_class


def _counted(*args: Any, **kw: Any) -> Any:
    if _path:
        with open(_path, "a") as f:
            f.write("1\n")
    return _orig(*args, **kw)


cache.translate_class = _counted  # type: ignore[assignment]

if __name__ == "__main__":
    main()
