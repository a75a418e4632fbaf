"""Benchmark 2b: one real sidecar's Envoy RSS as the mesh grows to 10, 100 and 1000 services.

Fake workloads (one per service) are registered through the REST API; they never run. After
each step the client sidecar must report SYNCED, then its Envoy's RSS is read from /proc.
Two meshes: without and with a namespace-wide Sidecar resource that scopes egress to one
service (``./svc-0``), which keeps the other services' clusters out of the sidecar.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import httpx

from novamesh.testing.mesh import LocalMesh, poll

from . import common
from .fake import register_services

SIDECAR_YAML = """apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
  - hosts: ["./svc-0"]
"""


def _clusters(admin: str) -> int:
    text = httpx.get(f"{admin}/stats?filter=cluster_manager.active_clusters", timeout=5, trust_env=False).text
    for line in text.splitlines():
        if line.startswith("cluster_manager.active_clusters:"):
            return int(line.split(":")[1])
    return -1


def _one(steps: list[int], scoped: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, LocalMesh(Path(tmp), settings={"lease_ttl": 1e6}) as m:
        m.start_control_plane()
        if scoped:
            m.apply(SIDECAR_YAML, "sidecar.yaml")
        client = m.client("bench-client")
        envoy = common.find_child(client.proc.pid, "envoy")
        m.wait_synced()
        rows.append({"services": 0, "rss_mb": common.rss_mb(envoy), "clusters": _clusters(client.admin_url)})
        have = 0
        for n in steps:
            register_services(m, n - have, start=have)
            have = n
            # SYNCED alone can be the previous snapshot (the registration's push may not have
            # happened yet): wait for Envoy to hold the clusters, then for the proxy to be in sync.
            want = rows[0]["clusters"] + (1 if scoped else n)  # scoped: svc-0 only
            poll(lambda: _clusters(client.admin_url) >= want, 120, f"{want} active clusters")
            m.wait_synced(timeout=120)
            rows.append({"services": n, "rss_mb": common.rss_mb(envoy), "clusters": _clusters(client.admin_url)})
            print(f"{'scoped' if scoped else 'unscoped'} {n} services: sidecar RSS {rows[-1]['rss_mb']:.1f} MB, {rows[-1]['clusters']} clusters", flush=True)
    return rows


def run(steps: list[int], out: Path | None) -> dict[str, Any]:
    """Measure both meshes and write ``sidecar_rss.json``."""
    data = {"steps": steps, "unscoped": _one(steps, False), "scoped": _one(steps, True)}
    common.write("sidecar_rss", data, out)
    return data


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench sidecar_rss", description=__doc__)
    p.add_argument("--steps", default="10,100,1000", help="comma-separated service counts")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    run([int(s) for s in a.steps.split(",")], a.out)


if __name__ == "__main__":
    main()
