"""Benchmark 3: the control plane under N simulated proxies' ADS streams over M services.

Each simulated proxy (one grpc.aio stream, all in this process) acks like Envoy: it subscribes
to CDS and LDS, then EDS for the EDS clusters it got and RDS for the route names its listeners
name, and ACKs every response with its version and nonce. Proxies belong to ``--classes``
client services (so to that many proxy classes). Measured: after all proxies are in sync, the
time from a config change (a DestinationRule applied through REST, which changes every
proxy's CDS) to each proxy's last ACK; the same for one endpoint joining; endpoint churn at
R workloads/s; control-plane CPU and RSS from /proc; bytes sent; class translations per change.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format

from novamesh.model.proxy import METADATA_KEY, Proxy
from novamesh.testing.mesh import LocalMesh, poll

from . import common
from .fake import register_services, start_counted_control_plane, translations

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

_eds_names: dict[str, list[str]] = {}  # CDS version -> EDS names (parsed once per version)
_rds_names: dict[str, list[str]] = {}


def _cds_names(resp: Any) -> list[str]:
    names = _eds_names.get(resp.version_info)
    if names is None:
        names = []
        for a in resp.resources:
            c = cluster_pb2.Cluster()
            a.Unpack(c)
            if c.type == cluster_pb2.Cluster.EDS:
                names.append(c.eds_cluster_config.service_name or c.name)
        _eds_names[resp.version_info] = names = sorted(names)
    return names


def _lds_names(resp: Any) -> list[str]:
    names = _rds_names.get(resp.version_info)
    if names is None:
        found: set[str] = set()
        for a in resp.resources:
            lis = listener_pb2.Listener()
            a.Unpack(lis)
            for fc in [*lis.filter_chains, lis.default_filter_chain]:
                for f in fc.filters:
                    if f.typed_config.type_url.endswith("HttpConnectionManager"):
                        h = hcm_pb2.HttpConnectionManager()
                        f.typed_config.Unpack(h)
                        if h.HasField("rds"):
                            found.add(h.rds.route_config_name)
        _rds_names[resp.version_info] = names = sorted(found)
    return names


@dataclass
class SimProxy:
    """One simulated Envoy."""

    proxy: Proxy
    last_ack: float = 0.0
    acks: int = 0
    bytes_in: int = 0
    synced: set[str] = field(default_factory=set)
    error: str = ""
    names: dict[str, list[str]] = field(default_factory=dict)

    def node(self) -> base_pb2.Node:
        n = base_pb2.Node(id=self.proxy.node_id(), cluster=f"{self.proxy.service}.{self.proxy.namespace}")
        json_format.ParseDict({METADATA_KEY: self.proxy.to_metadata()}, n.metadata)
        return n

    async def run(self, channel: grpc.aio.Channel, stop: asyncio.Event) -> None:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        out: asyncio.Queue[Any] = asyncio.Queue()
        node = self.node()
        out.put_nowait(discovery_pb2.DiscoveryRequest(node=node, type_url=CDS))
        out.put_nowait(discovery_pb2.DiscoveryRequest(node=node, type_url=LDS))

        async def requests() -> Any:
            while True:
                item = await out.get()
                if item is None:
                    return
                yield item

        call = stub.StreamAggregatedResources(requests())
        waiter = asyncio.ensure_future(stop.wait())
        try:
            await self._loop(call, out, stop, waiter)
        except Exception as exc:  # noqa: BLE001 - counted and reported, the benchmark goes on
            self.error = type(exc).__name__ + ": " + str(exc)[:200]
        finally:
            waiter.cancel()
            out.put_nowait(None)
            call.cancel()

    async def _loop(self, call: Any, out: asyncio.Queue[Any], stop: asyncio.Event, waiter: Any) -> None:
        while not stop.is_set():
            read = asyncio.ensure_future(call.read())
            done, _ = await asyncio.wait({read, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if read not in done:
                read.cancel()
                break
            resp = read.result()
            if resp is grpc.aio.EOF:
                break
            self.bytes_in += resp.ByteSize()
            t = resp.type_url
            names = self.names.get(t, [])
            out.put_nowait(discovery_pb2.DiscoveryRequest(type_url=t, version_info=resp.version_info, response_nonce=resp.nonce,
                                                          resource_names=names))
            self.last_ack = time.perf_counter()
            self.acks += 1
            self.synced.add(t)
            follow = {CDS: (EDS, _cds_names), LDS: (RDS, _lds_names)}.get(t)
            if follow:
                ft, fn = follow
                new = fn(resp)
                if new != self.names.get(ft):
                    self.names[ft] = new
                    out.put_nowait(discovery_pb2.DiscoveryRequest(type_url=ft, resource_names=new))


class CpProbe:
    """CPU and RSS of the control-plane process."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = 0.0
        self.cpu0 = common.cpu_seconds(pid)

    def sample(self) -> float:
        rss = common.rss_mb(self.pid)
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    def cpu(self) -> float:
        return common.cpu_seconds(self.pid) - self.cpu0


