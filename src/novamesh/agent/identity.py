"""The workload's identity: private key, certificate, renewal, and the SDS server serving them.

:func:`start_identity` runs at agent start-up, after registration and before Envoy starts:

1. the roots that authenticate the CSR service: ``ca_bundle_file``, else fetched from the
   control plane's REST API (``GET /api/v1/ca/bundle``; trust on first use, fine on loopback);
2. a join token: ``$NOVAMESH_JOIN_TOKEN``, else the file ``join_token_file`` (``--token-file``),
   else — only when ``local_trust`` is on and the control plane is on loopback — one minted for
   this workload through ``POST /api/v1/tokens``;
3. a new private key (generated here, never sent) and a CSR, exchanged for the first certificate;
4. an :class:`~novamesh.agent.sds.SdsServer` on ``<workdir>/sds.sock`` serving it to Envoy.

:meth:`WorkloadIdentity.run` then renews before expiry (new key each time, proving possession
of the current one) at ``cert_renew_fraction`` of the lifetime minus up to
``cert_renew_jitter`` of it, retrying every ``cert_retry_interval`` on failure, and pushes each
new certificate to Envoy over SDS. Every ``trust_bundle_check_interval`` it also compares the
roots the control plane publishes with its own and renews at once when they differ, so a root
rotation step reaches every sidecar in seconds rather than at the next renewal. Without a CA on the control plane (or without any token on a
remote control plane) the workload runs without identity, which is logged.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import httpx
from cryptography import x509

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import NovameshError
from ..security import pki
from ..security.csr import request_certificate
from ..settings import Settings
from .bootstrap import csr_targets
from .sds import SdsServer, sds_socket_path

__all__ = ["Certificate", "WorkloadIdentity", "renewal_delay", "start_identity", "TOKEN_ENV"]

log = logging.getLogger(__name__)

#: Environment variable holding a join token.
TOKEN_ENV = "NOVAMESH_JOIN_TOKEN"


@dataclass(frozen=True)
class Certificate:
    """The workload's current certificate material, as PEM, and when it was received."""

    chain_pem: bytes
    key_pem: bytes
    roots_pem: bytes
    received_at: float

    @property
    def leaf(self) -> x509.Certificate:
        """The workload certificate."""
        return pki.load_certs(self.chain_pem)[0]

    @property
    def not_after(self) -> float:
        """Expiry, epoch seconds."""
        return self.leaf.not_valid_after_utc.timestamp()


def renewal_delay(received_at: float, not_after: float, now: float, fraction: float, jitter: float, rnd: float) -> float:
    """Seconds from ``now`` until renewal: at ``fraction - jitter * rnd`` (``rnd`` in [0, 1)) of
    the lifetime that started when the certificate was received; never negative."""
    life = max(0.0, not_after - received_at)
    share = min(1.0, max(0.0, fraction - jitter * rnd))
    return max(0.0, received_at + life * share - now)


def _first_url(settings: Settings) -> str:
    return settings.control_plane_url.split(",")[0].strip().rstrip("/")


