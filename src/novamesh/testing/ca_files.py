"""An external CA laid out as files, for tests and demos of a plugged-in CA (``ca_dir``).

:func:`write_intermediate_ca` makes what an offline root plus cert-manager (or ``openssl``) would
hand an operator: an intermediate CA certificate and key signed by a root that stays elsewhere,
in the four files novamesh reads (``ca-cert.pem``, ``ca-key.pem``, ``root-cert.pem``,
``cert-chain.pem``).
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ..security import pki

__all__ = ["write_intermediate_ca"]


def write_intermediate_ca(directory: Path, now: float, *, root_in_chain: bool = True, key_type: str = "ec-p256",
                          root_name: str = "offline root") -> tuple[x509.Certificate, x509.Certificate]:  # fmt: skip
    """Write an intermediate CA signed by a new root into ``directory``; returns (root,
    intermediate). ``cert-chain.pem`` holds the intermediate, and the root too when
    ``root_in_chain`` (both layouts occur in practice)."""
    root_key = pki.generate_key(key_type)
    root = pki.self_signed_root(root_key, root_name, "acme", now, 86400 * 365)
    inter_key = pki.generate_key(key_type)
    template = pki.self_signed_root(inter_key, f"{root_name} intermediate", "acme", now, 86400 * 30)
    builder = (
        x509.CertificateBuilder().subject_name(template.subject).issuer_name(root.subject)
        .public_key(inter_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(template.not_valid_before_utc).not_valid_after(template.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
    )  # fmt: skip
    inter = builder.sign(root_key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca-cert.pem").write_bytes(pki.cert_pem(inter))
    (directory / "ca-key.pem").write_bytes(pki.key_pem(inter_key))
    (directory / "root-cert.pem").write_bytes(pki.cert_pem(root))
    (directory / "cert-chain.pem").write_bytes(pki.cert_pem([inter, root] if root_in_chain else [inter]))
    return root, inter
