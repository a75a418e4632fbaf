"""`novamesh demo` starts the bundled demo, which answers through its front service."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from novamesh.testing.mesh import free_port, poll

pytestmark = pytest.mark.e2e


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "demo"
    http_port, xds_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NOVAMESH_ADDRESS_POOL"] = "127.77.1.0/24"
    env["NOVAMESH_ENVOY_CONCURRENCY"] = "1"
    cmd = [sys.executable, "-m", "novamesh", "demo", "--detach", "--data-dir", str(data),
           "--http-port", str(http_port), "--xds-port", str(xds_port)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield proc.stdout, data
    finally:
        subprocess.run([sys.executable, "-m", "novamesh", "down", "--data-dir", str(data)], env=env, capture_output=True, timeout=120)


def test_demo_answers_through_frontend(demo: tuple[str, Path]) -> None:
    out, data = demo
    assert "curl" in out and "novamesh down" in out, "the demo prints what to try next"
    proxy = next(line.split("-x ")[1].split()[0] for line in out.splitlines() if "-x http://" in line)

    def frontend() -> dict[str, object]:
        r = httpx.get("http://frontend:9080/", proxy=proxy, timeout=5, trust_env=False)
        return r.json() if r.status_code == 200 else {}

    body = poll(frontend, 30, "the demo's frontend")
    assert body["service"] == "frontend"
    called = {c["body"]["service"] for c in body["calls"] if c["status"] == 200}  # type: ignore[index,union-attr]
    assert called == {"catalog", "reviews"}
    jason = httpx.get("http://reviews:9080/", proxy=proxy, headers={"end-user": "jason"}, timeout=5, trust_env=False)
    assert jason.headers["x-echo-service"] == "reviews/v2"
    assert (data / "logs").is_dir()
