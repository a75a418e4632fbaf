"""A stand-in for ``python -m novamesh`` in StackRunner tests (stdlib only, run as a script).

``control-plane --data-dir D --http-port P --xds-port X``: serves the few REST endpoints the
runner uses (/healthz, POST /api/v1/apply, /api/v1/workloads) from memory. An applied document
containing ``REJECT-ME`` is answered with 422 and one violation.

``run --service S --namespace N --version V [--port P ...] --control-plane URL -- CMD...``:
runs CMD with HOST/PORT set, registers it (ready) once it listens on the first port, deregisters on SIGTERM or when CMD
exits, and exits with CMD's status.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WORKLOADS: dict[str, dict[str, Any]] = {}
IDS = itertools.count(1)
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(format % args + "\n")

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(200, {"status": "ok", "revision": 0, "snapshot_version": "0"})
        elif self.path == "/api/v1/workloads":
            with LOCK:
                self._reply(200, list(WORKLOADS.values()))
        else:
            self._reply(404, {"error": "NotFoundError", "message": self.path})

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/api/v1/apply":
            if any("REJECT-ME" in d["content"] for d in body["documents"]):
                violation = {"message": "rejected on purpose", "path": "spec.hosts[0]", "kind": "VirtualService",
                             "name": "x", "namespace": "default", "file": body["documents"][0]["file"],
                             "document": 0, "line": 3, "hint": "do not write REJECT-ME", "code": "IST0106"}
                self._reply(422, {"error": "ConfigError", "message": "rejected", "violations": [violation]})
            else:
                changes = [{"kind": "File", "namespace": "default", "name": d["file"], "action": "created"}
                           for d in body["documents"]]
                self._reply(200, {"revision": 1, "changes": changes})
        elif self.path == "/api/v1/workloads":
            with LOCK:
                wid = f"w{next(IDS)}"
                WORKLOADS[wid] = {"id": wid, "address": f"127.1.0.{len(WORKLOADS) + 2}", "expires_in": 15,
                                  **{k: body[k] for k in ("service", "namespace", "version", "ports", "ready")}}
            self._reply(200, {"id": wid, "address": WORKLOADS[wid]["address"], "lease_ttl": 15, "heartbeat_interval": 3})
        else:
            self._reply(404, {"error": "NotFoundError", "message": self.path})

    def do_DELETE(self) -> None:
        with LOCK:
            WORKLOADS.pop(self.path.rsplit("/", 1)[-1], None)
        self._reply(200, {})


def control_plane(args: argparse.Namespace) -> int:
    server = ThreadingHTTPServer(("127.0.0.1", args.http_port), Handler)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"fake control plane on {args.http_port}, data {args.data_dir}", flush=True)
    while not stop.wait(0.1):
        pass
    server.shutdown()
    print("fake control plane stopped", flush=True)
    return 0


def _call(method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"{}")


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def run(args: argparse.Namespace, command: list[str]) -> int:
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(args.port[0] if args.port else 0)}
    child = subprocess.Popen(command, env=env)
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    # Like the real agent: a workload with ports registers once its app listens.
    while args.port and not _listening(args.port[0]):
        if child.poll() is not None:
            print(f"fake run: {args.service} exited with {child.returncode} before listening", flush=True)
            return child.returncode
        time.sleep(0.05)
    ports = [{"number": p, "protocol": "HTTP", "name": "", "app_port": p} for p in args.port]
    reg = _call("POST", f"{args.control_plane}/api/v1/workloads",
                {"kind": "sidecar", "service": args.service, "namespace": args.namespace, "version": args.version,
                 "service_account": "default", "labels": {}, "ports": ports, "ready": True})
    code = child.wait()
    _call("DELETE", f"{args.control_plane}/api/v1/workloads/{reg['id']}")
    print(f"fake run: {args.service} exited with {code}", flush=True)
    return code


def main() -> int:
    argv = sys.argv[1:]
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    cp = sub.add_parser("control-plane")
    cp.add_argument("--data-dir")
    cp.add_argument("--http-port", type=int)
    cp.add_argument("--xds-port", type=int)
    rn = sub.add_parser("run")
    for flag in ("--service", "--namespace", "--version", "--control-plane"):
        rn.add_argument(flag)
    rn.add_argument("--port", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    return control_plane(args) if args.cmd == "control-plane" else run(args, command)


if __name__ == "__main__":
    sys.exit(main())
