"""The mesh CA: who signs workload certificates, and which roots workloads trust.

Two implementations of :class:`CertificateAuthority`:

* :class:`StoreCA` (default): a self-signed root created once (``root_cert_ttl``, 10 years) and
  kept in the config store (secret ``ca/state``). Its root can be rotated without downtime in
  three steps (:func:`rotate_root`): ``start`` adds a new root to the trust bundle (the old root
  still signs), ``activate`` makes the new root sign, ``finish`` drops the old root from the
  bundle. Between steps, wait at least one certificate lifetime so every workload holds the new
  bundle (and, before ``finish``, a certificate from the new root).
* :class:`PluggedCA`: an intermediate given as files in a directory (``ca-cert.pem``,
  ``ca-key.pem``, ``root-cert.pem``, ``cert-chain.pem``: what cert-manager or an offline root
  produces, Istio's "plugged-in CA"). :meth:`PluggedCA.maybe_reload` re-reads them when their
  modification time changes. ``root-cert.pem`` may hold several roots (a root rotation).

Errors: bad plugged-in files raise :class:`~novamesh.errors.NovameshError` naming the file and
what is wrong; a rotation step that does not fit the phase raises NovameshError saying what to
run instead.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization as _ser

from ..clock import Clock
from ..errors import NovameshError
from ..store.base import ConfigStore
from . import pki

__all__ = ["Issued", "CertificateAuthority", "StoreCA", "PluggedCA", "rotate_root", "open_ca", "PLUGGED_FILES"]

log = logging.getLogger(__name__)

#: The files of a plugged-in CA directory.
PLUGGED_FILES = ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")
STATE_SECRET = "ca/state"
ROOT_STEPS = ("start", "activate", "finish")


@dataclass(frozen=True)
class Issued:
    """A signed certificate: ``chain`` is leaf first, then intermediates (no root);
    ``roots`` is the trust bundle at the time of issue."""

    chain: list[x509.Certificate]
    roots: list[x509.Certificate]

    @property
    def chain_pem(self) -> bytes:
        """Leaf and intermediates, PEM."""
        return pki.cert_pem(self.chain)

    @property
    def roots_pem(self) -> bytes:
        """The trust bundle, PEM."""
        return pki.cert_pem(self.roots)


@dataclass(frozen=True)
class _Signer:
    cert: x509.Certificate
    key: pki.PrivateKey
    intermediates: list[x509.Certificate]  # between cert and a root, nearest first
    roots: list[x509.Certificate]


class CertificateAuthority(Protocol):
    """What the CSR service needs from a CA."""

    def issue(self, public_key: Any, uris: list[str], ttl: float, *, dns_names: list[str] | None = None,
              ips: list[str] | None = None) -> Issued:  # fmt: skip
        """Sign ``public_key`` with exactly these SANs for ``ttl`` seconds."""
        ...

    def trust_bundle(self) -> list[x509.Certificate]:
        """Every root a workload must trust right now."""
        ...

    def status(self) -> dict[str, Any]:
        """JSON-able description (mode, roots with fingerprints and expiry, signer)."""
        ...

    def signer_subject(self) -> str:
        """The subject (RFC 4514) of the certificate that signs workload certificates now:
        agents compare it with their leaf's issuer to learn that a new root signs."""
        ...


def _issue(signer: _Signer, clock: Clock, public_key: Any, uris: list[str], ttl: float,
           dns_names: list[str] | None, ips: list[str] | None) -> Issued:  # fmt: skip
    leaf = pki.sign(issuer_cert=signer.cert, issuer_key=signer.key, public_key=public_key, uris=uris,
                    now=clock.time(), ttl=ttl, dns_names=dns_names, ips=ips)  # fmt: skip
    own = [] if signer.cert in signer.roots else [signer.cert]
    return Issued([leaf, *own, *signer.intermediates], list(signer.roots))


def _describe(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "fingerprint": pki.fingerprint(cert),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }


