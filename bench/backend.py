"""The benchmark's server: Envoy answering every request with a 1 KB direct_response.

Run as the app of ``novamesh run`` (which sets ``HOST`` and ``PORT``): writes a static config
and execs Envoy with one worker. Envoy is used (not the Python echo app) so the server costs
microseconds, and mesh minus direct measures the sidecars, not the app.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

from novamesh.agent.envoy import find_envoy


def config(host: str, port: int, body_bytes: int = 1024) -> dict[str, object]:
    """Static Envoy bootstrap: one listener, direct_response with ``body_bytes`` bytes."""
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "x" * body_bytes}}}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "bench",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    listener = {"name": "bench", "address": {"socket_address": {"address": host, "port_value": port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}
    return {"static_resources": {"listeners": [listener]}}


def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "9080"))
    path = os.path.join(tempfile.mkdtemp(prefix="bench-backend-"), "bench-backend.json")
    with open(path, "w") as f:
        json.dump(config(host, port), f)
    envoy = find_envoy()
    os.execv(envoy, [envoy, "-c", path, "--concurrency", "1", "--log-level", "error",
                     "--base-id", str(os.getpid() % 60000 + 1000), "--disable-hot-restart"])


if __name__ == "__main__":
    main()
    sys.exit(1)
