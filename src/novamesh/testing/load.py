"""Load for tests and the demo: :func:`run_load` (N requests, counted) and :class:`Traffic`
(steady background requests, every result kept with its time).

Both count answers by status and by the ``x-echo-service`` header the echo app sets, so a test can
say "80 % went to reviews/v1" or "no request failed while the route changed".

``python -m novamesh.testing.load --url URL [--rate R] [--count N] [--duration S]
[--header K:V ...]`` sends at ``R`` requests/s (default 2) until stopped (or N requests / S seconds)
through ``HTTP_PROXY`` from its environment, printing a one-line summary every few seconds.
"""

from __future__ import annotations

import argparse
import collections
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from .waiting import wait_until

__all__ = ["LoadResult", "run_load", "Sample", "Traffic", "main"]

VERSION_HEADER = "x-echo-service"


@dataclass(frozen=True)
class _Outcome:
    status: int | None
    version: str | None
    body: Any
    error: str | None

    @property
    def key(self) -> int | str:
        """What ``statuses`` counts: the status code, or ``error:<ExceptionName>``."""
        if self.status is not None:
            return self.status
        return f"error:{(self.error or 'Error').split(':', 1)[0]}"


def _client(proxy: str | None, headers: Mapping[str, str] | None, timeout: float, trust_env: bool, size: int) -> httpx.Client:
    return httpx.Client(
        proxy=proxy,
        trust_env=trust_env,
        headers=dict(headers or {}),
        timeout=timeout,
        limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
    )


def _send(client: httpx.Client, url: str, want_body: bool) -> _Outcome:
    try:
        response = client.get(url)
    except Exception as exc:  # noqa: BLE001 - any failure is a result to count, not a crash
        return _Outcome(None, None, None, f"{type(exc).__name__}: {exc}")
    body: Any = None
    if want_body:
        try:
            body = response.json()
        except ValueError:
            body = None
    return _Outcome(response.status_code, response.headers.get(VERSION_HEADER), body, None)


@dataclass
class LoadResult:
    """What :func:`run_load` saw."""

    statuses: collections.Counter[int | str] = field(default_factory=collections.Counter)
    """Answers by status code; transport failures as ``"error:<ExceptionName>"``."""
    versions: collections.Counter[str] = field(default_factory=collections.Counter)
    """Answers by ``x-echo-service`` header (``service/version``)."""
    bodies: list[Any] = field(default_factory=list)
    """Parsed JSON bodies (the first ``max_bodies``)."""
    errors: list[str] = field(default_factory=list)
    """Transport errors as ``ExceptionName: message`` (the first ``max_bodies``)."""
    elapsed: float = 0.0

    @property
    def total(self) -> int:
        """Requests sent."""
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        """Answers with a 2xx status."""
        return sum(n for key, n in self.statuses.items() if isinstance(key, int) and 200 <= key < 300)

    @property
    def failed(self) -> int:
        """Everything that was not a 2xx answer (other statuses and transport errors)."""
        return self.total - self.ok

    def summary(self) -> str:
        """One line for logs and assertion messages."""
        return f"{self.total} requests in {self.elapsed:.1f}s: ok={self.ok} failed={self.failed} " \
               f"statuses={dict(self.statuses)} versions={dict(self.versions)}"


