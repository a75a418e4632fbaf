"""The control plane's security services: the CA, the join tokens and the CSR server.

:class:`SecurityServer` is created and owned by :class:`~novamesh.controlplane.server.ControlPlane`:
``start()`` before serving, ``run()`` as a task of its TaskGroup (reloads a plugged-in CA when its
files change), ``stop()`` on shutdown. A store without secret storage, or ``csr_port = -1``,
leaves the CA off (logged): the mesh then runs without workload identities.
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
from .csr import CertificateService, CsrServer, ServingCert
from .tokens import TokenStore

__all__ = ["SecurityServer", "secrets_supported", "ca_for", "tokens_for", "bind_xds_ports"]

log = logging.getLogger(__name__)


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
    """CA + CSR server of one control plane (see the module docstring)."""

    def __init__(self, settings: Settings, store: ConfigStore, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.enabled = settings.csr_port >= 0 and secrets_supported(store)
        self.ca: StoreCA | PluggedCA | None = None
        self.csr: CsrServer | None = None
        self._xds_cert: ServingCert | None = None
        if not self.enabled:
            why = "csr_port is -1" if settings.csr_port < 0 else "the store keeps no secrets"
            log.warning("CA and CSR service off (%s): workloads get no identity", why)
            return
        self.ca = ca_for(settings, store, clock)
        service = CertificateService(self.ca, tokens_for(settings, store, clock), clock,
                                     trust_domain=settings.trust_domain, cert_ttl=settings.cert_ttl)  # fmt: skip
        self.csr = CsrServer(service, settings.bind_host, settings.csr_port, server_cert_ttl=settings.cert_ttl)

    def xds_credentials(self) -> grpc.ServerCredentials | None:
        """mTLS server credentials for the ADS port (client certificates required, verified
        against the trust bundle); None when the CA is off."""
        if self.ca is None:
            return None
        s = self.settings
        cert = ServingCert(self.ca, self.clock, [s.bind_host], s.trust_domain, s.cert_ttl)
        self._xds_cert = cert  # grpc keeps only the callback
        return grpc.dynamic_ssl_server_credentials(cert.current, cert.fetch, require_client_authentication=True)

    async def start(self) -> None:
        """Bind the CSR port (raises NovameshError when it is taken)."""
        if self.csr is not None:
            port = await self.csr.start()
            log.info("CSR service on %s:%d (TLS), CA: %s", self.settings.bind_host, port, self.ca.status()["mode"] if self.ca else "-")

    async def run(self) -> None:
        """Until cancelled: pick up changed plugged-in CA files."""
        while True:
            await self.clock.sleep(self.settings.ca_reload_interval)
            if isinstance(self.ca, PluggedCA):
                self.ca.maybe_reload()

    async def stop(self) -> None:
        """Stop the CSR server."""
        if self.csr is not None:
            await self.csr.stop()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind_xds_ports(server: grpc.aio.Server, settings: Settings, security: SecurityServer) -> None:
    """Bind the ADS ports of ``server``: plaintext ``xds_port`` (unless ``xds_plaintext`` is off;
    on loopback only once mTLS is on) and mTLS ``xds_tls_port`` (when >= 0). Raises
    NovameshError for a port in use or a configuration without any xDS port."""
    s = settings
    if s.xds_tls_port >= 0:
        creds = security.xds_credentials()
        if creds is None:
            raise NovameshError("xds_tls_port needs the CA (csr_port >= 0 and a store with secrets)")
        if not server.add_secure_port(f"{s.bind_host}:{s.xds_tls_port}", creds):
            raise NovameshError(f"cannot listen for mTLS xDS on {s.bind_host}:{s.xds_tls_port} (port in use?); set xds_tls_port")
    elif not s.xds_plaintext:
        raise NovameshError("xds_plaintext is off and xds_tls_port is -1: sidecars could not connect; set xds_tls_port")
    if s.xds_plaintext:
        # Plaintext is for local development: with mTLS available it never leaves loopback.
        host = s.bind_host if s.xds_tls_port < 0 or _is_loopback(s.bind_host) else "127.0.0.1"
        if not server.add_insecure_port(f"{host}:{s.xds_port}"):
            raise NovameshError(f"cannot listen for xDS on {host}:{s.xds_port} (port in use?); pass --xds-port")
