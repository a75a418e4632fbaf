"""The CSR service: workloads send a CSR and get a certificate for their SPIFFE identity.

Wire format (no code generation): a gRPC service ``novamesh.security.v1.CertificateService``
with one unary method ``CreateCertificate`` whose request and response are UTF-8 JSON objects
(the shape of Istio's ``IstioCertificateService``)::

    request   {"csr": "<PEM>", "validity_duration": 86400,           # seconds, optional
               "current_chain": "<PEM>", "proof": "<base64>"}        # renewal only
    response  {"cert_chain": ["<leaf PEM>", "<intermediate PEM>"...], "trust_bundle": ["<root PEM>"...]}

The caller proves who it is in one of two ways:

* first certificate: a join token in the ``authorization`` metadata (``Bearer nmt_...``);
* renewal: its current certificate chain plus ``proof``, a signature with the current private
  key over the SHA-256 of the new CSR. (gRPC Python can only *require* TLS client certificates,
  which the token path cannot provide, so possession of the current key is proven in-band:
  it binds the new CSR to the old key exactly as TLS client authentication would.)

The identity is taken from the credential, never from the CSR: the issued certificate has
exactly one SAN, ``spiffe://<trust-domain>/ns/<ns>/sa/<sa>``. Failed authentication answers
UNAUTHENTICATED "authentication failed" (the log says why); a malformed request answers
INVALID_ARGUMENT; the service keeps serving either way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import grpc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..clock import Clock
from . import pki
from .ca import CertificateAuthority
from .tokens import AuthFailed, TokenStore, auth_failed
from ..config.names import is_ip

__all__ = [
    "ServingCert",
    "SERVICE",
    "METHOD",
    "SERVER_NAME",
    "XDS_SERVER_NAME",
    "CertificateService",
    "CsrServer",
    "request_certificate",
    "sign_proof",
]

log = logging.getLogger(__name__)

SERVICE = "novamesh.security.v1.CertificateService"
METHOD = f"/{SERVICE}/CreateCertificate"
#: The DNS name in the control plane's serving certificate (clients override the target name).
SERVER_NAME = "novamesh-control-plane"
#: The TLS server name (SNI) that routes a connection on the CSR port to mutual-TLS xDS
#: (security/portmux.py); also in the serving certificate.
XDS_SERVER_NAME = f"xds.{SERVER_NAME}"
_MAX_REQUEST = 128 * 1024


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sign_proof(key: pki.PrivateKey, csr_pem: bytes) -> str:
    """The renewal proof: ``key``'s signature over SHA-256(csr_pem), base64."""
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(_digest(csr_pem), padding.PKCS1v15(), hashes.SHA256())
    else:
        sig = key.sign(_digest(csr_pem), ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(sig).decode()


def _check_proof(public_key: Any, proof: str, csr_pem: bytes) -> None:
    try:
        sig = base64.b64decode(proof, validate=True)
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(sig, _digest(csr_pem), padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(sig, _digest(csr_pem), ec.ECDSA(hashes.SHA256()))
        else:
            raise auth_failed("unsupported key type in the current certificate")
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise auth_failed(f"renewal proof does not verify: {exc.__class__.__name__}") from exc


class CertificateService:
    """The transport-free core: :meth:`create` turns a request body into a response body."""

    def __init__(self, ca: CertificateAuthority, tokens: TokenStore, clock: Clock, *, trust_domain: str,
                 cert_ttl: float) -> None:  # fmt: skip
        self.ca = ca
        self.tokens = tokens
        self.clock = clock
        self.trust_domain = trust_domain
        self.cert_ttl = cert_ttl

    @staticmethod
    def parse_request(body: bytes) -> tuple[dict[str, Any], bytes]:
        """The request object and its CSR PEM; BadInput for anything malformed."""
        if len(body) > _MAX_REQUEST:
            raise pki.BadInput("request too large")
        try:
            req = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise pki.BadInput(f"request is not a JSON object: {exc}") from exc
        if not isinstance(req, dict) or not isinstance(req.get("csr"), str):
            raise pki.BadInput('request must be a JSON object with a "csr" string')
        ttl = req.get("validity_duration", 0)
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl < 0:
            raise pki.BadInput('"validity_duration" must be a non-negative number of seconds')
        for field in ("current_chain", "proof"):
            if field in req and not isinstance(req[field], str):
                raise pki.BadInput(f'"{field}" must be a string')
        try:
            return req, req["csr"].encode("utf-8")
        except UnicodeEncodeError as exc:
            raise pki.BadInput("the CSR is not text") from exc

    def authenticate(self, req: dict[str, Any], csr_pem: bytes, authorization: str | None) -> pki.SpiffeId:
        """Who the caller is: from the token, else from its current certificate + proof."""
        if authorization:
            return self.tokens.consume(authorization)
        if "current_chain" in req and "proof" in req:
            try:
                chain = pki.load_certs(req["current_chain"].encode("utf-8"))
                pki.verify_chain(chain, self.ca.trust_bundle(), self.clock.time())
                identity = pki.spiffe_of(chain[0])
            except (pki.BadInput, UnicodeEncodeError) as exc:
                raise auth_failed(f"current certificate rejected: {exc}") from exc
            if identity.trust_domain != self.trust_domain:
                raise auth_failed(f"certificate of foreign trust domain {identity.trust_domain}")
            _check_proof(chain[0].public_key(), req["proof"], csr_pem)
            return identity
        raise auth_failed("no credential (neither a join token nor a current certificate)")

    def create(self, body: bytes, authorization: str | None) -> tuple[bytes, pki.SpiffeId]:
        """Handle one request: the response body and the identity it was issued to. Raises
        :class:`~novamesh.security.tokens.AuthFailed` or :class:`~novamesh.security.pki.BadInput`."""
        req, csr_pem = self.parse_request(body)
        csr = pki.load_csr(csr_pem)  # before authenticating: a bad CSR must not burn a token
        identity = self.authenticate(req, csr_pem, authorization)
        ttl = min(float(req.get("validity_duration") or self.cert_ttl), self.cert_ttl)
        issued = self.ca.issue(csr.public_key(), [identity.uri], ttl)
        out = {
            "cert_chain": [pki.cert_pem(c).decode() for c in issued.chain],
            "trust_bundle": [pki.cert_pem(c).decode() for c in issued.roots],
        }
        return json.dumps(out).encode(), identity


class ServingCert:
    """A control-plane serving certificate (CSR service, mTLS xDS), re-issued at half its life
    or when the roots change; grpc calls :meth:`fetch` on every TLS handshake. One instance
    per server: :meth:`fetch` hands each new configuration out once."""

    def __init__(self, ca: CertificateAuthority, clock: Clock, hosts: list[str], trust_domain: str, ttl: float) -> None:
        self.ca, self.clock, self.ttl = ca, clock, ttl
        self.ips = sorted({h for h in hosts if is_ip(h)} | {"127.0.0.1"})
        self.uri = f"spiffe://{trust_domain}/ns/novamesh-system/sa/control-plane"
        self._renew_at = 0.0
        self._roots: list[str] = []
        self.current = self._make()

    def _make(self) -> grpc.ServerCertificateConfiguration:
        key = pki.generate_key("ec-p256")
        issued = self.ca.issue(key.public_key(), [self.uri], self.ttl, dns_names=[SERVER_NAME, XDS_SERVER_NAME, "localhost"], ips=self.ips)
        self._renew_at = self.clock.time() + self.ttl / 2
        self._roots = [pki.fingerprint(r) for r in issued.roots]
        # The roots verify client certificates where the server requires them (mTLS xDS).
        return grpc.ssl_server_certificate_configuration([(pki.key_pem(key), issued.chain_pem)], issued.roots_pem)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        roots = [pki.fingerprint(r) for r in self.ca.trust_bundle()]
        if self.clock.time() < self._renew_at and roots == self._roots:
            return None
        try:
            self.current = self._make()
        except Exception:  # a handshake must not die of it; the old certificate still serves
            log.exception("could not renew the CSR server's certificate")
            return None
        return self.current



class CsrServer:
    """The gRPC-over-TLS server of :class:`CertificateService` on ``host:port``.

    ``cert_hosts`` are the addresses clients dial (IP SANs of the serving certificate; defaults
    to ``host``); ``peer_name`` maps ``context.peer()`` to the caller's real address for the log
    (the control plane serves this behind :class:`~novamesh.security.portmux.SniRouter`)."""

    def __init__(self, service: CertificateService, host: str, port: int, *, server_cert_ttl: float,
                 cert_hosts: list[str] | None = None, peer_name: Callable[[str], str] | None = None) -> None:  # fmt: skip
        self.service = service
        self.host, self.port = host, port
        self.served = 0
        self.refused = 0
        self._peer_name = peer_name or (lambda peer: peer)
        self._cert = ServingCert(service.ca, service.clock, cert_hosts or [host], service.trust_domain, server_cert_ttl)
        self._server: grpc.aio.Server | None = None

    async def _handle(self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        md = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        peer = self._peer_name(context.peer())
        try:
            body, identity = self.service.create(request, md.get("authorization"))
        except AuthFailed as exc:
            self.refused += 1
            log.warning("CSR from %s refused: %s", peer, exc.reason)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "authentication failed")
        except pki.BadInput as exc:
            self.refused += 1
            log.warning("CSR from %s rejected: %s", peer, exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid certificate request: {exc}")
        except Exception:
            log.exception("CSR from %s failed", peer)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        self.served += 1
        log.info("issued a certificate for %s to %s", identity, peer)
        return body

    async def start(self) -> int:
        """Bind and start serving; returns the bound port (``port`` 0 picks one)."""
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(self._handle)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"CreateCertificate": handler})])
        creds = grpc.dynamic_ssl_server_credentials(self._cert.current, self._cert.fetch, require_client_authentication=False)
        bound = int(server.add_secure_port(f"{self.host}:{self.port}", creds))
        if not bound:
            from ..errors import NovameshError

            raise NovameshError(f"cannot listen for CSRs on {self.host}:{self.port} (port in use?); set csr_port")
        await server.start()
        self._server = server
        self.port = bound
        return bound

    async def stop(self, grace: float = 1.0) -> None:
        """Stop serving."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


async def request_certificate(
    target: str,
    roots_pem: bytes,
    csr_pem: bytes,
    *,
    token: str | None = None,
    current: tuple[bytes, pki.PrivateKey] | None = None,
    ttl: float = 0,
    timeout: float = 10.0,
) -> tuple[bytes, bytes]:
    """Client side: ask the CSR service at ``target`` (``host:port``, verified against
    ``roots_pem``) to sign ``csr_pem``, proving identity with ``token`` or ``current`` (chain
    PEM, key). Returns (chain PEM, trust bundle PEM). Raises ``grpc.aio.AioRpcError``."""
    req: dict[str, Any] = {"csr": csr_pem.decode(), "validity_duration": int(ttl)}
    metadata: list[tuple[str, str]] = []
    if token is not None:
        metadata.append(("authorization", f"Bearer {token}"))
    if current is not None:
        req["current_chain"] = current[0].decode()
        req["proof"] = sign_proof(current[1], csr_pem)
    creds = grpc.ssl_channel_credentials(root_certificates=roots_pem)
    options = [("grpc.ssl_target_name_override", SERVER_NAME)]
    async with grpc.aio.secure_channel(target, creds, options=options) as channel:
        call = channel.unary_unary(METHOD)
        raw = await call(json.dumps(req).encode(), metadata=metadata, timeout=timeout)
    resp = json.loads(raw)
    return "".join(resp["cert_chain"]).encode(), "".join(resp["trust_bundle"]).encode()
