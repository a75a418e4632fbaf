"""The echo app: answers every request with what it received.

Tests (and the demo) run it behind a sidecar and assert exactly what crossed the mesh: the
service and version that answered, the raw path, the headers, and who the caller was.

``python -m novamesh.testing.echo [--host H] [--port P] [--service S] [--version V]
[--namespace N] [--call URL ...] [--propagate HEADER ...] [--call-timeout S] [--verbose]``;
defaults come from ``HOST`` (127.0.0.1), ``PORT`` (8080), ``NOVAMESH_SERVICE`` (echo),
``NOVAMESH_VERSION`` (v1) and ``NOVAMESH_NAMESPACE`` (default), which ``novamesh run`` sets.

Every request outside ``/_echo/`` (any method, any path) is answered with JSON::

    {"service", "version", "namespace", "method", "path" (raw, with query), "query" ({k: [v]}),
     "host", "headers" ({lower-case name: value}), "caller": {"principal", "address"},
     "body_bytes", "calls": [{"url", "status", "body", "error"}], "injected_failure"}

and the header ``x-echo-service: <service>/<version>``. ``caller.principal`` is the ``URI=`` of
the last ``x-forwarded-client-cert`` element (``None`` without one); ``caller.address`` is the
peer IP (in the mesh, the local sidecar).

Switches (see :mod:`novamesh.testing.echo_state`): ``ECHO_DELAY``, ``ECHO_FAIL_FRACTION``,
``ECHO_FAIL_STATUS``, ``ECHO_STATUS`` at start; ``POST /_echo/config`` at runtime; ``x-echo-delay``,
``x-echo-status``, ``x-echo-fail-fraction``, ``x-echo-fail-status`` per request. A request waits
``delay``, makes its ``--call`` calls, then answers ``fail_status`` with probability
``fail_fraction`` (with the same JSON body and ``"injected_failure": true``), else ``status``.

``--call URL`` (repeatable): each answered request GETs every URL in turn through the HTTP proxy
in ``HTTP_PROXY``/``http_proxy`` (the sidecar), forwarding the incoming headers named by
``--propagate``. Results appear under ``"calls"``; a failed call (5xx, or ``status: null`` with
``error`` set for a connection error or timeout) does **not** change the app's own status, so a
test sees exactly which hop failed.

Control endpoints (never delayed, failed or counted): ``GET|POST /_echo/config``,
``GET /_echo/stats`` → ``{"requests", "in_flight", "max_in_flight"}``, ``POST /_echo/stats/reset``.

SIGTERM/SIGINT stop accepting connections, let in-flight requests finish (up to 5 s), exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from .echo_state import Behaviour, Stats
from .xfcc import caller_principal

__all__ = ["DEFAULT_PROPAGATE", "EchoApp", "EchoHTTPServer", "EchoServer", "make_server", "serve", "main"]

DEFAULT_PROPAGATE: tuple[str, ...] = (
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "baggage",
    "end-user",
    "x-user",
)
"""Headers forwarded on ``--call`` requests by default: tracing context and the user headers the
demo routes on. Envoy cannot join an inbound and an outbound request by itself; the app must."""

CONTROL_PREFIX = "/_echo"
_MAX_TEXT_BODY = 64 * 1024


class EchoApp:
    """What the echo app does, independent of the HTTP plumbing (one instance per server)."""

    def __init__(
        self,
        *,
        service: str = "echo",
        version: str = "v1",
        namespace: str = "default",
        calls: Sequence[str] = (),
        propagate: Sequence[str] = DEFAULT_PROPAGATE,
        call_timeout: float = 5.0,
        behaviour: Behaviour | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
        verbose: bool = False,
        seed: int | None = None,
    ) -> None:
        """``proxy`` forces the proxy for ``--call`` requests; otherwise, with ``trust_env``, the
        ``HTTP_PROXY``/``http_proxy``/``NO_PROXY`` environment decides (``trust_env=False`` and no
        ``proxy``: direct). ``seed`` makes the failure draws reproducible."""
        self.service = service
        self.version = version
        self.namespace = namespace
        self.calls = tuple(calls)
        self.propagate = tuple(h.lower() for h in propagate)
        self.call_timeout = call_timeout
        self.verbose = verbose
        self.stats = Stats()
        self._behaviour = behaviour or Behaviour()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._proxy = proxy
        self._trust_env = trust_env
        self._client: httpx.Client | None = None

    @property
    def behaviour(self) -> Behaviour:
        """The current runtime behaviour (before per-request headers)."""
        with self._lock:
            return self._behaviour

    def configure(self, changes: Mapping[str, Any]) -> Behaviour:
        """Apply a partial update (as ``POST /_echo/config`` does); ``ValueError`` if invalid."""
        with self._lock:
            self._behaviour = self._behaviour.updated(changes)
            return self._behaviour

    @property
    def identity(self) -> str:
        """``<service>/<version>``, the ``x-echo-service`` header."""
        return f"{self.service}/{self.version}"

    def answer(
        self, method: str, path: str, headers: Mapping[str, str], peer: str, body_bytes: int
    ) -> tuple[int, dict[str, Any]]:
        """Status and JSON body for an ordinary (counted) request. ``headers`` has lower-case names."""
        try:
            behaviour = self.behaviour.for_request(headers)
        except ValueError as exc:
            return 400, {"error": str(exc), "service": self.service, "version": self.version}
        self.stats.enter()
        try:
            if behaviour.delay > 0:
                time.sleep(behaviour.delay)
            results = [self._call(url, headers) for url in self.calls]
            with self._lock:
                failed = behaviour.fail_fraction > 0 and self._rng.random() < behaviour.fail_fraction
        finally:
            self.stats.leave()
        body = {
            "service": self.service,
            "version": self.version,
            "namespace": self.namespace,
            "method": method,
            "path": path,
            "query": parse_qs(urlsplit(path).query, keep_blank_values=True),
            "host": headers.get("host", ""),
            "headers": dict(headers),
            "caller": {"principal": caller_principal(headers.get("x-forwarded-client-cert")), "address": peer},
            "body_bytes": body_bytes,
            "calls": results,
            "injected_failure": failed,
        }
        return (behaviour.fail_status if failed else behaviour.status), body

    def control(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer a ``/_echo/...`` request."""
        route = urlsplit(path).path.rstrip("/")
        if route == f"{CONTROL_PREFIX}/config" and method == "GET":
            return 200, self.behaviour.to_dict()
        if route == f"{CONTROL_PREFIX}/config" and method in ("POST", "PUT", "PATCH"):
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("body must be a JSON object such as {\"delay\": 0.5}")
                return 200, self.configure(changes).to_dict()
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                return 400, {"error": str(exc)}
        if route == f"{CONTROL_PREFIX}/stats" and method == "GET":
            return 200, self.stats.to_dict()
        if route == f"{CONTROL_PREFIX}/stats/reset" and method == "POST":
            self.stats.reset()
            return 200, self.stats.to_dict()
        return 404, {
            "error": f"no control endpoint {method} {route}",
            "endpoints": ["GET|POST /_echo/config", "GET /_echo/stats", "POST /_echo/stats/reset"],
        }

    def _http(self) -> httpx.Client:
        # One shared client: httpx.Client is safe to use from several threads and pools
        # keep-alive connections to the sidecar across requests.
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    proxy=self._proxy,
                    trust_env=self._trust_env,
                    timeout=self.call_timeout,
                    limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                )
            return self._client

    def _call(self, url: str, incoming: Mapping[str, str]) -> dict[str, Any]:
        forwarded = {name: incoming[name] for name in self.propagate if name in incoming}
        try:
            response = self._http().get(url, headers=forwarded)
        except httpx.HTTPError as exc:
            return {"url": url, "status": None, "body": None, "error": f"{type(exc).__name__}: {exc}"}
        return {"url": url, "status": response.status_code, "body": _decode(response), "error": None}

    def close(self) -> None:
        """Release the outgoing connection pool."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()


def _decode(response: httpx.Response) -> Any:
    """JSON bodies parsed, anything else as (truncated) text."""
    if "json" in response.headers.get("content-type", ""):
        try:
            return response.json()
        except ValueError:
            pass
    return response.text[:_MAX_TEXT_BODY]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    disable_nagle_algorithm = True  # headers and body are separate writes; avoid the 40 ms stall
    timeout = 120  # idle keep-alive connections give their thread back eventually
    server: EchoHTTPServer

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler dispatches to do_<METHOD>; answer every method the same way.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def _handle(self) -> None:
        app = self.server.app
        started = time.monotonic()
        with self.server.track():
            headers = _lower_headers(self.headers.items())
            try:
                body = self._read_body(headers)
            except ValueError as exc:
                self.close_connection = True
                self._reply(400, {"error": f"bad request body: {exc}"})
                return
            route = urlsplit(self.path).path
            if route == CONTROL_PREFIX or route.startswith(CONTROL_PREFIX + "/"):
                status, payload = app.control(self.command, self.path, body)
            else:
                status, payload = app.answer(self.command, self.path, headers, self.client_address[0], len(body))
            if self.server.stopping:
                self.close_connection = True
            self._reply(status, payload)
        if app.verbose:
            sys.stderr.write(
                f"{self.client_address[0]} \"{self.command} {self.path}\" {status} "
                f"{(time.monotonic() - started) * 1000:.1f}ms\n"
            )

    def _read_body(self, headers: Mapping[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return _read_chunked(self.rfile)
        length = headers.get("content-length")
        if not length:
            return b""
        size = int(length)
        if size < 0:
            raise ValueError("negative Content-Length")
        data = self.rfile.read(size)
        if len(data) != size:
            raise ValueError("connection closed before the whole body arrived")
        return data

    def _reply(self, status: int, payload: Mapping[str, Any]) -> None:
        data = (json.dumps(payload, sort_keys=True) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("x-echo-service", self.server.app.identity)
        bodiless = self.command == "HEAD" or status in (204, 304)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            if not bodiless:
                self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Per-request lines are written by ``_handle`` (only with ``--verbose``)."""

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.app.verbose:
            super().log_message(format, *args)


