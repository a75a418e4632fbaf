"""The CA's part of a backup: the store's CA secrets, exported and restored.

:class:`StoreCaMaterial` implements :class:`~novamesh.controlplane.backup.CaMaterialStore` over a
:class:`~novamesh.store.base.ConfigStore`: it exports every secret of the self-signed CA
(:data:`CA_SECRETS`: the roots with their keys, which root signs, i.e. the trust bundle and the
rotation phase) as one JSON document, and installs such a document back. Control planes pick a
changed CA up by themselves (:class:`~novamesh.security.ca.StoreCA` re-reads its state from the
store every second; the CSR server's own certificate follows its roots), so a restore needs no
restart, on one replica or on all of them.

A plugged-in CA (``ca_dir``) keeps its material in files, not in the store: nothing is exported
for it (back the directory up with your secret manager).

Errors: :meth:`StoreCaMaterial.import_material` raises :class:`~novamesh.errors.ConfigError`
(code ``backup-ca``) when the material is malformed or when the target already has a different
root and ``replace`` is off; nothing is changed then.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.hazmat.primitives import serialization as _ser

from ..errors import ConfigError, Violation
from ..security import pki
from ..security.ca import STATE_SECRET, StoreCA
from ..store.base import ConfigStore

__all__ = ["CA_SECRETS", "MATERIAL_FORMAT", "StoreCaMaterial", "ca_for_backup", "root_fingerprints"]

CA_SECRETS = (STATE_SECRET,)
"""Names of the store secrets that make up the CA (join tokens are not CA material: they are
short-lived and would be replayable from a backup)."""

MATERIAL_FORMAT = "novamesh-ca-material"
"""The ``format`` field of the exported document."""

CODE = "backup-ca"
_SPKI = (_ser.Encoding.DER, _ser.PublicFormat.SubjectPublicKeyInfo)


def _refuse(message: str, hint: str, path: str = "ca") -> ConfigError:
    return ConfigError([Violation(message, path=path, hint=hint, code=CODE)], summary="restore refused")


def root_fingerprints(state: bytes | None) -> list[str]:
    """SHA-256 fingerprints of the roots in a ``ca/state`` secret (empty for None). Raises
    ValueError/KeyError/pki.BadInput on a malformed state."""
    if state is None:
        return []
    roots = json.loads(state)["roots"]
    return [pki.fingerprint(pki.load_certs(r["cert"].encode())[0]) for r in roots]


def _check_state(raw: bytes) -> list[str]:
    """The root fingerprints of ``raw`` after checking that every root's key belongs to its
    certificate and the signer index is valid; ConfigError otherwise."""
    try:
        state = json.loads(raw)
        roots = state["roots"]
        signer = state["signer"]
        if not isinstance(roots, list) or not roots or not isinstance(signer, int) or not 0 <= signer < len(roots):
            raise ValueError("no roots or a signer index out of range")
        for r in roots:
            cert = pki.load_certs(r["cert"].encode())[0]
            key = pki.load_key(r["key"].encode())
            if cert.public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
                raise ValueError(f"the key of root {cert.subject.rfc4514_string()} does not belong to it")
        return root_fingerprints(raw)
    except (ValueError, KeyError, TypeError, pki.BadInput) as exc:
        raise _refuse(f"the backup's CA state is malformed: {exc}", "use an unmodified backup file written by `novamesh backup`") from exc


class StoreCaMaterial:
    """CA material kept in ``store`` (see the module docstring). ``replace`` allows a restore
    to replace a different root the target already has."""

    def __init__(self, store: ConfigStore, *, replace: bool = False) -> None:
        self.store = store
        self.replace = replace

    def export_material(self) -> bytes | None:
        """Every CA secret the store holds, as JSON bytes; None when there is none (CA off, or
        a plugged-in CA)."""
        found = {name: base64.b64encode(value).decode() for name in CA_SECRETS if (value := self.store.get_secret(name)) is not None}
        if not found:
            return None
        return json.dumps({"format": MATERIAL_FORMAT, "version": 1, "secrets": found}, sort_keys=True).encode()

    def _parse(self, data: bytes) -> dict[str, bytes]:
        try:
            doc: Any = json.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != MATERIAL_FORMAT or not isinstance(doc.get("secrets"), dict):
                raise ValueError(f'not "{MATERIAL_FORMAT}"')
            secrets = {str(k): base64.b64decode(v, validate=True) for k, v in doc["secrets"].items()}
        except (ValueError, TypeError, binascii.Error) as exc:
            raise _refuse(f"the backup's CA material is malformed ({exc})", "use an unmodified backup file written by `novamesh backup`") from exc
        unknown = sorted(set(secrets) - set(CA_SECRETS))
        if unknown:
            raise _refuse(f"the backup's CA material holds unknown secrets {unknown}", "restore it with the novamesh version that made it")
        if STATE_SECRET not in secrets:
            raise _refuse(f"the backup's CA material has no {STATE_SECRET}", "use an unmodified backup file")
        return secrets

    def import_material(self, data: bytes, *, dry_run: bool) -> str:
        """Install ``data`` (from :meth:`export_material`) into the store, or with ``dry_run``
        only check it; returns what was (or would be) done. ConfigError when the material is
        malformed, or the target has a different root and ``replace`` is off."""
        secrets = self._parse(data)
        theirs = _check_state(secrets[STATE_SECRET])
        current = self.store.get_secret(STATE_SECRET)
        try:
            ours = root_fingerprints(current)
        except (ValueError, KeyError, TypeError, pki.BadInput):
            ours = ["<unreadable>"]
        if current == secrets[STATE_SECRET]:
            return "CA unchanged: this control plane already has the backup's root"
        if ours and not set(ours) & set(theirs) and not self.replace:
            raise _refuse(
                f"this control plane already has a different root CA ({_short(ours)}) than the backup ({_short(theirs)})",
                "restoring the backup's root replaces it: workloads holding certificates of the current root stop "
                "being trusted (by workloads of the restored root and by the control plane) until they renew. "
                "Pass --replace-ca if that is what you want (for example on a fresh control plane that created its "
                "own root at first start), or --no-ca to restore only the config",
            )
        what = ("restored" if not ours else "replaced the root CA" if not set(ours) & set(theirs) else "updated the CA state")
        summary = f"{what}: roots {_short(theirs)}"
        if dry_run:
            return f"{summary} (dry run: nothing changed)"
        for name in CA_SECRETS:
            self.store.put_secret(name, secrets.get(name))
        StoreCA.state_written()  # this control plane serves the restored root at once
        return summary


def _short(fingerprints: list[str]) -> str:
    return ", ".join(f[:16] for f in fingerprints)


def ca_for_backup(store: ConfigStore, *, include: bool, passphrase: str | None) -> StoreCaMaterial | None:
    """The CA material source for a backup of ``store``: None with ``include`` off or when the
    store holds no CA secrets. ConfigError (nothing written) when there is CA material but no
    passphrase: CA keys are only ever written encrypted."""
    if not include:
        return None
    material = StoreCaMaterial(store)
    if not passphrase and any(store.get_secret(name) is not None for name in CA_SECRETS):
        raise ConfigError([Violation(
            "this control plane has a CA, and its root key is only written to a backup encrypted with a passphrase",
            path="passphrase", code=CODE,
            hint="pass --passphrase-file FILE (or set NOVAMESH_BACKUP_PASSPHRASE) to include the CA encrypted, "
                 "or --no-ca to back up the config without the CA",
        )], summary="backup refused")
    return material
