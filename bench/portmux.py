"""What the port-15012 router costs: bulk bytes and small round trips, direct vs through it.

Since xDS moved to mTLS on 15012, every byte of every sidecar's ADS stream passes the control
plane's SNI router (src/novamesh/security/portmux.py), a TCP splice in the control plane's event
loop. This measures that cost in isolation, in one process, side by side:

* bulk: ``--megabytes`` sent one way in 64 KiB writes (an initial push to many proxies);
* round trips: ``--messages`` 600-byte request/response pairs (pushes and ACKs).

Each runs directly against a sink server and then through a :class:`SniRouter` in front of the
same sink, alternating ``--rounds`` times. The process's CPU seconds (time.process_time) per run
give the router's cost per MB and per round trip. The payload is opaque after the ClientHello,
exactly as TLS records are to the router. Results: bench/results/portmux.json.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import time
from pathlib import Path
from typing import Any

from novamesh.security.portmux import SniRouter

from . import common

_CHUNK = 64 * 1024
_MSG = 600


def _client_hello() -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="xds.novamesh-control-plane")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Skips the ClientHello record, then reads everything; in round-trip mode (first byte
    ``R``) answers each _MSG-byte message with one of the same size."""
    try:
        header = await reader.readexactly(5)
        await reader.readexactly(int.from_bytes(header[3:5], "big"))
        echo, pending = None, 0
        while data := await reader.read(_CHUNK * 4):
            if echo is None:
                echo = data[:1] == b"R"
            if echo:
                pending += len(data)
                while pending >= _MSG:
                    writer.write(b"r" * _MSG)
                    pending -= _MSG
                await writer.drain()
    except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
        pass  # the run is over
    finally:
        writer.close()


async def _bulk(port: int, hello: bytes, megabytes: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(hello)
    chunk = b"b" * _CHUNK
    for _ in range(megabytes * 1024 * 1024 // _CHUNK):
        writer.write(chunk)
        await writer.drain()
    writer.write_eof()
    await reader.read()
    writer.close()


async def _round_trips(port: int, hello: bytes, messages: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(hello)
    msg = b"R" * _MSG
    for _ in range(messages):
        writer.write(msg)
        await writer.drain()
        await reader.readexactly(_MSG)
    writer.close()


async def _measure(megabytes: int, messages: int, rounds: int) -> dict[str, Any]:
    sink = await asyncio.start_server(_sink, "127.0.0.1", 0)
    sink_port = int(sink.sockets[0].getsockname()[1])
    router = SniRouter("127.0.0.1", 0, lambda sni: sink_port, hello_timeout=10)
    router_port = await router.start()
    hello = _client_hello()
    runs: dict[str, dict[str, list[float]]] = {k: {"direct": [], "router": []} for k in ("bulk", "round_trips")}
    try:
        for _ in range(rounds):
            for path, port in (("direct", sink_port), ("router", router_port)):
                for kind, work in (("bulk", _bulk(port, hello, megabytes)), ("round_trips", _round_trips(port, hello, messages))):
                    cpu0 = time.process_time()
                    await work
                    runs[kind][path].append(time.process_time() - cpu0)
    finally:
        await router.stop()
        sink.close()
    med = {k: {p: statistics.median(v) for p, v in d.items()} for k, d in runs.items()}
    return {
        "megabytes": megabytes, "messages": messages, "message_bytes": _MSG, "rounds": rounds,
        "cpu_s_median": med,
        "router_cpu_ms_per_mb": round((med["bulk"]["router"] - med["bulk"]["direct"]) / megabytes * 1000, 3),
        "router_cpu_us_per_round_trip": round((med["round_trips"]["router"] - med["round_trips"]["direct"]) / messages * 1e6, 2),
    }


def run(megabytes: int, messages: int, rounds: int, out: Path | None) -> dict[str, Any]:
    """Measure and write ``portmux.json``."""
    result = asyncio.run(_measure(megabytes, messages, rounds))
    print(f"router: {result['router_cpu_ms_per_mb']} CPU ms per MB, {result['router_cpu_us_per_round_trip']} CPU µs per round trip")
    common.write("portmux", result, out)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench portmux", description=__doc__)
    p.add_argument("--megabytes", type=int, default=200, help="bulk bytes per run")
    p.add_argument("--messages", type=int, default=5000, help="round trips per run")
    p.add_argument("--rounds", type=int, default=3, help="direct/router run pairs")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    run(a.megabytes, a.messages, a.rounds, a.out)


if __name__ == "__main__":
    main()
