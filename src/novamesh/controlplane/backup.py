"""Backups of a control plane's config: one JSON document, checksummed, optionally sealed.

A backup holds every resource manifest at one revision, metadata (format version, novamesh
version, creation time, source control plane, revision, trust domain, resource count), the CA
material (the CA's store secrets, see ``backup_ca``; always encrypted with a passphrase) and an ``integrity``
section. Layout and threat model: docs/backup.md.

Entry points and what they raise (every refusal is a :class:`ConfigError` whose violations say
what is wrong with the backup and how to proceed; nothing is changed):

- :func:`build_backup` makes the document from manifests; :class:`NovameshError` when CA
  material is given without a passphrase.
- :func:`verify_backup` checks format, checksum, passphrase seal (HMAC) and structure, and
  decrypts the CA material; returns a :class:`VerifiedBackup`.
- :func:`backup_mesh` / :func:`restore_mesh` do both against a :class:`Mesh`; a restore is one
  revision (:meth:`Mesh.replace_all`) or nothing.
- :func:`read_backup_file` / :func:`write_backup_file` / :func:`read_passphrase` are the file
  side used by the CLI and the scheduler (``backup_schedule``).

Integrity: ``integrity.sha256`` is SHA-256 over the canonical JSON of everything except the
``integrity`` section; it catches corruption and careless edits. Anyone can recompute it, so
when a passphrase is given the document also carries ``integrity.hmac_sha256``, keyed from the
passphrase (scrypt), which only the passphrase holder can produce.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .. import __version__
from ..errors import ConfigError, NovameshError, Violation
from .mesh import Mesh

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "PASSPHRASE_ENV",
    "CaMaterialStore",
    "VerifiedBackup",
    "build_backup",
    "verify_backup",
    "backup_mesh",
    "restore_mesh",
    "canonical_bytes",
    "dump_backup",
    "read_backup_file",
    "write_backup_file",
    "read_passphrase",
]

FORMAT = "novamesh-backup"
"""The ``format`` field every backup carries."""

FORMAT_VERSION = 1
"""The newest format this code writes and reads."""

PASSPHRASE_ENV = "NOVAMESH_BACKUP_PASSPHRASE"
"""Environment variable holding the backup passphrase (the CLI and the scheduler read it)."""

BACKUP_CODE = "backup"
"""Violation code of every backup refusal."""

SCRYPT_N = 2**15
"""scrypt cost of new backups (32 MiB, ~0.1 s). The reader accepts n from 2**14 to 2**17 and at
most 128 MiB, so a crafted backup cannot make the server spend much more than a real one."""
_SCRYPT_R, _SCRYPT_P = 8, 1
_N_RANGE = (2**14, 2**17)
_MAX_SCRYPT_MEMORY = 128 * 2**20
_CHECK_LABEL = b"novamesh-backup:passphrase-check"
_CA_AAD = b"novamesh-backup:ca:v1"
_REFUSED = "backup refused"


class CaMaterialStore(Protocol):
    """What a CA offers backups (implemented by ``backup_ca.StoreCaMaterial``)."""

    def export_material(self) -> bytes | None:
        """The CA's key and certificates as bytes, or None while there is no CA yet."""
        ...

    def import_material(self, data: bytes, *, dry_run: bool) -> str:
        """Install ``data`` (from :meth:`export_material`); returns what was done, for the report."""
        ...


@dataclass(frozen=True)
class VerifiedBackup:
    """A backup that passed :func:`verify_backup`."""

    metadata: dict[str, Any]
    manifests: list[dict[str, Any]]
    ca_material: bytes | None = None
    sealed: bool = False
    """True when the passphrase HMAC was verified (not only the plain checksum)."""
    checksum: str = ""


# -- canonical form and crypto ---------------------------------------------------------------
def canonical_bytes(doc: Mapping[str, Any]) -> bytes:
    """What the checksum and HMAC cover: every section except ``integrity``, as JSON with sorted
    keys, no spaces, UTF-8."""
    content = {k: v for k, v in doc.items() if k != "integrity"}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
    """(encryption key, MAC key), 32 bytes each, from one scrypt run."""
    key = Scrypt(salt=salt, length=64, n=n, r=r, p=p).derive(passphrase.encode())
    return key[:32], key[32:]


def _mac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def _same(ours: str, theirs: str) -> bool:
    """Constant-time comparison that also copes with non-ASCII text from a crafted file."""
    return hmac.compare_digest(ours.encode(), theirs.encode())


