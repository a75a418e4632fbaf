"""The control plane's security services: the CA, the join tokens and the CSR server.

:class:`SecurityServer` is created and owned by :class:`~novamesh.controlplane.server.ControlPlane`:
``start()`` before serving, ``run()`` as a task of its TaskGroup (reloads a plugged-in CA when its
files change), ``stop()`` on shutdown. Port 15012 (``csr_port``) carries both the CSR service and
ADS over mutual TLS, told apart by TLS server name (security/portmux.py). A store without secret
storage, or ``csr_port = -1``, leaves the CA off (logged): the mesh then runs without workload
identities.
"""

from __future__ import annotations

import ipaddress
import logging

import grpc

from ..clock import Clock
from ..errors import NovameshError
from ..settings import Settings
from ..store.base import ConfigStore
from .ca import PluggedCA, StoreCA, open_ca
from .csr import XDS_SERVER_NAME, CertificateService, CsrServer, ServingCert
from .portmux import SniRouter
from .tokens import TokenStore

__all__ = ["SecurityServer", "secrets_supported", "ca_for", "tokens_for", "bind_xds_ports", "plaintext_xds_host"]

log = logging.getLogger(__name__)

_BACKEND_HOST = "127.0.0.1"
"""Where the CSR service and mTLS ADS listen, behind the router on ``csr_port``."""


def secrets_supported(store: ConfigStore) -> bool:
    """Whether ``store`` implements the secret methods (every store should; a store that does
    not yet leaves the CA off instead of failing)."""
    return callable(getattr(store, "get_secret", None)) and callable(getattr(store, "put_secret", None))


def ca_for(settings: Settings, store: ConfigStore, clock: Clock) -> StoreCA | PluggedCA:
    """The CA ``settings`` describe (creating the self-signed root on first use)."""
    return open_ca(store, clock, ca_dir=settings.ca_dir, key_type=settings.ca_key_type,
                   trust_domain=settings.trust_domain, root_ttl=settings.root_cert_ttl)  # fmt: skip


def tokens_for(settings: Settings, store: ConfigStore, clock: Clock) -> TokenStore:
    """The join-token store of this mesh."""
    return TokenStore(store, clock, settings.trust_domain)