async def _quiet(proxies: list[SimProxy], probe: CpProbe, quiet_s: float, timeout: float, expect: bool = False) -> None:
    """Until no proxy has ACKed anything for ``quiet_s`` seconds, or ``timeout``. With
    ``expect``, an ACK after the call must come first (a push may take longer than ``quiet_s``
    to start when the control plane is busy translating)."""
    since = time.perf_counter()
    deadline = since + timeout
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
        probe.sample()
        last = max(p.last_ack for p in proxies)
        if expect and last < since:
            continue
        if time.perf_counter() - max(since, last) > quiet_s:
            return


async def _measure_change(m: LocalMesh, proxies: list[SimProxy], probe: CpProbe, counter: Path, action: Any,
                          quiet_s: float) -> dict[str, Any]:
    tr0, acks0, bytes0, cpu0 = translations(counter), sum(p.acks for p in proxies), sum(p.bytes_in for p in proxies), probe.cpu()
    before = {id(p): p.acks for p in proxies}
    t0 = time.perf_counter()
    await asyncio.to_thread(action)
    t_api = time.perf_counter() - t0
    await _quiet(proxies, probe, quiet_s, timeout=180, expect=True)
    lat = [(p.last_ack - t0) * 1000 for p in proxies if p.acks > before[id(p)]]
    return {"proxies_updated": len(lat), "api_call_ms": t_api * 1000, "last_ack_ms": common.summary(lat),
            "total_ms": max(lat) if lat else float("nan"), "translations": translations(counter) - tr0,
            "acks": sum(p.acks for p in proxies) - acks0, "bytes_sent": sum(p.bytes_in for p in proxies) - bytes0,
            "cp_cpu_s": probe.cpu() - cpu0, "cp_rss_mb": probe.sample()}


def _dr(i: int, m: int) -> str:
    return (f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: bench-dr, namespace: default}}\n"
            f"spec:\n  host: svc-{i % m}\n  trafficPolicy:\n    connectionPool:\n      tcp: {{maxConnections: {100 + i}}}\n")


