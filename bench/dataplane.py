"""Benchmarks 1 and 2a: data-plane latency and sidecar CPU/RSS, direct vs mesh interleaved.

One mesh: ``bench-client`` (a sidecar, no app) and ``bench-server`` (a sidecar whose app is the
Envoy direct_response backend in bench/backend.py, 1 KB bodies). For each rate, short windows
alternate direct (generator → backend), mesh (generator → client sidecar → server sidecar →
backend) and, unless ``--no-bare``, a bare Envoy pair (generator → stock client Envoy → stock
server Envoy → backend, minimal static config, bench/bare.py; plaintext and mTLS between the two),
so machine noise hits every path alike. Mesh minus bare is what novamesh's sidecar configuration
adds over Envoy itself on this machine. Latency is open loop (bench/loadgen.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from novamesh.testing.mesh import LocalMesh

from . import common
from .bare import BarePair
from .loadgen import get_request, open_loop

APP_PORT = 19080
"""The backend's own port on the server workload's address (9080 there is the server sidecar's inbound listener)."""

MTLS_YAML = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
"""


def _handshakes(admin: str) -> int:
    text = httpx.get(f"{admin}/stats?filter=ssl.handshake", timeout=5, trust_env=False).text
    return sum(int(line.rsplit(":", 1)[1]) for line in text.splitlines() if line.rstrip().split(":")[-1].strip().isdigit())


def _hop(direct: dict[str, float], mesh: dict[str, float]) -> dict[str, float]:
    return {k: (mesh[k] - direct[k]) / 2 for k in ("p50", "p90", "p99")}


BARE_CHOICES = ("auto", "plain", "tls", "both", "none")


def bare_modes(choice: str, plaintext: bool) -> list[str]:
    """Which bare pairs run: ``auto`` is plaintext and mTLS, or plaintext only with --plaintext."""
    if choice not in BARE_CHOICES:
        raise SystemExit(f"--bare {choice!r}: one of {', '.join(BARE_CHOICES)}")
    if choice == "auto":
        return ["plain"] if plaintext else ["plain", "tls"]
    return {"plain": ["plain"], "tls": ["tls"], "both": ["plain", "tls"], "none": []}[choice]


def _order(modes: list[str], r: int) -> list[str]:
    """Round ``r``'s window order: the mode list rotated by r (each mode takes each position)."""
    k = r % len(modes)
    return modes[k:] + modes[:k]


def run(rates: list[int], seconds: float, rounds: int, connections: int, mtls: bool, out: Path | None, plaintext: bool = False,
        telemetry: bool = True, concurrency: int = 1, bare: str = "auto", name_suffix: str = "") -> dict[str, Any]:  # fmt: skip
    """Measure and write ``dataplane.json`` (``-plaintext``/``-strict``, ``-notelemetry``,
    ``-c<N>`` variants in the name, then ``name_suffix``)."""
    if mtls and plaintext:
        raise SystemExit("--mtls and --plaintext exclude each other")
    bares = bare_modes(bare, plaintext)
    settings: dict[str, Any] = {"csr_port": -1} if plaintext else {}  # no CA: no identities, plaintext between sidecars
    if not telemetry:
        settings["telemetry_port"] = 0  # no access-log stream to the agent: no istio_* metrics
    if concurrency != 1:
        settings["envoy_concurrency"] = concurrency
    with tempfile.TemporaryDirectory() as tmp, LocalMesh(Path(tmp), settings=settings) as m:
        m.start_control_plane()
        if mtls:
            try:
                m.apply(MTLS_YAML, "mtls.yaml")
            except Exception as exc:  # noqa: BLE001 - reported, not hidden
                raise SystemExit(f"--mtls: the control plane refused PeerAuthentication STRICT ({exc}); mTLS is not available in this build") from exc
        pythonpath = os.pathsep.join(p for p in (str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")) if p)
        server = m.run("bench-server", ports=[f"9080={APP_PORT}"], command=[sys.executable, "-m", "bench.backend"],
                       env={"PYTHONPATH": pythonpath})
        client = m.client("bench-client")
        m.wait_synced()
        server_envoy = common.find_child(server.proc.pid, "envoy", exclude="bench-backend")
        client_envoy = common.find_child(client.proc.pid, "envoy")
        host = "bench-server:9080"
        direct_req = get_request(host)
        mesh_req = get_request(host, absolute=True)  # the bare client Envoy takes the same proxy request
        result: dict[str, Any] = {"mode_requested": "strict-mtls" if mtls else "plaintext" if plaintext else "default", "connections": connections,
                                  "telemetry": telemetry, "envoy_concurrency": concurrency,
                                  "window_seconds": seconds, "rounds": rounds, "bare_modes": bares, "rates": {}}
        # Bare pairs on the two workloads' own loopback addresses, in front of the same backend.
        pairs = {b: BarePair(Path(tmp) / f"bare-{b}", client.address, server.address, (server.address, APP_PORT), tls=b == "tls",
                             concurrency=concurrency) for b in bares}  # fmt: skip
        try:
            for p in pairs.values():
                p.start()
            agents = {"client": client.proc.pid, "server": server.proc.pid}
            sidecars = {"client": client_envoy, "server": server_envoy}

            async def go() -> None:
                modes = ["direct", "mesh", *(f"bare-{b}" for b in bares)]
                for rate in rates:
                    lat: dict[str, list[float]] = {m_: [] for m_ in modes}
                    windows: dict[str, list[dict[str, float]]] = {m_: [] for m_ in modes}  # per window: a stall shows in one
                    errors = {m_: 0 for m_ in modes}
                    achieved: dict[str, list[float]] = {m_: [] for m_ in modes}
                    cpu = {m_: {"client": 0.0, "server": 0.0} for m_ in modes if m_ != "direct"}
                    agent_cpu = {"client": 0.0, "server": 0.0}
                    a0: dict[str, float] | None = None

                    def agent_done() -> None:
                        nonlocal a0
                        if a0 is not None:
                            for k, v in agents.items():
                                agent_cpu[k] += common.cpu_seconds(v) - a0[k]
                            a0 = None

                    for r in range(rounds):
                        for mode in _order(modes, r):
                            pids = sidecars if mode == "mesh" else pairs[mode[5:]].pids if mode != "direct" else {}
                            c0 = {k: common.cpu_seconds(v) for k, v in pids.items()}
                            if mode == "direct":
                                res = await open_loop(server.address, APP_PORT, direct_req, rate, seconds, connections)
                            elif mode == "mesh":
                                agent_done()  # mesh right after mesh (--no-bare: rounds alternate d,m / m,d)
                                a0 = {k: common.cpu_seconds(v) for k, v in agents.items()}
                                res = await open_loop(client.address, 15001, mesh_req, rate, seconds, connections)
                                # The access-log entries reach the agent up to 1 s (Envoy's flush interval) after
                                # their request: the agents' CPU is read at the end of the *next* window.
                            else:
                                res = await open_loop(client.address, pairs[mode[5:]].port, mesh_req, rate, seconds, connections)
                            for k, v in pids.items():
                                cpu[mode][k] += common.cpu_seconds(v) - c0[k]
                            lat[mode] += res.latencies_ms
                            w = common.summary(res.latencies_ms)
                            windows[mode].append({"round": r, "p50": w["p50"], "p99": w["p99"], "max": w["max"]})
                            errors[mode] += res.errors
                            achieved[mode].append(res.achieved_rps)
                            if mode != "mesh":
                                agent_done()
                    if a0 is not None:  # mesh was the last window
                        await asyncio.sleep(1.5)
                        agent_done()
                    d, mm = common.summary(lat["direct"]), common.summary(lat["mesh"])
                    n_mesh = max(1, len(lat["mesh"]))
                    row: dict[str, Any] = {
                        "direct_ms": d, "mesh_ms": mm, "added_per_hop_ms": _hop(d, mm), "added_pair_ms": {k: mm[k] - d[k] for k in ("p50", "p90", "p99")},
                        "errors": {"direct": errors["direct"], "mesh": errors["mesh"]},
                        "achieved_rps": {k: min(achieved[k]) for k in ("direct", "mesh")},
                        "sidecar_cpu_s_per_1000": {k: 1000 * v / n_mesh for k, v in cpu["mesh"].items()},
                        "sidecar_vcpu_at_rate": {k: v / (seconds * rounds) for k, v in cpu["mesh"].items()},
                        "sidecar_rss_mb": {"client": common.rss_mb(client_envoy), "server": common.rss_mb(server_envoy)},
                        # The agents (novamesh run/agent: SDS, metrics from the access-log stream): mesh window + the next one.
                        "agent_cpu_s_per_1000": {k: 1000 * v / n_mesh for k, v in agent_cpu.items()},
                        "bare": {},
                        "windows": windows,
                    }
                    line = (f"rate {rate}: direct p50/p90/p99 {d['p50']:.3f}/{d['p90']:.3f}/{d['p99']:.3f} ms, "
                            f"mesh {mm['p50']:.3f}/{mm['p90']:.3f}/{mm['p99']:.3f} ms")
                    for b in bares:
                        mode = f"bare-{b}"
                        bb = common.summary(lat[mode])
                        n_b = max(1, len(lat[mode]))
                        row["bare"][b] = {
                            "ms": bb, "added_per_hop_ms": _hop(d, bb), "mesh_minus_bare_per_hop_ms": _hop(bb, mm),
                            "errors": errors[mode], "achieved_rps": min(achieved[mode]),
                            "cpu_s_per_1000": {k: 1000 * v / n_b for k, v in cpu[mode].items()},
                            "vcpu_at_rate": {k: v / (seconds * rounds) for k, v in cpu[mode].items()},
                            "rss_mb": {k: common.rss_mb(v) for k, v in pairs[b].pids.items()},
                        }
                        line += f", bare-{b} {bb['p50']:.3f}/{bb['p90']:.3f}/{bb['p99']:.3f} ms"
                    result["rates"][str(rate)] = row
                    print(f"{line}, errors {errors}", flush=True)

            asyncio.run(go())
            # What the sidecars actually did: TLS handshakes on the server sidecar tell mTLS from plaintext.
            result["server_sidecar_tls_handshakes"] = _handshakes(server.admin_url)
            result["mode_observed"] = "mtls" if result["server_sidecar_tls_handshakes"] > 0 else "plaintext"
            result["bare_server_tls_handshakes"] = {b: _handshakes(p.admin_url("server")) for b, p in pairs.items()}
            # The bare pair the mesh compares with: mTLS when the sidecars did mTLS (if it ran).
            want = "tls" if result["mode_observed"] == "mtls" else "plain"
            result["bare_match"] = want if want in pairs else (bares[0] if bares else None)
        finally:
            for p in pairs.values():
                p.stop()
    name = "dataplane-plaintext" if plaintext else "dataplane-strict" if mtls else "dataplane"
    name += "" if telemetry else "-notelemetry"
    name += "" if concurrency == 1 else f"-c{concurrency}"
    name += name_suffix
    common.write(name, result, out)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench dataplane", description=__doc__)
    p.add_argument("--rates", default="500,1000,1500", help="comma-separated requests/s")
    p.add_argument("--seconds", type=float, default=5.0, help="length of one window")
    p.add_argument("--rounds", type=int, default=4, help="rounds per rate; each round has one window per path (direct, mesh, each bare pair)")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--mtls", action="store_true", help="apply PeerAuthentication STRICT (sidecar-to-sidecar mTLS)")
    p.add_argument("--plaintext", action="store_true", help="run the control plane without a CA (csr_port -1): no identities, plaintext between sidecars")
    p.add_argument("--no-telemetry", action="store_true", help="sidecars without the access-log stream behind the istio_* metrics (telemetry_port 0)")
    p.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads per sidecar (Istio's default is 2)")
    p.add_argument("--bare", default="auto", choices=BARE_CHOICES,
                   help="bare Envoy pairs measured alongside (bench/bare.py): auto = plaintext and mTLS (plaintext only with --plaintext)")
    p.add_argument("--no-bare", action="store_const", const="none", dest="bare", help="no bare Envoy pair (same as --bare none)")
    p.add_argument("--name-suffix", default="", help="appended to the result file's name (e.g. -exp1)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    run([int(r) for r in a.rates.split(",")], a.seconds, a.rounds, a.connections, a.mtls, a.out, a.plaintext,
        telemetry=not a.no_telemetry, concurrency=a.concurrency, bare=a.bare, name_suffix=a.name_suffix)


if __name__ == "__main__":
    main()
