"""HA stacks: ``controlPlane: {replicas: 3, store: etcd}`` in a stack file.

``novamesh up`` then starts, instead of one control plane on SQLite:

1. a local etcd cluster of three members (one for ``replicas: 1`` on etcd) on loopback, data under
   ``<stack data dir>/etcd`` (its ports are chosen once and kept in ``etcd/ports.json``, so the
   cluster and the config survive ``down``/``up``);
2. ``replicas`` control-plane processes sharing it; replica ``i`` listens on every control-plane
   port plus ``PORT_STRIDE * i`` (API 15014, 15114, 15214 by default; the same for xDS and CSR),
   data under ``<stack data dir>/replica-<i>``;
3. workloads with every replica's API URL and xDS address (their certificates come from replica
   0's CSR service).

Every process is recorded in the stack's state file, so ``down`` stops them all: workloads
first, then the replicas, then etcd. Errors: :class:`~novamesh.errors.NovameshError` naming
the missing etcd binary, a port in use, or the process that failed to start.
"""

from __future__ import annotations

import json
import shutil
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from .controlplane import etcd_local
from .errors import ControlPlaneUnavailable, NovameshError

if TYPE_CHECKING:
    from .stack import StackRunner
    from .stack_procs import Progress

__all__ = ["PORT_STRIDE", "STORES", "parse_ha", "replica_ports", "start_ha_control_plane"]

PORT_STRIDE = 100
"""Replica ``i`` listens on each control-plane port + ``PORT_STRIDE * i``."""

STORES = ("sqlite", "etcd")
MAX_REPLICAS = 5


def parse_ha(check: Any, cp: dict[str, Any]) -> tuple[int, str]:
    """``(replicas, store)`` of a ``controlPlane`` mapping, problems reported to ``check`` (the
    stack file checker, which knows their lines)."""
    replicas, store = 1, "sqlite"
    if "replicas" in cp:
        raw = cp["replicas"]
        if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_REPLICAS:
            check.add("controlPlane.replicas", f"must be an integer from 1 to {MAX_REPLICAS}, got {raw!r}")
        else:
            replicas = raw
    if "store" in cp:
        if cp["store"] not in STORES:
            check.add("controlPlane.store", f"must be one of {', '.join(STORES)}, got {cp['store']!r}")
        else:
            store = str(cp["store"])
    if replicas > 1 and store != "etcd":
        check.add("controlPlane.replicas", f"{replicas} replicas need a shared store", hint="add `store: etcd` to controlPlane")
    return replicas, store


def replica_ports(runner: StackRunner, index: int) -> tuple[int, int, int]:
    """``(http, xds, csr)`` ports of replica ``index``."""
    s, off = runner.settings, PORT_STRIDE * index
    return s.http_port + off, s.xds_port + off, s.csr_port + off


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _etcd_plan(root: Path, members: int) -> tuple[list[etcd_local.EtcdMemberPlan], str]:
    """The members (ports kept in ``root/ports.json`` from the first ``up`` on) and the token."""
    saved = root / "ports.json"
    try:
        data: dict[str, Any] = json.loads(saved.read_text())
        ports = [(int(c), int(p)) for c, p in data["ports"]]
        token = str(data["token"])
        if len(ports) != members:
            raise ValueError("member count changed")
    except (OSError, ValueError, KeyError, TypeError):
        ports = [(_free_port(), _free_port()) for _ in range(members)]
        token = f"novamesh-{uuid.uuid4().hex[:8]}"
        for i in range(members):  # a new cluster: members must not find an old one's data
            _wipe(root / f"m{i}")
        root.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps({"ports": ports, "token": token}))
    plans = [etcd_local.EtcdMemberPlan(f"m{i}", c, p, root / f"m{i}") for i, (c, p) in enumerate(ports)]
    return plans, token


def _wipe(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def start_ha_control_plane(runner: StackRunner, say: Progress) -> None:
    """Start etcd and the replicas of ``runner``'s stack (see the module docstring) and point
    the runner's workloads at every replica."""
    spec = runner.stack.control_plane
    binary = etcd_local.etcd_binary_or_fail()
    ports = [replica_ports(runner, i) for i in range(spec.replicas)]
    taken = [p for trio in ports[1:] for p in trio[:2] if not _port_free(p)] + [t[2] for t in ports if not _port_free(t[2])]
    if taken:
        raise NovameshError(f"control-plane ports {', '.join(map(str, sorted(set(taken))))} are in use; replica i uses each "
                            f"port + {PORT_STRIDE}*i: pick other controlPlane.httpPort/xdsPort")  # fmt: skip
    members, token = _etcd_plan(runner.data_dir / "etcd", 3 if spec.replicas > 1 else 1)
    say(f"starting etcd ({len(members)} member(s)) under {runner.data_dir / 'etcd'}")
    etcd_procs = [runner._spawn("etcd", f"etcd-{m.name}", etcd_local.member_argv(binary, m, members, token),
                                runner.log_dir / f"etcd-{m.name}.log", runner.process_env()) for m in members]  # fmt: skip
    runner._wait(lambda: all(etcd_local.member_healthy(m) for m in members), runner.control_plane_timeout, etcd_procs,
                 "etcd to be healthy")  # fmt: skip
    urls = [f"http://127.0.0.1:{http}" for http, _, _ in ports]
    runner.settings = runner.settings.replace(
        store=etcd_local.store_url(members),
        control_plane_url=",".join(urls),
        xds_addresses=",".join(f"127.0.0.1:{xds}" for _, xds, _ in ports),
        csr_addresses=",".join(f"127.0.0.1:{csr}" for _, _, csr in ports),
    )
    runner.agent_url = ",".join(urls)
    for i, (http, xds, csr) in enumerate(ports):
        say(f"starting control-plane replica {i} on {urls[i]}")
        data = runner.data_dir / f"replica-{i}"
        argv = [*runner.novamesh_command, "control-plane", "--data-dir", str(data), "--http-port", str(http), "--xds-port", str(xds)]
        proc = runner._spawn("control-plane", f"control-plane-{i}", argv, runner.log_dir / f"control-plane-{i}.log",
                             runner.process_env({"NOVAMESH_CSR_PORT": str(csr), "NOVAMESH_DATA_DIR": str(data)}))  # fmt: skip

        def healthy(url: str = urls[i]) -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1.0, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            runner._wait(healthy, runner.control_plane_timeout, [*etcd_procs, proc], f"control-plane replica {i} to answer /healthz")
        except TimeoutError as exc:
            raise ControlPlaneUnavailable(str(exc)) from None
    say(f"{spec.replicas} control-plane replicas are up on etcd")