def _lower_headers(items: Iterator[tuple[str, str]] | Sequence[tuple[str, str]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


def _read_chunked(rfile: Any) -> bytes:
    parts: list[bytes] = []
    while True:
        line = rfile.readline(65537)
        if not line:
            raise ValueError("connection closed inside a chunked body")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers are ignored
            return b"".join(parts)
        parts.append(rfile.read(size))
        rfile.readline(3)  # the CRLF after each chunk


class EchoHTTPServer(ThreadingHTTPServer):
    """A thread-per-connection HTTP/1.1 server running an :class:`EchoApp`, with a graceful
    :meth:`drain`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: EchoApp) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.stopping = False
        self._active = 0
        self._idle_changed = threading.Condition()
        self._connections: set[socket.socket] = set()
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""
        return int(self.server_address[1])

    @contextmanager
    def track(self) -> Iterator[None]:
        """Count a request as in progress while the block runs (for :meth:`drain`)."""
        with self._idle_changed:
            self._active += 1
        try:
            yield
        finally:
            with self._idle_changed:
                self._active -= 1
                self._idle_changed.notify_all()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._idle_changed:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._idle_changed:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drain(self, timeout: float = 5.0) -> bool:
        """Stop accepting, wait up to ``timeout`` for requests in progress, close idle keep-alive
        connections. Call from a thread other than the one in ``serve_forever``. Returns whether
        every request finished in time."""
        self.stopping = True
        self.shutdown()
        self.server_close()
        deadline = time.monotonic() + timeout
        with self._idle_changed:
            finished = self._idle_changed.wait_for(lambda: self._active == 0, max(0.0, deadline - time.monotonic()))
            leftovers = list(self._connections)
        for conn in leftovers:  # idle keep-alive connections: wake their threads with EOF
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.app.close()
        return finished


def make_server(host: str = "127.0.0.1", port: int = 0, **app_options: Any) -> EchoHTTPServer:
    """A bound (not yet serving) echo server; ``app_options`` go to :class:`EchoApp`."""
    return EchoHTTPServer((host, port), EchoApp(**app_options))


class EchoServer:
    """An echo server in a background thread, for in-process tests::

        with EchoServer(service="reviews", version="v2") as echo:
            httpx.get(echo.url + "/hello")
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **app_options: Any) -> None:
        """Binds immediately (so :attr:`url` is known); ``app_options`` go to :class:`EchoApp`."""
        self.server = make_server(host, port, **app_options)
        self._thread: threading.Thread | None = None

    @property
    def app(self) -> EchoApp:
        """The running :class:`EchoApp` (its ``stats``, ``configure()``)."""
        return self.server.app

    @property
    def host(self) -> str:
        """The bound host."""
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        """The bound port."""
        return self.server.port

    @property
    def url(self) -> str:
        """``http://host:port`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> EchoServer:
        """Serve in a daemon thread; returns ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name=f"echo-{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop gracefully (see :meth:`EchoHTTPServer.drain`)."""
        if self._thread is not None:
            self.server.drain(timeout)
            self._thread.join(timeout)
            self._thread = None
        else:
            self.server.server_close()
            self.server.app.close()

    def __enter__(self) -> EchoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(host: str = "127.0.0.1", port: int = 8080, *, drain_timeout: float = 5.0, **app_options: Any) -> int:
    """Run until SIGTERM/SIGINT, then drain for up to ``drain_timeout`` seconds; returns the exit
    status (0). Must run in the main thread (it installs signal handlers)."""
    server = make_server(host, port, **app_options)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="echo-accept", daemon=True)
    thread.start()
    app = server.app
    calls = f" calling {', '.join(app.calls)}" if app.calls else ""
    print(f"echo {app.identity} listening on {host}:{server.port}{calls}", file=sys.stderr, flush=True)
    while not stop.wait(1.0):
        pass
    finished = server.drain(drain_timeout)
    print(f"echo {app.identity} stopped{'' if finished else ' (some requests were cut off)'}", file=sys.stderr, flush=True)
    return 0


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m novamesh.testing.echo", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=env.get("HOST", "127.0.0.1"), help="address to listen on (env HOST)")
    p.add_argument("--port", type=int, default=int(env.get("PORT", "8080")), help="port (env PORT; 0 = any)")
    p.add_argument("--service", default=env.get("NOVAMESH_SERVICE", "echo"), help="service name to report")
    p.add_argument("--version", default=env.get("NOVAMESH_VERSION", "v1"), help="version to report")
    p.add_argument("--namespace", default=env.get("NOVAMESH_NAMESPACE", "default"), help="namespace to report")
    p.add_argument("--call", action="append", default=[], metavar="URL", help="GET this URL for every request (repeatable)")
    p.add_argument("--propagate", action="append", default=None, metavar="HEADER",
                   help="incoming header to forward on calls (repeatable; replaces the default list)")
    p.add_argument("--call-timeout", type=float, default=5.0, help="timeout of each call, seconds")
    p.add_argument("--verbose", action="store_true", help="log one line per request to stderr")
    return p


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Command-line entry point."""
    env = os.environ if env is None else env
    args = _parser(env).parse_args(argv)
    try:
        behaviour = Behaviour.from_env(env)
    except ValueError as exc:
        print(f"echo: {exc}", file=sys.stderr)
        return 2
    return serve(
        args.host,
        args.port,
        service=args.service,
        version=args.version,
        namespace=args.namespace,
        calls=args.call,
        propagate=DEFAULT_PROPAGATE if args.propagate is None else args.propagate,
        call_timeout=args.call_timeout,
        behaviour=behaviour,
        verbose=args.verbose,
    )


if __name__ == "__main__":
    sys.exit(main())