def _is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WorkloadIdentity:
    """One workload's key, certificate and renewal loop (see the module docstring)."""

    def __init__(self, settings: Settings, clock: Clock, identity: pki.SpiffeId, sds: SdsServer, *,
                 rng: random.Random | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.clock = clock
        self.identity = identity
        self.sds = sds
        self.rng = rng or random.Random()
        self.current: Certificate | None = None
        self.renew_at = 0.0
        """When the current certificate is renewed (epoch seconds)."""
        self.renewals = 0
        self.failures = 0
        self.rejoins = 0
        """New first certificates after the CA stopped accepting ours (see :meth:`_rejoin`)."""
        self._rejoined_at = float("-inf")
        self.bundle_renewals = 0
        """Renewals started because the published trust bundle changed."""
        self._trust_seen: tuple[frozenset[str], str] | None = None
        self._preferred = 0

    @property
    def targets(self) -> list[str]:
        """``host:port`` of every replica's CSR service (``csr_addresses``), else the one."""
        return [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in csr_targets(self.settings)]

    @property
    def target(self) -> str:
        """The CSR service tried first: the one that answered last."""
        targets = self.targets
        return targets[self._preferred % len(targets)]

    async def _request(self, roots_pem: bytes, *, token: str | None) -> Certificate:
        key = pki.generate_key(self.settings.ca_key_type)
        csr = pki.make_csr(key, self.identity)
        current = None
        if token is None and self.current is not None:
            current = (self.current.chain_pem, pki.load_key(self.current.key_pem))
        targets = self.targets
        for attempt in range(len(targets)):
            index = (self._preferred + attempt) % len(targets)
            try:
                chain, roots = await request_certificate(
                    targets[index], roots_pem, csr, token=token, current=current, ttl=self.settings.cert_ttl
                )
            except grpc.aio.AioRpcError as exc:
                # Another replica serves the same CA: move on when this one is unreachable;
                # a refusal is an answer, not an outage.
                unreachable = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if not unreachable or attempt == len(targets) - 1:
                    raise
                log.warning("CSR service at %s unreachable (%s); trying the next replica", targets[index], exc.details())
                continue
            self._preferred = index
            break
        cert = Certificate(chain, pki.key_pem(key), roots, self.clock.time())
        got = pki.spiffe_of(cert.leaf)
        if got != self.identity:
            log.warning("the CA issued %s, not %s as requested; serving what it issued", got, self.identity)
        return cert

    async def obtain(self, roots_pem: bytes, token: str) -> Certificate:
        """The first certificate (with ``token``), installed into the SDS server."""
        try:
            cert = await self._request(roots_pem, token=token)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise NovameshError(
                    f"cannot reach the CSR service at {self.target} ({exc.details()}); check xds_host and "
                    f"csr_port (NOVAMESH_CSR_PORT) and that the control plane runs its CA"
                ) from exc
            raise NovameshError(
                f"the CSR service at {self.target} refused the first certificate for {self.identity}: "
                f"{exc.code().name} {exc.details()} (is the join token valid, unexpired and unused?)"
            ) from exc
        await self._install(cert)
        return cert

    async def renew(self) -> Certificate:
        """A new key and certificate, proven with the current one; raises on failure."""
        assert self.current is not None
        cert = await self._request(self.current.roots_pem, token=None)
        await self._install(cert)
        self.renewals += 1
        return cert

    async def _install(self, cert: Certificate) -> None:
        s = self.settings
        self.current = cert
        # Drawn once per certificate, so asking for the delay twice gives the same answer.
        self.renew_at = cert.received_at + renewal_delay(cert.received_at, cert.not_after, cert.received_at,
                                                          s.cert_renew_fraction, s.cert_renew_jitter, self.rng.random())  # fmt: skip
        await self.sds.update(cert.chain_pem, cert.key_pem, cert.roots_pem)
        log.info("certificate for %s installed (serial %x, expires in %.0fs)", self.identity,
                 cert.leaf.serial_number, cert.not_after - self.clock.time())  # fmt: skip

    def next_delay(self) -> float:
        """Seconds until the next renewal of the current certificate."""
        return max(0.0, self.renew_at - self.clock.time())

    async def run(self) -> None:
        """Renew forever (until cancelled); renew early when the published trust bundle changes."""
        delay = self.next_delay()
        while True:
            check = self.settings.trust_bundle_check_interval
            early = False
            if 0 < check < delay:
                await self.clock.sleep(check)
                early = await self._bundle_changed()
                if not early:
                    delay = self.next_delay()
                    continue
            else:
                await self.clock.sleep(delay)
            try:
                await self.renew()
            except (grpc.aio.AioRpcError, NovameshError, OSError) as exc:
                if _refused(exc) and await self._rejoin():
                    delay = self.next_delay()
                    continue
                if early:  # e.g. a rebuilt control plane with another root: keep the schedule
                    log.warning("early renewal of %s after a trust change failed (%s); next try at the "
                                "scheduled renewal", self.identity, exc)  # fmt: skip
                    delay = self.next_delay()
                    continue
                self.failures += 1
                left = (self.current.not_after if self.current else 0) - self.clock.time()
                log.error("certificate renewal for %s failed (%s); retrying in %.1fs; current certificate "
                          "expires in %.0fs", self.identity, exc, self.settings.cert_retry_interval, left)  # fmt: skip
                delay = self.settings.cert_retry_interval
                continue
            delay = self.next_delay()

    async def _rejoin(self) -> bool:
        """The CSR service refused our certificate, or presented one our roots do not verify: the
        control plane was rebuilt with another root (a wipe, a restore without ``--replace-ca``). Start over as at start-up, fetching the
        roots and getting a first certificate with a join token, when one can be had (a loopback
        control plane with ``local_trust``, or ``$NOVAMESH_JOIN_TOKEN``/``--token-file`` if still
        valid). At most once per ``rejoin_interval``; True when a new certificate is installed."""
        now = self.clock.time()
        if now - self._rejoined_at < self.settings.rejoin_interval:
            return False
        self._rejoined_at = now
        try:
            roots = await _fetch_roots(self.settings)
            token = await _token(self.settings, self.identity) if roots is not None else None
            if roots is None or token is None:
                log.error("the control plane no longer accepts %s's certificate (another CA?) and no join token is "
                          "available: restart the agent with a new token (novamesh token create)", self.identity)  # fmt: skip
                return False
            await self.obtain(roots, token)
        except (NovameshError, grpc.aio.AioRpcError, OSError) as exc:
            log.error("re-joining the mesh as %s failed: %s", self.identity, exc)
            return False
        self.rejoins += 1
        log.warning("the control plane's CA changed: %s joined again with a new certificate and trust bundle", self.identity)
        return True

    async def _bundle_changed(self) -> bool:
        """Whether the control plane's published trust has moved on from ours: other roots (a
        root rotation's start or finish) or another signer than our certificate's issuer (its
        activate step). Only a trigger: the renewal it causes brings certificate and bundle over
        the authenticated CSR channel, so a wrong answer here costs one renewal, nothing more.
        Acts once per published state, so a lagging replica cannot cause a renewal loop."""
        published = await self.published_trust()
        if published is None or self.current is None or published == self._trust_seen:
            return False
        self._trust_seen = published
        roots, signer = published
        held = frozenset(pki.fingerprint(c) for c in pki.load_certs(self.current.roots_pem))
        if roots == held and signer == self.current.leaf.issuer.rfc4514_string():
            return False
        log.info("the control plane's trust bundle or signer changed (root rotation); renewing %s now", self.identity)
        self.bundle_renewals += 1
        return True

    async def published_trust(self) -> tuple[frozenset[str], str] | None:
        """(root fingerprints, signer subject) the control plane's REST API publishes; None
        when it cannot be had."""
        try:
            async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
                resp = await http.get(f"{_first_url(self.settings)}/api/v1/ca/bundle")
            if resp.status_code != 200:
                return None
            body = resp.json()
            roots = frozenset(pki.fingerprint(c) for c in pki.load_certs("".join(body["roots"]).encode()))
            return roots, str(body["signer"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError, pki.BadInput) as exc:
            log.debug("trust bundle check failed: %s", exc)
            return None

    async def stop(self) -> None:
        """Stop the SDS server."""
        await self.sds.stop()


async def _fetch_roots(settings: Settings) -> bytes | None:
    """The CSR service's roots: from ``ca_bundle_file`` or the REST API; None if the CA is off."""
    if settings.ca_bundle_file:
        try:
            data = Path(settings.ca_bundle_file).read_bytes()
            pki.load_certs(data)
        except (OSError, pki.BadInput) as exc:
            raise NovameshError(f"ca_bundle_file {settings.ca_bundle_file}: {exc}") from exc
        return data
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
        try:
            resp = await http.get(f"{_first_url(settings)}/api/v1/ca/bundle")
        except httpx.HTTPError as exc:
            raise NovameshError(f"cannot fetch the trust bundle from {_first_url(settings)}: {exc}") from exc
    if resp.status_code in (404, 409):
        return None
    if resp.status_code != 200:
        raise NovameshError(f"trust bundle request answered {resp.status_code}: {resp.text[:200]}")
    return "".join(resp.json()["roots"]).encode()


async def _token(settings: Settings, identity: pki.SpiffeId) -> str | None:
    value = os.environ.get(TOKEN_ENV, "").strip()
    if value:
        return value
    if settings.join_token_file:
        try:
            return Path(settings.join_token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise NovameshError(f"cannot read the join token file {settings.join_token_file}: {exc}") from exc
    url = _first_url(settings)
    if not (settings.local_trust and _is_loopback_url(url)):
        return None
    body = {"namespace": identity.namespace, "service_account": identity.service_account, "ttl": 120, "uses": 1}
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
        try:
            resp = await http.post(f"{url}/api/v1/tokens", json=body)
        except httpx.HTTPError as exc:
            raise NovameshError(f"cannot mint a join token at {url}: {exc}") from exc
    if resp.status_code != 200:
        raise NovameshError(f"minting a local join token failed ({resp.status_code}): {resp.text[:200]}")
    return str(resp.json()["token"])


async def start_identity(settings: Settings, workdir: Path, namespace: str, service_account: str,
                         clock: Clock = SYSTEM_CLOCK) -> WorkloadIdentity | None:  # fmt: skip
    """Obtain the first certificate and start the SDS server (see the module docstring);
    None when the workload runs without identity. ``clock`` needs wall time (certificates)."""
    identity = pki.SpiffeId(settings.trust_domain, namespace, service_account)
    roots = await _fetch_roots(settings)
    if roots is None:
        log.warning("the control plane runs no CA: workload %s gets no certificate", identity)
        return None
    token = await _token(settings, identity)
    if token is None:
        log.warning("no join token (set $%s or --token-file): workload %s gets no certificate", TOKEN_ENV, identity)
        return None
    sds = SdsServer(sds_socket_path(workdir))
    wid = WorkloadIdentity(settings, clock, identity, sds)
    await wid.obtain(roots, token)
    await sds.start()
    return wid


def _refused(exc: BaseException) -> bool:
    """Whether the CA and this workload no longer trust each other (not: unreachable): the CSR
    service refused our certificate, or its own certificate does not chain to our roots."""
    if not isinstance(exc, grpc.aio.AioRpcError):
        return False
    return exc.code() == grpc.StatusCode.UNAUTHENTICATED or "CERTIFICATE_VERIFY_FAILED" in (exc.details() or "")
