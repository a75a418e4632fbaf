"""A bare Envoy pair: the sidecars' hops with stock Envoy and a minimal static config.

Two Envoy processes (the sidecars' binary, the sidecars' ``--concurrency``), no control plane,
no agent:

* client Envoy: an HTTP listener on ``client_host:<free port>`` taking the same requests as the
  sidecar's outbound listener (absolute-URL proxy requests, ``allow_absolute_url``), one route
  ``/`` → a STATIC cluster naming the server Envoy;
* server Envoy: a listener on ``server_host:<free port>`` → a STATIC cluster naming the backend.

Only the router filter, Envoy's defaults for everything else, HTTP/1.1 between the two (as
between the sidecars for an HTTP port). With ``tls`` the hop between them is mTLS with static
ECDSA P-256 certificates carrying SPIFFE URI SANs (made with novamesh.security.pki, like the
mesh's): the server requires a client certificate from the bench CA, the client checks the
server's URI SAN, both offer ALPN ``istio``, as the sidecars do. Traffic stays on the loopback
addresses given (127.0.0.0/8).

Generator → bare client → bare server → backend, against generator → backend (direct), tells
what two Envoy hops cost on this machine; the mesh path minus this one is what novamesh's
configuration (filters, telemetry, xDS-built resources) adds on top.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from novamesh.agent.envoy import find_envoy
from novamesh.security import pki
from novamesh.testing.mesh import free_port

__all__ = ["BarePair", "client_config", "server_config"]

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_ROUTER = {"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
_UP_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_DOWN_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
ALPN = "istio"
CLIENT_ID = "spiffe://bench.local/ns/default/sa/bare-client"
SERVER_ID = "spiffe://bench.local/ns/default/sa/bare-server"


def _addr(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _cluster(name: str, host: str, port: int, tls: dict[str, Any] | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name, "type": "STATIC", "connect_timeout": "10s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(host, port)}}]}]},
    }
    if tls is not None:
        c["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    return c


def _listener(name: str, host: str, port: int, cluster: str, *, proxy: bool, tls: dict[str, Any] | None = None) -> dict[str, Any]:
    hcm: dict[str, Any] = {
        "@type": _HCM, "stat_prefix": name, "codec_type": "AUTO",
        "route_config": {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"],
                                                          "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}]}]},
        "http_filters": [_ROUTER],
    }
    if proxy:  # same request shape as the sidecar's outbound listener: GET http://host:port/ HTTP/1.1
        hcm["http_protocol_options"] = {"allow_absolute_url": True}
    chain: dict[str, Any] = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
    if tls is not None:
        chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    return {"name": name, "address": _addr(host, port), "filter_chains": [chain]}


def _bootstrap(admin_host: str, admin_port: int, listener: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any]:
    return {"admin": {"address": _addr(admin_host, admin_port)},
            "static_resources": {"listeners": [listener], "clusters": [cluster]}}


def _certs(directory: Path) -> dict[str, str]:
    """A CA and two leaf certificates (ECDSA P-256, SPIFFE URI SANs) as PEM files; name → path."""
    now = time.time()
    ca_key = pki.generate_key("ec-p256")
    ca = pki.self_signed_root(ca_key, "bench bare-pair CA", "novamesh-bench", now, 86400)
    paths = {"ca": directory / "ca.pem"}
    paths["ca"].write_bytes(pki.cert_pem(ca))
    for who, uri in (("client", CLIENT_ID), ("server", SERVER_ID)):
        key = pki.generate_key("ec-p256")
        cert = pki.sign(issuer_cert=ca, issuer_key=ca_key, public_key=key.public_key(), uris=[uri], now=now, ttl=86400)
        paths[f"{who}_cert"], paths[f"{who}_key"] = directory / f"{who}.pem", directory / f"{who}-key.pem"
        paths[f"{who}_cert"].write_bytes(pki.cert_pem(cert))
        paths[f"{who}_key"].write_bytes(pki.key_pem(key))
    return {k: str(v) for k, v in paths.items()}


def _common_tls(certs: dict[str, str], who: str, peer_san: dict[str, str]) -> dict[str, Any]:
    return {
        "alpn_protocols": [ALPN],
        "tls_certificates": [{"certificate_chain": {"filename": certs[f"{who}_cert"]}, "private_key": {"filename": certs[f"{who}_key"]}}],
        "validation_context": {"trusted_ca": {"filename": certs["ca"]},
                               "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": peer_san}]},
    }


def client_config(host: str, port: int, admin_port: int, server: tuple[str, int], certs: dict[str, str] | None = None) -> dict[str, Any]:
    """Client Envoy: proxy listener on host:port → server Envoy (mTLS when ``certs``)."""
    tls = None if certs is None else {"@type": _UP_TLS, "common_tls_context": _common_tls(certs, "client", {"exact": SERVER_ID})}
    return _bootstrap(host, admin_port, _listener("bare_out", host, port, "bare_server", proxy=True),
                      _cluster("bare_server", *server, tls=tls))


def server_config(host: str, port: int, admin_port: int, backend: tuple[str, int], certs: dict[str, str] | None = None) -> dict[str, Any]:
    """Server Envoy: listener on host:port (mTLS when ``certs``) → the backend."""
    tls = None if certs is None else {"@type": _DOWN_TLS, "require_client_certificate": True,
                                      "common_tls_context": _common_tls(certs, "server", {"prefix": "spiffe://bench.local/"})}
    return _bootstrap(host, admin_port, _listener("bare_in", host, port, "bare_backend", proxy=False, tls=tls),
                      _cluster("bare_backend", *backend))


class BarePair:
    """Start (``with``) a bare client + server Envoy in front of ``backend``; ``port`` is the
    client's listener on ``client_host``. Processes are stopped (and waited for) on exit."""

    def __init__(self, workdir: Path, client_host: str, server_host: str, backend: tuple[str, int], *, tls: bool,
                 concurrency: int = 1, envoy: str | None = None) -> None:  # fmt: skip
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.client_host, self.server_host = client_host, server_host
        self.port = free_port(client_host)
        self.server_port = free_port(server_host)
        self.admin = {"client": (client_host, free_port(client_host)), "server": (server_host, free_port(server_host))}
        certs = _certs(self.dir) if tls else None
        self.configs = {
            "client": client_config(client_host, self.port, self.admin["client"][1], (server_host, self.server_port), certs),
            "server": server_config(server_host, self.server_port, self.admin["server"][1], backend, certs),
        }
        self.envoy = envoy or find_envoy()
        self.concurrency = concurrency
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def pids(self) -> dict[str, int]:
        return {k: p.pid for k, p in self.procs.items()}

    def admin_url(self, which: str) -> str:
        h, p = self.admin[which]
        return f"http://{h}:{p}"

    def start(self, timeout: float = 30.0) -> None:
        for which in ("server", "client"):
            path = self.dir / f"{which}.json"
            path.write_text(json.dumps(self.configs[which], indent=1))
            log = self.dir / f"{which}.log"
            with open(self.dir / f"{which}.out", "wb") as out:
                self.procs[which] = subprocess.Popen(
                    [self.envoy, "-c", str(path), "--concurrency", str(self.concurrency), "--disable-hot-restart",
                     "-l", "warning", "--log-path", str(log)],
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        for which in ("server", "client"):
            while True:
                if self.procs[which].poll() is not None:
                    raise RuntimeError(f"bare {which} Envoy exited with {self.procs[which].returncode}: "
                                       f"{(self.dir / f'{which}.out').read_text(errors='replace')[-2000:]}")
                try:
                    if httpx.get(f"{self.admin_url(which)}/ready", timeout=1, trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"bare {which} Envoy not ready within {timeout} s; see {self.dir}")
                time.sleep(0.05)

    def counter(self, which: str, name: str) -> int:
        """One stat of one of the two Envoys (0 when absent)."""
        text = httpx.get(f"{self.admin_url(which)}/stats", params={"filter": f"^{name}$"}, timeout=5, trust_env=False).text
        for line in text.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == name and v.strip().isdigit():
                return int(v)
        return 0

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def __enter__(self) -> BarePair:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
