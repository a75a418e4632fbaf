"""`novamesh up -d` of an HA stack (`controlPlane: {replicas: 3, store: etcd}`): a local
three-member etcd, three control-plane replicas, an echo workload and a client; requests cross
the mesh, every replica sees the workloads, and `down` leaves no process behind."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from novamesh.stack import STATE_FILE
from novamesh.stack_ha import PORT_STRIDE
from novamesh.testing.ha import etcd_binary
from novamesh.testing.mesh import poll

pytestmark = pytest.mark.e2e


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _bases() -> tuple[int, int]:
    """HTTP and xDS base ports whose replica ports (+PORT_STRIDE*i, CSR at xDS+2) are all free."""
    rnd = random.Random()
    for _ in range(200):
        http, xds = rnd.randrange(20000, 29000, 10), rnd.randrange(30000, 39000, 10)
        wanted = [p + PORT_STRIDE * i for i in range(3) for p in (http, xds, xds + 2)]
        if all(_free(p) for p in wanted):
            return http, xds
    raise RuntimeError("no free port block")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and _alive(int(proc.name)):
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.append(f"{proc.name}: {cmd[:200]}")
    return found


def test_up_ha_stack_serves_through_the_mesh_and_down_stops_everything(tmp_path: Path) -> None:
    if etcd_binary() is None:
        pytest.skip("the etcd binary is not installed (apt-get install etcd-server; .ci/run does it)")
    http, xds = _bases()
    data = tmp_path / "data"
    stack = tmp_path / "stack.yaml"
    stack.write_text(f"""name: ha
controlPlane:
  dataDir: {data}
  httpPort: {http}
  xdsPort: {xds}
  replicas: 3
  store: etcd
  settings: {{envoy_concurrency: 1, debounce_quiet: 0.1}}
workloads:
  - service: reviews
    ports: [9080]
    command: ["python", "-m", "novamesh.testing.echo"]
  - service: client
    command: ["python", "-c", "import time; time.sleep(3600)"]
""")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NOVAMESH_ADDRESS_POOL"] = f"127.{random.randint(64, 250)}.{random.randint(1, 250)}.0/24"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "novamesh", *args], env=env, capture_output=True, text=True, timeout=240, check=False)

    up = cli("up", "-d", "-f", str(stack))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((data / STATE_FILE).read_text())
        roles = sorted(p["role"] for p in state["processes"])
        assert roles == ["client", "control-plane", "control-plane", "control-plane", "etcd", "etcd", "etcd", "workload"]
        urls = [f"http://127.0.0.1:{http + PORT_STRIDE * i}" for i in range(3)]
        for url in urls:  # every replica answers and sees both workloads (shared etcd)
            poll(lambda url=url: len(httpx.get(f"{url}/api/v1/workloads", timeout=5, trust_env=False).json()) == 2, 30,
                 f"both workloads on {url}")  # fmt: skip
        client = next(w for w in httpx.get(f"{urls[1]}/api/v1/workloads", timeout=5, trust_env=False).json() if w["service"] == "client")

        def answer() -> dict[str, object] | None:
            r = httpx.get("http://reviews:9080/hello", proxy=f"http://{client['address']}:15001", timeout=5, trust_env=False)
            return dict(r.json()) if r.status_code == 200 else None

        body = poll(answer, 60, "reviews answering through the client's sidecar", interval=0.3)
        assert body["service"] == "reviews" and body["path"] == "/hello"
    finally:
        down = cli("down", "-f", str(stack))
    assert down.returncode == 0, down.stdout + down.stderr
    pids = [int(p["pid"]) for p in state["processes"]]
    assert [pid for pid in pids if _alive(pid)] == []
    assert _processes_mentioning(str(tmp_path)) == []  # no Envoy, app or etcd left either
    assert not (data / STATE_FILE).exists()
    assert all(_free(http + PORT_STRIDE * i) for i in range(3))
