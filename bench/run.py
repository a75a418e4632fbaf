"""Entry point: ``python -m bench {dataplane,sidecar_rss,ads_load,ca,startup,portmux,metrics_overhead,all} [ARGS]``."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NAMES = ["dataplane", "sidecar_rss", "ads_load", "ca", "startup", "portmux"]
MODULES = {"dataplane": "bench.dataplane", "sidecar_rss": "bench.sidecar_rss", "ads_load": "bench.ads_load",
           "ca": "bench.ca_bench", "startup": "bench.startup", "portmux": "bench.portmux"}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return
    name, rest = args[0], args[1:]
    if name == "metrics_overhead":
        subprocess.run([sys.executable, str(Path(__file__).parent / "metrics_overhead.py"), *rest], check=True)
        return
    if name == "all":
        for n in NAMES:
            print(f"== {n}", flush=True)
            importlib.import_module(MODULES[n]).main(rest)
        return
    if name not in MODULES:
        raise SystemExit(f"unknown benchmark {name!r}; one of {', '.join(NAMES)}, metrics_overhead, all")
    importlib.import_module(MODULES[name]).main(rest)


if __name__ == "__main__":
    main()
