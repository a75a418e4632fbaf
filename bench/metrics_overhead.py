"""What the Istio-style workload metrics cost: latency and CPU with and without them.

One mesh, two pairs side by side: ``on-client → on-back`` with metrics (default) and
``off-client → off-back`` with ``NOVAMESH_TELEMETRY_PORT=0``. Batches alternate between the
pairs so machine noise hits both alike. Reports mean request latency (client → sidecar →
sidecar → echo app and back) and the CPU seconds the agents, their Envoys and the app used per 1,000
requests. Run: ``python bench/metrics_overhead.py [REQUESTS]``; figures go to BENCHMARKS.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from novamesh.testing.mesh import LocalMesh, WorkloadProcess


def _cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants (utime + stime, children included)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = (task / "children").read_text().split()
                todo.extend(int(k) for k in kids)
        except (OSError, IndexError):
            continue
    return total


def main(n: int = 2000) -> None:
    with tempfile.TemporaryDirectory() as tmp, LocalMesh(Path(tmp)) as m:
        m.start_control_plane()
        pairs: dict[str, tuple[WorkloadProcess, WorkloadProcess]] = {}
        for mode, env in (("on", {}), ("off", {"NOVAMESH_TELEMETRY_PORT": "0"})):
            back = m.echo(f"{mode}-back", env=env)
            client = m.client(f"{mode}-client", env=env)
            pairs[mode] = (client, back)
        m.wait_synced()
        elapsed = {"on": 0.0, "off": 0.0}
        cpu0 = {k: _cpu(c.proc.pid) + _cpu(b.proc.pid) for k, (c, b) in pairs.items()}
        batch = 100
        proxies = {k: httpx.Client(proxy=c.proxy_url, trust_env=False, timeout=10) for k, (c, _) in pairs.items()}
        for i in range(n // batch):
            for mode in (("on", "off") if i % 2 == 0 else ("off", "on")):
                url = f"http://{mode}-back:9080/x"
                start = time.perf_counter()
                for _ in range(batch):
                    proxies[mode].get(url).raise_for_status()
                elapsed[mode] += time.perf_counter() - start
        time.sleep(2)  # let the last access-log flush (1 s) be counted in the CPU figures
        cpu1 = {k: _cpu(c.proc.pid) + _cpu(b.proc.pid) for k, (c, b) in pairs.items()}
        for p in proxies.values():
            p.close()
        done = (n // batch) * batch
        print(f"requests per mode: {done}")
        for mode in ("off", "on"):
            print(f"metrics {mode:3}: mean latency {1000 * elapsed[mode] / done:.3f} ms, "
                  f"CPU (agents, Envoys, echo app) {1000 * (cpu1[mode] - cpu0[mode]) / done:.3f} s per 1000 requests")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
