"""Benchmark 4: the CA. (a) Certificates signed per second on one core with
``novamesh.security.pki.sign`` (what ``StoreCA.issue`` does per CSR), for ECDSA P-256 and RSA
2048 CA keys; (b) the time for W new workloads to get their first certificate from a running
control plane: join tokens minted through REST, then per workload a key, a CSR and the gRPC
CSR call, ``--concurrency`` at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from novamesh.security import pki
from novamesh.security.csr import request_certificate
from novamesh.testing.mesh import LocalMesh

from . import common


def sign_rate(key_type: str, seconds: float) -> dict[str, Any]:
    """Leaf certificates per second signed by a ``key_type`` CA key (one thread)."""
    ca_key = pki.generate_key(key_type)
    root = pki.self_signed_root(ca_key, "bench root", "bench", time.time(), 86400 * 365)
    leaf = pki.generate_key("ec-p256").public_key()
    n = 0
    c0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pki.sign(issuer_cert=root, issuer_key=ca_key, public_key=leaf, uris=[f"spiffe://cluster.local/ns/default/sa/w{n}"],
                 now=time.time(), ttl=3600)
        n += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"key_type": key_type, "signed": n, "wall_s": wall, "cpu_s": cpu, "per_cpu_second": n / cpu if cpu else float("nan"),
            "per_wall_second": n / wall}


async def _first_certs(target: str, roots: bytes, tokens: list[str], key_type: str, concurrency: int) -> list[float]:
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []

    async def one(i: int, token: str) -> None:
        async with sem:
            t0 = time.perf_counter()
            key = pki.generate_key(key_type)
            csr = pki.make_csr(key, pki.SpiffeId("cluster.local", "default", "default"))
            chain, _ = await request_certificate(target, roots, csr, token=token, timeout=60)
            assert b"BEGIN CERTIFICATE" in chain
            lat.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens)))
    return lat


def workloads(count: int, concurrency: int) -> dict[str, Any]:
    """``count`` first certificates from a fresh control plane (default ECDSA P-256 CA)."""
    with tempfile.TemporaryDirectory() as tmp, LocalMesh(Path(tmp)) as m:
        m.start_control_plane()
        with httpx.Client(base_url=m.url, timeout=30, trust_env=False) as c:
            t0 = time.perf_counter()
            tokens = [c.post("/api/v1/tokens", json={"namespace": "default", "service_account": "default"}).json()["token"] for _ in range(count)]
            mint_s = time.perf_counter() - t0
            roots = "".join(c.get("/api/v1/ca/bundle").json()["roots"]).encode()
        assert m.cp is not None
        cpu0 = common.cpu_seconds(m.cp.pid)
        target = f"127.0.0.1:{m.env['NOVAMESH_CSR_PORT']}"
        t0 = time.perf_counter()
        lat = asyncio.run(_first_certs(target, roots, tokens, "ec-p256", concurrency))
        total = time.perf_counter() - t0
        return {"workloads": count, "concurrency": concurrency, "token_mint_s": mint_s, "total_s": total,
                "per_second": count / total, "latency_ms": common.summary(lat), "cp_cpu_s": common.cpu_seconds(m.cp.pid) - cpu0,
                "cp_rss_mb": common.rss_mb(m.cp.pid)}


def run(seconds: float, count: int, concurrency: int, out: Path | None) -> dict[str, Any]:
    """Both parts; writes ``ca.json``."""
    data: dict[str, Any] = {"sign": [sign_rate(k, seconds) for k in ("ec-p256", "rsa-2048")]}
    for s in data["sign"]:
        print(f"{s['key_type']}: {s['per_cpu_second']:.0f} certificates per CPU second", flush=True)
    data["first_certificates"] = workloads(count, concurrency)
    f = data["first_certificates"]
    print(f"{count} workloads: first certificates in {f['total_s']:.2f} s (p99 {f['latency_ms']['p99']:.0f} ms)", flush=True)
    common.write("ca", data, out)
    return data


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench ca", description=__doc__)
    p.add_argument("--seconds", type=float, default=5.0, help="signing time per key type")
    p.add_argument("--workloads", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    run(a.seconds, a.workloads, a.concurrency, a.out)


if __name__ == "__main__":
    main()