class SecurityServer:
    """CA + CSR service + the port-15012 router of one control plane (module docstring).

    The CSR service and the mTLS ADS port listen on loopback ephemeral ports; the public
    ``csr_port`` is a :class:`SniRouter` in front of both (security/portmux.py)."""

    def __init__(self, settings: Settings, store: ConfigStore, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.enabled = settings.csr_port >= 0 and secrets_supported(store)
        self.ca: StoreCA | PluggedCA | None = None
        self.csr: CsrServer | None = None
        self.router: SniRouter | None = None
        self.xds_backend_port: int | None = None
        """The loopback port of mTLS ADS (set by :func:`bind_xds_ports`)."""
        self._xds_cert: ServingCert | None = None
        if not self.enabled:
            why = "csr_port is -1" if settings.csr_port < 0 else "the store keeps no secrets"
            log.warning("CA and CSR service off (%s): workloads get no identity", why)
            return
        self.ca = ca_for(settings, store, clock)
        service = CertificateService(self.ca, tokens_for(settings, store, clock), clock,
                                     trust_domain=settings.trust_domain, cert_ttl=settings.cert_ttl)  # fmt: skip
        self.csr = CsrServer(service, _BACKEND_HOST, 0, server_cert_ttl=settings.cert_ttl,
                             cert_hosts=[settings.bind_host], peer_name=self.peer_name)  # fmt: skip

    def peer_name(self, grpc_peer: str) -> str:
        """The client's real address behind a backend's ``context.peer()``."""
        return self.router.peer_of(grpc_peer) if self.router is not None else grpc_peer

    def xds_credentials(self) -> grpc.ServerCredentials | None:
        """mTLS server credentials for the ADS port (client certificates required, verified
        against the trust bundle); None when the CA is off."""
        if self.ca is None:
            return None
        s = self.settings
        cert = ServingCert(self.ca, self.clock, [s.bind_host], s.trust_domain, s.cert_ttl)
        self._xds_cert = cert  # grpc keeps only the callback
        return grpc.dynamic_ssl_server_credentials(cert.current, cert.fetch, require_client_authentication=True)

    def _route(self, sni: str | None) -> int:
        if sni == XDS_SERVER_NAME and self.xds_backend_port is not None:
            return self.xds_backend_port
        assert self.csr is not None
        return self.csr.port

    async def start(self) -> None:
        """Start the CSR service and bind ``csr_port`` (NovameshError when it is taken)."""
        if self.csr is None:
            return
        s = self.settings
        await self.csr.start()
        self.router = SniRouter(s.bind_host, s.csr_port, self._route, hello_timeout=s.tls_hello_timeout)
        port = await self.router.start()
        log.info("CSR service on %s:%d (TLS%s), CA: %s", s.bind_host, port, "; also xDS over mTLS" if self.xds_backend_port else "",
                 self.ca.status()["mode"] if self.ca else "-")  # fmt: skip

    async def run(self) -> None:
        """Until cancelled: pick up changed plugged-in CA files."""
        while True:
            await self.clock.sleep(self.settings.ca_reload_interval)
            if isinstance(self.ca, PluggedCA):
                self.ca.maybe_reload()

    async def stop(self) -> None:
        """Stop the router and the CSR server."""
        if self.router is not None:
            await self.router.stop()
        if self.csr is not None:
            await self.csr.stop()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def plaintext_xds_host(settings: Settings) -> str:
    """Where plaintext ``xds_port`` binds: ``bind_host`` when it is a loopback address, else
    127.0.0.1 — unless ``xds_plaintext_any_address`` (an explicit, unsafe opt-out) is set.

    Plaintext ADS authenticates nobody: any client that reaches it can claim any node and read
    that proxy's whole configuration (services, endpoints, policies). So it is for local
    development on one host, whether or not the CA is on."""
    if _is_loopback(settings.bind_host) or settings.xds_plaintext_any_address:
        return settings.bind_host
    return "127.0.0.1"


def bind_xds_ports(server: grpc.aio.Server, settings: Settings, security: SecurityServer) -> tuple[str, int] | None:
    """Bind the ADS ports of ``server``: mTLS on a loopback port behind ``csr_port``'s router
    (when ``xds_tls`` and the CA is on) and plaintext ``xds_port`` (unless ``xds_plaintext`` is
    off) on :func:`plaintext_xds_host`. Returns the plaintext (host, port), None when off.
    Raises NovameshError for a port in use or a configuration without any xDS port."""
    s = settings
    creds = security.xds_credentials() if s.xds_tls else None
    if creds is not None:
        port = int(server.add_secure_port(f"{_BACKEND_HOST}:0", creds))
        if not port:
            raise NovameshError(f"cannot listen for mTLS xDS on {_BACKEND_HOST} (no free port?)")
        security.xds_backend_port = port
    elif not s.xds_plaintext:
        why = "xds_tls is off" if not s.xds_tls else "the CA is off (csr_port -1 or a store without secrets)"
        raise NovameshError(f"xds_plaintext is off and {why}: sidecars could not connect; turn one of them on")
    if not s.xds_plaintext:
        return None
    host = plaintext_xds_host(s)
    if host != s.bind_host:
        log.info("plaintext xDS on %s:%d only (loopback; bind_host %s gets no plaintext xDS: set "
                 "xds_plaintext_any_address to override)", host, s.xds_port, s.bind_host)  # fmt: skip
    elif not _is_loopback(host):
        log.warning("plaintext xDS on %s:%d (xds_plaintext_any_address): unauthenticated, any client "
                    "reaching it can read every proxy's configuration", host, s.xds_port)  # fmt: skip
    if not server.add_insecure_port(f"{host}:{s.xds_port}"):
        raise NovameshError(f"cannot listen for xDS on {host}:{s.xds_port} (port in use?); pass --xds-port")
    return host, s.xds_port