class StoreCA:
    """Self-signed root kept in the store (see the module docstring). The state is re-read
    from the store every :attr:`REFRESH` seconds, so a root rotation made through any replica
    (or the REST API) applies everywhere."""

    REFRESH = 1.0
    _local_writes = 0
    """Writes of the CA state made by this process (:meth:`state_written`)."""

    @classmethod
    def state_written(cls) -> None:
        """This process just wrote the CA state (a rotation step, a restore): every StoreCA of
        the process re-reads it on its next use instead of within :attr:`REFRESH` seconds, so a
        replica publishes its own change at once (other replicas pick it up within REFRESH)."""
        cls._local_writes += 1

    def __init__(self, store: ConfigStore, clock: Clock, *, key_type: str = "ec-p256",
                 trust_domain: str = "cluster.local", root_ttl: float = 10 * 365 * 86400) -> None:  # fmt: skip
        self.store = store
        self.clock = clock
        self.key_type = key_type
        self.trust_domain = trust_domain
        self.root_ttl = root_ttl
        self._lock = threading.Lock()
        self._raw: bytes | None = None
        self._signer: _Signer | None = None
        self._checked = 0.0
        self._seen_writes = -1
        if store.get_secret(STATE_SECRET) is None and _create_once(store, _dump({"roots": [self._new_root()], "signer": 0})):
            log.info("created a self-signed %s root CA for trust domain %s", key_type, trust_domain)

    def _new_root(self) -> dict[str, str]:
        key = pki.generate_key(self.key_type)
        # The creation time in the name tells the roots of a rotation apart.
        name = f"novamesh root CA {self.trust_domain} {int(self.clock.time())}"
        cert = pki.self_signed_root(key, name, "novamesh", self.clock.time(), self.root_ttl)
        return {"cert": pki.cert_pem(cert).decode(), "key": pki.key_pem(key).decode()}

    def _current(self) -> _Signer:
        # Called on every TLS handshake of the CSR/xDS servers: read the store at most once per
        # REFRESH seconds (an etcd read is a network call); a rotation applies within that.
        now = self.clock.monotonic()
        writes = StoreCA._local_writes
        if self._signer is not None and now - self._checked < self.REFRESH and writes == self._seen_writes:
            return self._signer
        raw = self.store.get_secret(STATE_SECRET)
        if raw is None:
            raise NovameshError("the CA state vanished from the store")
        self._checked, self._seen_writes = now, writes
        with self._lock:
            if raw != self._raw or self._signer is None:
                state = json.loads(raw)
                roots = [pki.load_certs(r["cert"].encode())[0] for r in state["roots"]]
                idx = int(state["signer"])
                key = pki.load_key(state["roots"][idx]["key"].encode())
                self._signer = _Signer(roots[idx], key, [], roots)
                self._raw = raw
            return self._signer

    def issue(self, public_key: Any, uris: list[str], ttl: float, *, dns_names: list[str] | None = None,
              ips: list[str] | None = None) -> Issued:  # fmt: skip
        return _issue(self._current(), self.clock, public_key, uris, ttl, dns_names, ips)

    def trust_bundle(self) -> list[x509.Certificate]:
        return list(self._current().roots)

    def signer_subject(self) -> str:
        return self._current().cert.subject.rfc4514_string()

    def status(self) -> dict[str, Any]:
        signer = self._current()
        roots = [{**_describe(r), "signing": r == signer.cert} for r in signer.roots]
        phase = "stable" if len(roots) == 1 else ("rotating: new root added" if not roots[-1]["signing"]
                                                  else "rotating: new root signing")  # fmt: skip
        return {"mode": "self-signed", "key_type": self.key_type, "roots": roots, "phase": phase}


def rotate_root(ca: StoreCA, step: str) -> dict[str, Any]:
    """One step of a root rotation (``start`` | ``activate`` | ``finish``); returns the new
    status. Raises NovameshError when the step does not fit the current phase."""
    raw = ca.store.get_secret(STATE_SECRET)
    if raw is None:
        raise NovameshError("the CA has no state in the store")
    state = json.loads(raw)
    n = len(state["roots"])
    if step == "start":
        if n > 1:
            raise NovameshError("a root rotation is already in progress; run `novamesh ca rotate-root --activate` or --finish")
        state["roots"].append(ca._new_root())
    elif step == "activate":
        if n < 2 or state["signer"] == n - 1:
            raise NovameshError("nothing to activate; start a rotation first with `novamesh ca rotate-root --start`")
        state["signer"] = n - 1
    elif step == "finish":
        if n < 2 or state["signer"] != n - 1:
            raise NovameshError("the new root does not sign yet; run `novamesh ca rotate-root --activate` first "
                                "and wait one certificate lifetime")  # fmt: skip
        state = {"roots": [state["roots"][-1]], "signer": 0}
    else:
        raise NovameshError(f"unknown rotation step {step!r}; use one of {', '.join(ROOT_STEPS)}")
    ca.store.put_secret(STATE_SECRET, _dump(state))
    StoreCA.state_written()  # every CA object of this process applies the step at once
    log.warning("root CA rotation: %s done", step)
    return ca.status()


