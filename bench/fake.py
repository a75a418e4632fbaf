"""Fake workloads registered through the REST API (they never run), and a counted control plane."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import httpx

from novamesh.testing.mesh import LocalMesh, poll

ROOT = Path(__file__).resolve().parent.parent
_addresses = itertools.count(1)


def register_services(m: LocalMesh, count: int, prefix: str = "svc", start: int = 0) -> list[str]:
    """Register ``count`` ready workloads, one per service ``<prefix>-<i>``; returns their ids."""
    ids: list[str] = []
    with httpx.Client(base_url=m.url, timeout=30, trust_env=False) as c:
        for i in range(start, start + count):
            a = next(_addresses)
            body = {"service": f"{prefix}-{i}", "version": "v1", "address": f"127.1.{a // 250}.{a % 250 + 1}",
                    "ports": [{"number": 9080, "protocol": "HTTP", "name": "http"}], "ready": True}
            r = c.post("/api/v1/workloads", json=body)
            r.raise_for_status()
            ids.append(str(r.json()["id"]))
    return ids


def start_counted_control_plane(m: LocalMesh, counter: Path, timeout: float = 60.0) -> None:
    """Start the control plane through bench/cp_counted.py (counts class translations into
    ``counter``, one line each) instead of ``m.start_control_plane()``."""
    env = dict(m.env, PYTHONPATH=str(ROOT) + os.pathsep + m.env.get("PYTHONPATH", ""), BENCH_TRANSLATIONS_FILE=str(counter))
    log = open(m.root / "control-plane-1.log", "wb")
    m.cp = subprocess.Popen([sys.executable, "-m", "bench.cp_counted", "control-plane"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    m._cp_logs = 1
    poll(lambda: httpx.get(f"{m.url}/healthz", timeout=1, trust_env=False).status_code == 200, timeout, "control plane healthy")


def translations(counter: Path) -> int:
    """Class translations counted so far."""
    try:
        return len(counter.read_bytes().splitlines())
    except OSError:
        return 0