# -- building ----------------------------------------------------------------------------------
def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_backup(
    manifests: Sequence[Mapping[str, Any]],
    *,
    revision: int,
    created: float,
    source: str,
    trust_domain: str,
    domain_suffix: str = "cluster.local",
    passphrase: str | None = None,
    ca_material: bytes | None = None,
    scrypt_n: int = SCRYPT_N,
) -> dict[str, Any]:
    """The backup document for ``manifests`` (taken at ``revision``; ``created`` is epoch
    seconds). With ``passphrase`` the document is sealed with an HMAC and ``ca_material`` is
    encrypted; CA material without a passphrase is refused, never written in the clear."""
    if ca_material is not None and not passphrase:
        raise NovameshError(
            "the backup would include CA material, which is only written encrypted: pass "
            f"--passphrase-file FILE or set {PASSPHRASE_ENV}"
        )
    ordered = sorted(
        (dict(m) for m in manifests),
        key=lambda m: (str(m.get("kind", "")), str(m.get("metadata", {}).get("namespace", "")), str(m.get("metadata", {}).get("name", ""))),
    )
    doc: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "metadata": {
            "novamesh_version": __version__,
            "created": _iso(created),
            "source": source,
            "revision": revision,
            "trust_domain": trust_domain,
            "domain_suffix": domain_suffix,
            "resource_count": len(ordered),
            "ca_included": ca_material is not None,
        },
        "kdf": None,
        "ca": None,
        "resources": ordered,
    }
    mac_key = b""
    if passphrase:
        salt = secrets.token_bytes(16)
        enc_key, mac_key = _derive(passphrase, salt, scrypt_n, _SCRYPT_R, _SCRYPT_P)
        doc["kdf"] = {"name": "scrypt", "salt": _b64(salt), "n": scrypt_n, "r": _SCRYPT_R, "p": _SCRYPT_P,
                      "check": _mac(mac_key, _CHECK_LABEL)[:16]}
        if ca_material is not None:
            nonce = secrets.token_bytes(12)
            doc["ca"] = {"cipher": "AES-256-GCM", "nonce": _b64(nonce),
                         "ciphertext": _b64(AESGCM(enc_key).encrypt(nonce, ca_material, _CA_AAD))}
    body = canonical_bytes(doc)
    doc["integrity"] = {"sha256": hashlib.sha256(body).hexdigest(), "hmac_sha256": _mac(mac_key, body) if passphrase else None}
    return doc


# -- verifying ---------------------------------------------------------------------------------
def _refuse(file: str, message: str, hint: str, path: str = "") -> NoReturn:
    raise ConfigError([Violation(message, path=path, file=file, hint=hint, code=BACKUP_CODE)], summary=_REFUSED)


def _field(doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...], file: str, path: str) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        _refuse(file, f"malformed backup: {path} is missing or of the wrong type", "use an unmodified file written by `novamesh backup`", path)
    return value