def run_load(
    url: str,
    *,
    count: int,
    concurrency: int = 4,
    proxy: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
    max_seconds: float = 60.0,
    trust_env: bool = False,
    max_bodies: int = 2000,
) -> LoadResult:
    """Send ``count`` GET requests to ``url`` from ``concurrency`` threads sharing keep-alive
    connections, through ``proxy`` when given (``trust_env=True`` also honours ``HTTP_PROXY``),
    and count the answers. Stops early (sending fewer) when ``max_seconds`` pass."""
    result = LoadResult()
    lock = threading.Lock()
    issued = 0
    started = time.monotonic()
    deadline = started + max_seconds

    def worker(client: httpx.Client) -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= count or time.monotonic() >= deadline:
                    return
                issued += 1
                want_body = len(result.bodies) < max_bodies
            outcome = _send(client, url, want_body)
            with lock:
                result.statuses[outcome.key] += 1
                if outcome.version is not None:
                    result.versions[outcome.version] += 1
                if outcome.body is not None and len(result.bodies) < max_bodies:
                    result.bodies.append(outcome.body)
                if outcome.error is not None and len(result.errors) < max_bodies:
                    result.errors.append(outcome.error)

    workers = max(1, min(concurrency, count))
    with _client(proxy, headers, timeout, trust_env, workers) as client:
        threads = [threading.Thread(target=worker, args=(client,), daemon=True) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    result.elapsed = time.monotonic() - started
    return result


@dataclass(frozen=True)
class Sample:
    """One request sent by :class:`Traffic`."""

    at: float
    """When it was sent, seconds since the traffic started (compare with :meth:`Traffic.now`)."""
    status: int | None
    version: str | None
    error: str | None
    latency: float

    @property
    def ok(self) -> bool:
        """A 2xx answer."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def detail(self) -> str:
        """``t=1.23s status 503 from reviews/v2`` or ``t=1.23s ConnectError: ...``."""
        what = self.error if self.error is not None else f"status {self.status} from {self.version or '?'}"
        return f"t={self.at:.2f}s {what}"


class Traffic:
    """Requests at a steady rate in the background while the ``with`` block runs::

        with Traffic(url, proxy=sidecar) as traffic:
            traffic.wait_for(lambda t: t.count >= 20, timeout=10)
            mark = traffic.now()
            apply_new_route()
            traffic.wait_for(lambda t: t.versions_since(mark)["reviews/v2"] >= 20, timeout=10)
        assert traffic.failures() == []

    Sends at ``rate`` per second with up to ``concurrency`` requests in flight (a slow backend
    lowers the achieved rate rather than piling up threads), and stops by itself after
    ``max_seconds`` or ``max_requests``. Keeps the last ``keep`` samples (default: all).
    """

    def __init__(
        self,
        url: str,
        *,
        rate: float = 50.0,
        proxy: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
        max_seconds: float | None = 120.0,
        max_requests: int | None = 20000,
        concurrency: int = 8,
        trust_env: bool = False,
        keep: int | None = None,
    ) -> None:
        """``None`` for ``max_seconds``/``max_requests`` means unbounded (the CLI uses that)."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.url = url
        self.rate = rate
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self._client = _client(proxy, headers, timeout, trust_env, concurrency)
        self._concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._samples: collections.deque[Sample] = collections.deque(maxlen=keep)
        self._statuses: collections.Counter[int | str] = collections.Counter()
        self._versions: collections.Counter[str] = collections.Counter()
        self._count = 0
        self._started = 0.0
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Traffic:
        """Start sending; returns ``self``."""
        if self._thread is None:
            self._started = time.monotonic()
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="traffic")
            self._thread = threading.Thread(target=self._schedule, name="traffic-scheduler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending and wait for requests in flight (each bounded by ``timeout``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._client.close()

    @property
    def running(self) -> bool:
        """Still scheduling requests (not stopped and no limit reached)."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _schedule(self) -> None:
        assert self._pool is not None
        interval = 1.0 / self.rate
        next_at = self._started
        sent = 0
        while not self._stop.is_set():
            now = time.monotonic()
            if self.max_requests is not None and sent >= self.max_requests:
                return
            if self.max_seconds is not None and now - self._started >= self.max_seconds:
                return
            if next_at > now and self._stop.wait(next_at - now):
                return
            while not self._slots.acquire(timeout=0.1):
                if self._stop.is_set():
                    return
            self._pool.submit(self._one)
            sent += 1
            # Keep the pace, but after a stall do not fire a burst to "catch up".
            next_at = max(next_at + interval, time.monotonic() - interval)

    def _one(self) -> None:
        at = time.monotonic() - self._started
        try:
            outcome = _send(self._client, self.url, want_body=False)
        finally:
            self._slots.release()
        sample = Sample(at, outcome.status, outcome.version, outcome.error, time.monotonic() - self._started - at)
        with self._lock:
            self._samples.append(sample)
            self._count += 1
            self._statuses[outcome.key] += 1
            if outcome.version is not None:
                self._versions[outcome.version] += 1

    # -- what was seen ---------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since the traffic started: a mark to compare :attr:`Sample.at` with."""
        return time.monotonic() - self._started

    @property
    def count(self) -> int:
        """Requests completed (answered or failed)."""
        with self._lock:
            return self._count

    @property
    def versions(self) -> collections.Counter[str]:
        """Completed requests by ``x-echo-service`` header."""
        with self._lock:
            return collections.Counter(self._versions)

    @property
    def statuses(self) -> collections.Counter[int | str]:
        """Completed requests by status (or ``error:<ExceptionName>``)."""
        with self._lock:
            return collections.Counter(self._statuses)

    def samples(self, since: float = 0.0) -> list[Sample]:
        """Kept samples sent at or after ``since`` (a :meth:`now` mark), in completion order."""
        with self._lock:
            return [s for s in self._samples if s.at >= since]

    def failures(self, since: float = 0.0) -> list[Sample]:
        """Kept samples that were not 2xx answers; ``str(s.detail)`` says when and what."""
        return [s for s in self.samples(since) if not s.ok]

    def versions_since(self, since: float) -> collections.Counter[str]:
        """Kept samples sent at or after ``since``, by version."""
        return collections.Counter(s.version for s in self.samples(since) if s.version is not None)

    def wait_for(self, predicate: Callable[[Traffic], object], timeout: float, message: str = "") -> None:
        """Poll ``predicate(self)`` until truthy; ``TimeoutError`` (with a summary) otherwise."""
        try:
            wait_until(lambda: predicate(self), timeout, interval=0.05, message=message or "traffic condition")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; traffic so far: {self.summary()}") from None

    def summary(self) -> str:
        """One line: counts, statuses, versions."""
        with self._lock:
            return f"sent={self._count} statuses={dict(self._statuses)} versions={dict(self._versions)}"


def _parse_headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--header {item!r}: expected NAME:VALUE")
        headers[name.strip()] = value.strip()
    return headers


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (the demo's ``loadgen`` workload)."""
    p = argparse.ArgumentParser(prog="python -m novamesh.testing.load", description="Steady HTTP GET load.")
    p.add_argument("--url", required=True)
    p.add_argument("--rate", type=float, default=2.0, help="requests per second (default 2)")
    p.add_argument("--count", type=int, default=None, help="stop after N requests")
    p.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    p.add_argument("--header", action="append", default=[], metavar="K:V", help="request header (repeatable)")
    p.add_argument("--proxy", default=None, help="HTTP proxy (default: HTTP_PROXY from the environment)")
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout, seconds")
    p.add_argument("--concurrency", type=int, default=8, help="most requests in flight")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between summary lines")
    args = p.parse_args(argv)
    try:
        headers = _parse_headers(args.header)
        traffic = Traffic(args.url, rate=args.rate, proxy=args.proxy, headers=headers, timeout=args.timeout,
                          max_seconds=args.duration, max_requests=args.count, concurrency=args.concurrency,
                          trust_env=True, keep=0)
    except ValueError as exc:
        p.error(str(exc))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"load: GET {args.url} at {args.rate:g}/s", file=sys.stderr, flush=True)
    last_count = 0
    with traffic:
        while not stop.wait(args.interval):
            count = traffic.count
            print(f"load: t={traffic.now():.0f}s +{count - last_count} {traffic.summary()}", flush=True)
            last_count = count
            if not traffic.running:
                break
    print(f"load: done {traffic.summary()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