def _create_once(store: ConfigStore, state: bytes) -> bool:
    """Store the first CA state unless another replica just did (a shared etcd store creates it
    in one compare-and-create transaction, so replicas starting together share one root)."""
    create = getattr(store, "create_if_absent", None)
    if callable(create):
        return bool(create(f"secret/{STATE_SECRET}", state.decode(), 0))
    store.put_secret(STATE_SECRET, state)
    return True


def _dump(state: dict[str, Any]) -> bytes:
    return json.dumps(state, sort_keys=True).encode()


class PluggedCA:
    """An intermediate CA from files in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | Path, clock: Clock) -> None:
        self.directory = Path(directory)
        self.clock = clock
        self._stamp: tuple[float, ...] = ()
        self._signer = self._load()

    def _stamps(self) -> tuple[float, ...]:
        try:
            return tuple((self.directory / f).stat().st_mtime for f in PLUGGED_FILES if (self.directory / f).exists())
        except OSError:
            return ()

    def _read(self, name: str, required: bool = True) -> bytes:
        path = self.directory / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            if not required:
                return b""
            raise NovameshError(f"plugged-in CA: {path} is missing; the directory needs {', '.join(PLUGGED_FILES)}") from None
        except OSError as exc:
            raise NovameshError(f"plugged-in CA: cannot read {path}: {exc}") from exc

    def _load(self) -> _Signer:
        stamp = self._stamps()
        where = self.directory
        try:
            cert = pki.load_certs(self._read("ca-cert.pem"))[0]
            key = pki.load_key(self._read("ca-key.pem"))
            roots = pki.load_certs(self._read("root-cert.pem"))
            chain_raw = self._read("cert-chain.pem", required=False)
        except pki.BadInput as exc:
            raise NovameshError(f"plugged-in CA in {where}: {exc}") from exc
        chain = pki.load_certs(chain_raw) if chain_raw.strip() else [cert]
        # cert-chain.pem conventionally starts with ca-cert.pem and may end with the root.
        intermediates = [c for c in chain if c != cert and c not in roots]
        if cert.public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
            raise NovameshError(f"plugged-in CA in {where}: ca-key.pem does not belong to ca-cert.pem")
        try:
            pki.verify_chain([cert, *intermediates], roots, self.clock.time())
        except pki.BadInput as exc:
            raise NovameshError(f"plugged-in CA in {where}: ca-cert.pem does not chain to root-cert.pem: {exc}") from exc
        self._stamp = stamp
        return _Signer(cert, key, intermediates, roots)

    def maybe_reload(self) -> bool:
        """Re-read the files if their modification times changed; returns whether the CA
        changed. A broken new set is logged and the previous one kept."""
        if self._stamps() == self._stamp:
            return False
        try:
            self._signer = self._load()
        except NovameshError as exc:
            log.error("%s; keeping the previous CA", exc)
            self._stamp = self._stamps()  # log once per change, not once per poll
            return False
        log.info("plugged-in CA reloaded from %s", self.directory)
        return True

    def issue(self, public_key: Any, uris: list[str], ttl: float, *, dns_names: list[str] | None = None,
              ips: list[str] | None = None) -> Issued:  # fmt: skip
        return _issue(self._signer, self.clock, public_key, uris, ttl, dns_names, ips)

    def trust_bundle(self) -> list[x509.Certificate]:
        return list(self._signer.roots)

    def signer_subject(self) -> str:
        return self._signer.cert.subject.rfc4514_string()

    def status(self) -> dict[str, Any]:
        return {
            "mode": f"plugged-in ({self.directory})",
            "signer": _describe(self._signer.cert),
            "roots": [_describe(r) for r in self._signer.roots],
            "phase": "stable" if len(self._signer.roots) == 1 else "rotating (several roots in root-cert.pem)",
        }


_SPKI = (_ser.Encoding.DER, _ser.PublicFormat.SubjectPublicKeyInfo)


def open_ca(store: ConfigStore, clock: Clock, *, ca_dir: str, key_type: str, trust_domain: str,
            root_ttl: float) -> StoreCA | PluggedCA:  # fmt: skip
    """The CA the settings ask for: plugged-in when ``ca_dir`` is set, else the store's root."""
    if ca_dir:
        return PluggedCA(ca_dir, clock)
    return StoreCA(store, clock, key_type=key_type, trust_domain=trust_domain, root_ttl=root_ttl)
