"""Benchmark 5: ``novamesh run`` to the first request served through the mesh.

A control plane and a client sidecar run already. Each sample starts ``novamesh run`` with
the echo app as a new service and times until a request from the client sidecar to that
service answers 200 (polled every 20 ms), then stops it. Median of ``--samples``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from novamesh.testing.mesh import LocalMesh, poll

from . import common


def run(samples: int, out: Path | None) -> dict[str, Any]:
    """Measure ``samples`` startups; writes ``startup.json``."""
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, LocalMesh(Path(tmp)) as m:
        m.start_control_plane()
        client = m.client("bench-client")
        m.wait_synced()
        with httpx.Client(proxy=client.proxy_url, trust_env=False, timeout=2) as h:
            for i in range(samples):
                svc = f"start-{i}"
                t0 = time.perf_counter()
                wp = m.run(svc, ports=[9080], command=[sys.executable, "-m", "novamesh.testing.echo"], wait_ready=False)
                poll(lambda: h.get(f"http://{svc}:9080/").status_code == 200, 90, f"first request to {svc}", interval=0.02)
                times.append(time.perf_counter() - t0)
                print(f"sample {i}: {times[-1]:.2f} s", flush=True)
                wp.stop()
    data = {"samples_s": times, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}
    common.write("startup", data, out)
    return data


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench startup", description=__doc__)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    run(a.samples, a.out)


if __name__ == "__main__":
    main()