def _start_profile(pid: int, path: Path, native: bool = False) -> subprocess.Popen[bytes]:
    """py-spy (``pip install py-spy``) sampling the control plane into ``path`` (collapsed stacks);
    ``native`` adds C frames (gRPC, protobuf), which needs the process paused per sample."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    mode = ["--native"] if native else ["--nonblocking"]
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", *mode, "-o", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_profile(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        spy.wait(60)


async def scenario(m: LocalMesh, counter: Path, n: int, services: int, classes: int, churn_rate: float, churn_s: float, quiet_s: float,
                   profile: Path | None = None, profile_changes_only: bool = False, profile_native: bool = False,
                   namespaces: bool = False) -> dict[str, Any]:
    assert m.cp is not None
    probe = CpProbe(m.cp.pid)
    # One namespace per client service with --namespaces: then each is its own proxy class.
    proxies = [SimProxy(Proxy(id=f"sim-{i}", service=f"client-{i % classes}", address=f"127.2.{i // 250}.{i % 250 + 1}",
                              namespace=f"team-{i % classes}" if namespaces else "default")) for i in range(n)]  # fmt: skip
    stop = asyncio.Event()
    target, options = f"127.0.0.1:{m.env['NOVAMESH_XDS_PORT']}", [("grpc.max_receive_message_length", 256 * 2**20)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(max(1, n // 100))]
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(p.run(channels[i % len(channels)], stop)) for i, p in enumerate(proxies)]
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline and not all({CDS, LDS, EDS, RDS} <= p.synced or p.error for p in proxies):
        await asyncio.sleep(0.1)
        probe.sample()
    await _quiet(proxies, probe, quiet_s, 60)
    result: dict[str, Any] = {"proxies": n, "services": services, "classes": classes, "namespaces": namespaces,
                              "initial_sync_s": time.perf_counter() - t0,
                              "all_synced": all({CDS, LDS, EDS, RDS} <= p.synced for p in proxies),
                              "synced_proxies": sum({CDS, LDS, EDS, RDS} <= p.synced for p in proxies),
                              "stream_errors": sorted({p.error for p in proxies if p.error})[:5],
                              "cp_rss_mb_synced": probe.sample(), "cp_cpu_s_initial": probe.cpu(),
                              "initial_bytes": sum(p.bytes_in for p in proxies)}
    spy = _start_profile(m.cp.pid, profile, profile_native) if profile else None
    result["config_change"] = [
        await _measure_change(m, proxies, probe, counter, lambda i=i: m.apply(_dr(i, services), "bench-dr.yaml"), quiet_s) for i in range(2)
    ]
    if profile_changes_only:
        _stop_profile(spy)
        spy = None
    ep: list[dict[str, Any]] = []
    for i in range(2):
        ep.append(await _measure_change(m, proxies, probe, counter, lambda i=i: register_services(m, 1, "svc", start=i), quiet_s))
    result["endpoint_join"] = ep
    # Churn: join and leave at churn_rate workloads/s for churn_s seconds.
    # Leaving workloads come from a pool registered beforehand, so a join and the next leave
    # never cancel out inside one debounce window.
    events = int(churn_rate * churn_s)
    ids = await asyncio.to_thread(register_services, m, events // 2 + 1, "svc", 0)
    await _quiet(proxies, probe, quiet_s, 60)
    cpu0, tr0, bytes0 = probe.cpu(), translations(counter), sum(p.bytes_in for p in proxies)
    with httpx.Client(base_url=m.url, timeout=30, trust_env=False) as c:
        start = time.perf_counter()
        behind = 0.0
        for k in range(events):
            due = start + k / churn_rate
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            behind = max(behind, time.perf_counter() - due)
            if k % 2 == 0 or not ids:
                ids.append((await asyncio.to_thread(register_services, m, 1, "svc", k % min(20, services)))[0])
            else:
                await asyncio.to_thread(c.delete, f"/api/v1/workloads/{ids.pop(0)}")
        sent_s = time.perf_counter() - start
    t_end = time.perf_counter()
    await _quiet(proxies, probe, quiet_s, 120)
    result["churn"] = {"rate_per_s": churn_rate, "events": events, "seconds": sent_s, "max_behind_schedule_s": behind,
                       "settle_after_last_event_ms": max(0.0, (max(p.last_ack for p in proxies) - t_end) * 1000),
                       "cp_cpu_s": probe.cpu() - cpu0, "cp_vcpu": (probe.cpu() - cpu0) / max(sent_s, 1e-9),
                       "translations": translations(counter) - tr0, "bytes_sent": sum(p.bytes_in for p in proxies) - bytes0}
    result["cp_rss_mb_peak"] = probe.peak_rss
    _stop_profile(spy)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        await ch.close()
    return result


def run(sizes: list[tuple[int, int]], classes: int, churn_rate: float, churn_s: float, quiet_s: float, out: Path | None,
        profile: Path | None = None, profile_changes_only: bool = False, profile_native: bool = False,
        namespaces: bool = False) -> dict[str, Any]:
    """One control plane per (N proxies, M services); writes ``ads_load.json``."""
    results: list[dict[str, Any]] = []
    for n, services in sizes:
        with tempfile.TemporaryDirectory() as tmp, LocalMesh(Path(tmp), settings={"lease_ttl": 1e6}) as m:
            counter = Path(tmp) / "translations"
            start_counted_control_plane(m, counter)
            register_services(m, services)
            poll(lambda: len(m.workloads_info()) >= services, 60, "services registered")
            r = asyncio.run(scenario(m, counter, n, services, classes, churn_rate, churn_s, quiet_s, profile,
                                            profile_changes_only, profile_native, namespaces))
            cc = r["config_change"][-1]
            print(f"N={n} M={services}: initial sync {r['initial_sync_s']:.1f}s; change→last ACK p50 {cc['last_ack_ms']['p50']:.0f} ms "
                  f"p99 {cc['last_ack_ms']['p99']:.0f} ms total {cc['total_ms']:.0f} ms; translations {cc['translations']}; "
                  f"CP RSS peak {r['cp_rss_mb_peak']:.0f} MB", flush=True)
            results.append(r)
            # each size on its own, in case a later one is cut short
            common.write(f"ads_load-{n}x{services}{'-ns' if namespaces else ''}", r, out)
    data = {"classes": classes, "namespaces": namespaces, "runs": results}
    common.write("ads_load-ns" if namespaces else "ads_load", data, out)
    return data


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench ads_load", description=__doc__)
    p.add_argument("--sizes", default="100x100,1000x100,2000x100,100x1000",
                   help="NxM pairs: proxies x services (1000x1000 and up take minutes per change on 2 cores; opt in)")
    p.add_argument("--classes", type=int, default=10, help="client services the proxies spread over (one proxy class, unless --namespaces)")
    p.add_argument("--namespaces", action="store_true", help="each client service in its own namespace: --classes distinct proxy classes")
    p.add_argument("--churn-rate", type=float, default=10.0, help="workload join/leave events per second")
    p.add_argument("--churn-seconds", type=float, default=5.0)
    p.add_argument("--quiet", type=float, default=1.0, help="seconds without an ACK that count as converged")
    p.add_argument("--profile", type=Path, default=None,
                   help="py-spy the control plane during the changes and churn (collapsed stacks to this file)")
    p.add_argument("--profile-changes-only", action="store_true", help="stop the profile after the config changes (no joins, no churn)")
    p.add_argument("--profile-native", action="store_true", help="include C frames in the profile (slows the control plane)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    sizes = [(int(s.split("x")[0]), int(s.split("x")[1])) for s in a.sizes.split(",")]
    run(sizes, a.classes, a.churn_rate, a.churn_seconds, a.quiet, a.out, a.profile, a.profile_changes_only, a.profile_native,
        a.namespaces)


if __name__ == "__main__":
    main()
