"""Open-loop HTTP/1.1 load generator (asyncio, raw sockets; coordinated-omission free).

Request i is due at ``t0 + i / rate`` and goes on connection ``i % connections``. A connection
sends its next request as soon as it is due and the previous answer is in (HTTP/1.1 without
pipelining, like wrk2). Latency is measured from the *due* time, not the send time, so a slow
server shows up as latency instead of slowing the generator down (wrk2's method). The achieved
rate is reported: when the generator itself cannot keep up, latencies grow and it says so.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Run:
    """Latencies (ms, from the intended send time) and what happened."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    duration_s: float = 0.0

    @property
    def achieved_rps(self) -> float:
        return len(self.latencies_ms) / self.duration_s if self.duration_s else 0.0


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _conn(host: str, port: int, request: bytes, due: list[float], run: Run, t_end: float) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    try:
        for t in due:
            delay = t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if loop.time() > t_end:
                break
            writer.write(request)
            try:
                status = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                run.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            if status != 200:
                run.errors += 1
            run.latencies_ms.append((loop.time() - t) * 1000)
    finally:
        writer.close()


async def open_loop(host: str, port: int, request: bytes, rate: float, seconds: float, connections: int = 4) -> Run:
    """Send ``rate`` requests/s for ``seconds`` over ``connections`` connections to host:port."""
    loop = asyncio.get_running_loop()
    n = int(rate * seconds)
    t0 = loop.time() + 0.05
    schedule = [t0 + i / rate for i in range(n)]
    run = Run()
    start = time.perf_counter()
    # Stop 5 s after the last due time at the latest (bounded even against a stuck server).
    t_end = t0 + seconds + 5
    await asyncio.gather(*(_conn(host, port, request, schedule[c::connections], run, t_end) for c in range(connections)))
    run.duration_s = time.perf_counter() - start
    return run


def get_request(host_header: str, path: str = "/", absolute: bool = False) -> bytes:
    """A keep-alive GET; ``absolute`` writes the request line as a proxy request."""
    target = f"http://{host_header}{path}" if absolute else path
    return f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: novamesh-bench\r\n\r\n".encode()
