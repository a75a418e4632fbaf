"""PKI helpers on top of ``cryptography``: keys, CSRs, certificates, SPIFFE ids, chain checks.

Everything here is pure (time is passed in as epoch seconds) so the CA, the CSR service and the
agent share one tested implementation. Parsing functions raise :class:`BadInput` (never a
``cryptography`` exception) for anything malformed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import NovameshError

__all__ = [
    "BadInput",
    "PrivateKey",
    "SpiffeId",
    "KEY_TYPES",
    "generate_key",
    "key_pem",
    "load_key",
    "cert_pem",
    "load_certs",
    "make_csr",
    "load_csr",
    "self_signed_root",
    "sign",
    "verify_chain",
    "fingerprint",
    "spiffe_of",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

#: Key types the CA and the agent can generate (setting ``ca_key_type``).
KEY_TYPES = ("ec-p256", "rsa-2048")

_MAX_PEM = 64 * 1024  # no legitimate CSR or chain comes near this
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class BadInput(NovameshError):
    """A key, CSR, certificate or SPIFFE id could not be parsed or is not acceptable."""


@dataclass(frozen=True)
class SpiffeId:
    """``spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>``."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        for what, value in (("trust domain", self.trust_domain), ("namespace", self.namespace),
                            ("service account", self.service_account)):  # fmt: skip
            if not _NAME_RE.match(value):
                raise BadInput(f"invalid {what} {value[:80]!r}: lowercase letters, digits, '-' and '.' only")

    @property
    def uri(self) -> str:
        """The SPIFFE URI."""
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Inverse of :attr:`uri`; raises :class:`BadInput`."""
        m = re.fullmatch(r"spiffe://([^/]+)/ns/([^/]+)/sa/([^/]+)", uri)
        if not m:
            raise BadInput(f"not a workload SPIFFE id: {uri[:120]!r}")
        return cls(m.group(1), m.group(2), m.group(3))


def generate_key(key_type: str = "ec-p256") -> PrivateKey:
    """A new private key: ECDSA P-256 (default) or RSA 2048."""
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise BadInput(f"unknown key type {key_type!r}; use one of {', '.join(KEY_TYPES)}")


def key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def load_key(pem: bytes) -> PrivateKey:
    """Parse a PEM private key (EC or RSA)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise BadInput(f"not a PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise BadInput("only EC and RSA private keys are supported")
    return key


def cert_pem(certs: x509.Certificate | list[x509.Certificate]) -> bytes:
    """One or more certificates as concatenated PEM."""
    items = certs if isinstance(certs, list) else [certs]
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in items)


def load_certs(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (at least one)."""
    if len(pem) > _MAX_PEM:
        raise BadInput("certificate bundle too large")
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise BadInput(f"not a PEM certificate bundle: {exc}") from exc
    if not certs:
        raise BadInput("no certificate in the bundle")
    return certs


def make_csr(key: PrivateKey, identity: SpiffeId) -> bytes:
    """A PEM CSR asking for ``identity`` (the CA decides the identity anyway)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
        x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]), critical=True
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM CSR and check its self-signature (proof the caller holds the key)."""
    if not isinstance(pem, bytes) or len(pem) > _MAX_PEM:
        raise BadInput("CSR missing or too large")
    try:
        csr = x509.load_pem_x509_csr(pem)
        valid = csr.is_signature_valid
        key = csr.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise BadInput(f"not a PEM certificate signing request: {exc}") from exc
    if not valid:
        raise BadInput("the CSR's signature does not verify")
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise BadInput("RSA keys must have at least 2048 bits")
    elif not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in ("secp256r1", "secp384r1"):
        raise BadInput("only ECDSA P-256/P-384 and RSA keys are accepted")
    return csr


def _when(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def self_signed_root(key: PrivateKey, common_name: str, organization: str, now: float, ttl: float) -> x509.Certificate:
    """A CA root certificate valid from ``now`` (minus a minute of clock skew) for ``ttl``."""
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])  # fmt: skip
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_when(now - 60))
        .not_valid_after(_when(now + ttl))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )


def sign(
    *,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    uris: list[str],
    now: float,
    ttl: float,
    dns_names: list[str] | None = None,
    ips: list[str] | None = None,
) -> x509.Certificate:
    """A leaf certificate for ``public_key`` with exactly the given SANs (client and server
    auth), valid from ``now`` (minus a minute of skew) for ``ttl``, never past the issuer."""
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    sans += [x509.DNSName(d) for d in dns_names or []]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips or []]
    not_after = min(_when(now + ttl), issuer_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_when(now - 60))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def verify_chain(chain: list[x509.Certificate], roots: list[x509.Certificate], now: float) -> None:
    """Check that ``chain`` (leaf first, then intermediates) leads to one of ``roots``: every
    signature verifies, every issuer is a CA, every certificate is valid at ``now``. Raises
    :class:`BadInput` saying what is wrong."""
    if not chain:
        raise BadInput("empty certificate chain")
    when = _when(now)
    by_subject: dict[bytes, list[x509.Certificate]] = {}
    for c in roots:
        by_subject.setdefault(c.subject.public_bytes(), []).append(c)
    current = chain[0]
    rest = list(chain[1:])
    for _ in range(len(chain) + 1):
        if not current.not_valid_before_utc <= when <= current.not_valid_after_utc:
            raise BadInput(f"certificate {current.serial_number:x} is not valid at {when.isoformat()}")
        for root in by_subject.get(current.issuer.public_bytes(), []):
            try:
                current.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature):
                continue
            if not root.not_valid_before_utc <= when <= root.not_valid_after_utc:
                raise BadInput("the root certificate has expired")
            return
        parent = next((c for c in rest if c.subject == current.issuer), None)
        if parent is None or not _is_ca(parent):
            raise BadInput("the chain does not lead to a trusted root")
        try:
            current.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise BadInput(f"a signature in the chain does not verify: {exc}") from exc
        rest.remove(parent)
        current = parent
    raise BadInput("the chain does not lead to a trusted root")


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint of a certificate, hex (what ``novamesh ca status`` shows)."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def spiffe_of(cert: x509.Certificate) -> SpiffeId:
    """The one SPIFFE workload id in a certificate's URI SANs."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise BadInput("certificate has no subject alternative names") from exc
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]
    if len(uris) != 1:
        raise BadInput("certificate must carry exactly one SPIFFE id")
    return SpiffeId.parse(uris[0])
