"""Benchmarks 1 and 2a: data-plane latency and sidecar CPU/RSS, direct vs mesh interleaved.

One mesh: ``bench-client`` (a sidecar, no app) and ``bench-server`` (a sidecar whose app is the
Envoy direct_response backend in bench/backend.py, 1 KB bodies). For each rate, short windows
alternate direct (generator → backend) and mesh (generator → client sidecar → server sidecar →
backend), so machine noise hits both alike. Latency is open loop (bench/loadgen.py).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from novamesh.testing.mesh import LocalMesh

from . import common
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


def run(rates: list[int], seconds: float, rounds: int, connections: int, mtls: bool, out: Path | None, plaintext: bool = False,
        telemetry: bool = True, concurrency: int = 1) -> dict[str, Any]:  # fmt: skip
    """Measure and write ``dataplane.json`` (``-plaintext``/``-strict``, ``-notelemetry``,
    ``-c<N>`` variants in the name)."""
    if mtls and plaintext:
        raise SystemExit("--mtls and --plaintext exclude each other")
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
        server = m.run("bench-server", ports=[f"9080={APP_PORT}"], command=[sys.executable, "-m", "bench.backend"],
                       env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        client = m.client("bench-client")
        m.wait_synced()
        server_envoy = common.find_child(server.proc.pid, "envoy", exclude="bench-backend")
        client_envoy = common.find_child(client.proc.pid, "envoy")
        host = "bench-server:9080"
        direct_req = get_request(host)
        mesh_req = get_request(host, absolute=True)
        result: dict[str, Any] = {"mode_requested": "strict-mtls" if mtls else "plaintext" if plaintext else "default", "connections": connections,
                                  "telemetry": telemetry, "envoy_concurrency": concurrency,
                                  "window_seconds": seconds, "rounds": rounds, "rates": {}}

        async def go() -> None:
            for rate in rates:
                lat: dict[str, list[float]] = {"direct": [], "mesh": []}
                errors = {"direct": 0, "mesh": 0}
                achieved: dict[str, list[float]] = {"direct": [], "mesh": []}
                cpu = {"client": 0.0, "server": 0.0}
                for r in range(rounds):
                    for mode in (("direct", "mesh") if r % 2 == 0 else ("mesh", "direct")):
                        c0 = {"client": common.cpu_seconds(client_envoy), "server": common.cpu_seconds(server_envoy)}
                        if mode == "direct":
                            res = await open_loop(server.address, APP_PORT, direct_req, rate, seconds, connections)
                        else:
                            res = await open_loop(client.address, 15001, mesh_req, rate, seconds, connections)
                            cpu["client"] += common.cpu_seconds(client_envoy) - c0["client"]
                            cpu["server"] += common.cpu_seconds(server_envoy) - c0["server"]
                        lat[mode] += res.latencies_ms
                        errors[mode] += res.errors
                        achieved[mode].append(res.achieved_rps)
                d, mm = common.summary(lat["direct"]), common.summary(lat["mesh"])
                n_mesh = max(1, len(lat["mesh"]))
                result["rates"][str(rate)] = {
                    "direct_ms": d, "mesh_ms": mm, "added_per_hop_ms": _hop(d, mm), "added_pair_ms": {k: mm[k] - d[k] for k in ("p50", "p90", "p99")},
                    "errors": errors, "achieved_rps": {k: min(v) for k, v in achieved.items()},
                    "sidecar_cpu_s_per_1000": {k: 1000 * v / n_mesh for k, v in cpu.items()},
                    "sidecar_vcpu_at_rate": {k: v / (seconds * rounds) for k, v in cpu.items()},
                    "sidecar_rss_mb": {"client": common.rss_mb(client_envoy), "server": common.rss_mb(server_envoy)},
                }
                print(f"rate {rate}: direct p50/p90/p99 {d['p50']:.3f}/{d['p90']:.3f}/{d['p99']:.3f} ms, "
                      f"mesh {mm['p50']:.3f}/{mm['p90']:.3f}/{mm['p99']:.3f} ms, errors {errors}")

        asyncio.run(go())
        # What the sidecars actually did: TLS handshakes on the server sidecar tell mTLS from plaintext.
        result["server_sidecar_tls_handshakes"] = _handshakes(server.admin_url)
        result["mode_observed"] = "mtls" if result["server_sidecar_tls_handshakes"] > 0 else "plaintext"
    name = "dataplane-plaintext" if plaintext else "dataplane-strict" if mtls else "dataplane"
    name += "" if telemetry else "-notelemetry"
    name += "" if concurrency == 1 else f"-c{concurrency}"
    common.write(name, result, out)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench dataplane", description=__doc__)
    p.add_argument("--rates", default="500,1000,1500", help="comma-separated requests/s")
    p.add_argument("--seconds", type=float, default=5.0, help="length of one window")
    p.add_argument("--rounds", type=int, default=4, help="direct/mesh window pairs per rate")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--mtls", action="store_true", help="apply PeerAuthentication STRICT (sidecar-to-sidecar mTLS)")
    p.add_argument("--plaintext", action="store_true", help="run the control plane without a CA (csr_port -1): no identities, plaintext between sidecars")
    p.add_argument("--no-telemetry", action="store_true", help="sidecars without the access-log stream behind the istio_* metrics (telemetry_port 0)")
    p.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads per sidecar (Istio's default is 2)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    run([int(r) for r in a.rates.split(",")], a.seconds, a.rounds, a.connections, a.mtls, a.out, a.plaintext,
        telemetry=not a.no_telemetry, concurrency=a.concurrency)


if __name__ == "__main__":
    main()