def verify_backup(doc: Any, *, passphrase: str | None = None, file: str = "<backup>") -> VerifiedBackup:
    """Check ``doc`` (a parsed backup) before anything is restored from it: format and version,
    the SHA-256 checksum, the structure, and — when the backup was made with a passphrase —
    the passphrase, the HMAC seal and the CA material's decryption. Raises ConfigError
    (summary "backup refused") naming the first problem; ``file`` names the backup in it."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        _refuse(file, f'not a novamesh backup (no "format": "{FORMAT}")', "pass a file written by `novamesh backup`", "format")
    version = doc.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        _refuse(file, "malformed backup: format_version is missing or not a positive integer", "use an unmodified backup file", "format_version")
    if version > FORMAT_VERSION:
        _refuse(file, f"this backup has format version {version}, made by a newer novamesh; this one "
                f"({__version__}) reads up to version {FORMAT_VERSION}", "restore it with a newer novamesh", "format_version")
    integrity = _field(doc, "integrity", dict, file, "integrity")
    expected = _field(integrity, "sha256", str, file, "integrity.sha256")
    body = canonical_bytes(doc)
    computed = hashlib.sha256(body).hexdigest()
    if not _same(computed, expected):
        _refuse(file, f"checksum mismatch: the backup says sha256 {expected[:16]}..., its content hashes to "
                f"{computed[:16]}...; the file is corrupted or was edited after it was made",
                "restore an intact copy of the backup (an edited backup is never restored)", "integrity.sha256")
    metadata = _field(doc, "metadata", dict, file, "metadata")
    for name, kind in (("revision", int), ("resource_count", int), ("source", str), ("created", str), ("trust_domain", str)):
        _field(metadata, name, kind, file, f"metadata.{name}")
    resources = _field(doc, "resources", list, file, "resources")
    for i, m in enumerate(resources):
        if not isinstance(m, dict):
            _refuse(file, f"malformed backup: resources[{i}] is not a manifest", "use an unmodified backup file", f"resources[{i}]")
    if metadata["resource_count"] != len(resources):
        _refuse(file, f"malformed backup: metadata says {metadata['resource_count']} resources, the file holds {len(resources)}",
                "use an unmodified backup file", "metadata.resource_count")
    kdf, ca = doc.get("kdf"), doc.get("ca")
    if kdf is None:
        if ca is not None:
            _refuse(file, "malformed backup: CA material without key derivation parameters", "use an unmodified backup file", "ca")
        if passphrase:
            _refuse(file, "this backup carries no passphrase seal (HMAC): it was made without a passphrase, or "
                    "the seal was stripped, so its authenticity cannot be checked",
                    f"restore it without a passphrase (no --passphrase-file, {PASSPHRASE_ENV} unset) if you trust "
                    "the file (its SHA-256 checksum is still verified), or restore a backup made with the passphrase",
                    "integrity.hmac_sha256")
        return VerifiedBackup(metadata, resources, None, sealed=False, checksum=computed)
    if not passphrase:
        _refuse(file, "this backup is sealed with a passphrase", f"pass --passphrase-file FILE or set {PASSPHRASE_ENV}", "kdf")
    material, sealed = _unseal(doc, body, _field(doc, "kdf", dict, file, "kdf"), passphrase, file)
    return VerifiedBackup(metadata, resources, material, sealed=sealed, checksum=computed)


def _unseal(doc: Mapping[str, Any], body: bytes, kdf: Mapping[str, Any], passphrase: str, file: str) -> tuple[bytes | None, bool]:
    n, r, p = (_field(kdf, k, int, file, f"kdf.{k}") for k in ("n", "r", "p"))
    if (kdf.get("name") != "scrypt" or not _N_RANGE[0] <= n <= _N_RANGE[1] or n & (n - 1) or not 1 <= r <= 16
            or not 1 <= p <= 4 or 128 * n * r > _MAX_SCRYPT_MEMORY):
        _refuse(file, f"unsupported key derivation parameters (scrypt n={n}, r={r}, p={p})",
                "use an unmodified backup file written by `novamesh backup`", "kdf")
    try:
        salt = base64.b64decode(_field(kdf, "salt", str, file, "kdf.salt"), validate=True)
    except ValueError:
        _refuse(file, "malformed backup: kdf.salt is not base64", "use an unmodified backup file", "kdf.salt")
    enc_key, mac_key = _derive(passphrase, salt, n, r, p)
    seal = doc["integrity"].get("hmac_sha256")
    if not isinstance(seal, str) or not _same(_mac(mac_key, body), seal):
        if _same(_mac(mac_key, _CHECK_LABEL)[:16], str(kdf.get("check", ""))):
            _refuse(file, "the passphrase seal (HMAC) does not match: the backup was modified after it was made, "
                    "by someone who recomputed its plain checksum", "restore an intact copy of the backup", "integrity.hmac_sha256")
        _refuse(file, "wrong passphrase (or the backup's seal was tampered with)", "use the passphrase the backup was made with", "kdf")
    ca = doc.get("ca")
    if ca is None:
        return None, True
    if not isinstance(ca, dict) or ca.get("cipher") != "AES-256-GCM":
        _refuse(file, "malformed backup: unsupported CA encryption", "use an unmodified backup file", "ca.cipher")
    try:
        nonce = base64.b64decode(_field(ca, "nonce", str, file, "ca.nonce"), validate=True)
        data = base64.b64decode(_field(ca, "ciphertext", str, file, "ca.ciphertext"), validate=True)
        return AESGCM(enc_key).decrypt(nonce, data, _CA_AAD), True
    except (ValueError, InvalidTag):
        _refuse(file, "the CA material does not decrypt with this passphrase", "use an unmodified backup file", "ca")


# -- against a mesh ----------------------------------------------------------------------------
async def backup_mesh(
    mesh: Mesh, *, source: str, passphrase: str | None = None, ca: CaMaterialStore | None = None, scrypt_n: int = SCRYPT_N
) -> dict[str, Any]:
    """A backup of ``mesh``'s config as stored at its current revision. The state is read on the
    event loop; key derivation and encryption run in a worker thread."""
    revision = mesh.revision
    manifests = list(mesh.store.state_at(revision).values())
    material = ca.export_material() if ca is not None else None
    return await asyncio.to_thread(
        build_backup, manifests, revision=revision, created=mesh.clock.time(), source=source,
        trust_domain=mesh.settings.trust_domain, domain_suffix=mesh.settings.domain_suffix,
        passphrase=passphrase, ca_material=material, scrypt_n=scrypt_n,
    )


async def restore_mesh(
    mesh: Mesh,
    doc: Any,
    *,
    passphrase: str | None = None,
    dry_run: bool = False,
    author: str = "",
    message: str = "",
    file: str = "<backup>",
    ca: CaMaterialStore | None = None,
) -> dict[str, Any]:
    """Verify ``doc``, then make ``mesh``'s config set equal to it as ONE revision (or, with
    ``dry_run``, only report). The answer is the apply result (revision, changes with
    created/configured/deleted/unchanged, diff) plus ``backup`` (its metadata), ``sealed``,
    ``ca`` (what happened to the CA material) and ``warnings``. Verification (key derivation)
    runs in a worker thread, the change itself on the event loop."""
    backup = await asyncio.to_thread(verify_backup, doc, passphrase=passphrase, file=file)
    meta = backup.metadata
    label = f"backup of revision {meta['revision']} from {meta['source']} ({meta['created']})"
    from .guard import guarded  # Envoy validation of the restored config runs in a worker thread

    if backup.ca_material is not None and ca is not None:
        ca.import_material(backup.ca_material, dry_run=True)  # a CA refusal comes before any change
    result = await guarded(mesh, lambda: mesh.replace_all(backup.manifests, author=author, message=message or f"restore {label}", dry_run=dry_run, source=file))
    warnings = []
    for name in ("trust_domain", "domain_suffix"):
        theirs, ours = meta.get(name), getattr(mesh.settings, name)
        if theirs is not None and theirs != ours:
            warnings.append(f"the backup was made with {name} {theirs!r}, this control plane uses {ours!r}")
    if backup.ca_material is None:
        ca_status = "not in the backup"
    elif ca is None:
        ca_status = "in the backup and decrypted, not restored (--no-ca, or this control plane has no CA to restore it into)"
        warnings.append(ca_status)
    else:
        ca_status = ca.import_material(backup.ca_material, dry_run=dry_run)
    answer = result.to_dict()
    answer.update(backup=meta, sealed=backup.sealed, checksum=backup.checksum, ca=ca_status, warnings=warnings)
    return answer


# -- files ---------------------------------------------------------------------------------------
def dump_backup(doc: Mapping[str, Any]) -> str:
    """The file text of a backup (indented JSON; the checksum does not depend on the layout)."""
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def read_backup_file(path: str | Path) -> Any:
    """The parsed JSON of the backup file at ``path``; ConfigError if it cannot be read or is
    not JSON (a truncated file usually ends here). The content is checked by :func:`verify_backup`."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        _refuse(name, "no such file", "pass the path of a file written by `novamesh backup`")
    except (OSError, UnicodeDecodeError) as exc:
        _refuse(name, f"cannot read the backup: {exc}", "check the path and its permissions; a backup is UTF-8 JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([Violation(
            f"not a valid backup: the JSON breaks at line {exc.lineno}, column {exc.colno} ({exc.msg}); "
            "the file is truncated or corrupted", file=name, line=exc.lineno,
            hint="restore an intact copy of the backup", code=BACKUP_CODE,
        )], summary=_REFUSED) from None


def write_backup_file(path: str | Path, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically (a temporary file renamed into place), readable by
    the owner only. Raises OSError."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(dump_backup(doc))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_passphrase(file: str | Path | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """The passphrase from ``file`` (its first line), else from ``$NOVAMESH_BACKUP_PASSPHRASE``,
    else None. NovameshError if the file cannot be read or the passphrase is empty."""
    if file:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise NovameshError(f"cannot read the passphrase file {file}: {exc}") from exc
        value = text.splitlines()[0] if text else ""
        if not value:
            raise NovameshError(f"the passphrase file {file} is empty; write the passphrase on its first line")
        return value
    from_env = (os.environ if env is None else env).get(PASSPHRASE_ENV)
    if from_env is not None and not from_env:
        raise NovameshError(f"{PASSPHRASE_ENV} is set but empty; unset it or give it the passphrase")
    return from_env
