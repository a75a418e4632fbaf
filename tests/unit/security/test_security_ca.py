"""The CA: self-signed root in the store, issue/verify, root rotation, plugged-in intermediate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography import x509

from novamesh.errors import NovameshError
from novamesh.security import pki
from novamesh.security.ca import PluggedCA, StoreCA, rotate_root
from novamesh.store.sqlite import SqliteStore
from novamesh.testing.ca_files import write_intermediate_ca
from novamesh.testing.clock import ManualClock

ID = pki.SpiffeId("cluster.local", "default", "reviews")


def _leaf(ca: StoreCA | PluggedCA, ttl: float = 3600) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    key = pki.generate_key()
    issued = ca.issue(key.public_key(), [ID.uri], ttl)
    return issued.chain, issued.roots


def test_root_is_created_once_and_kept_in_the_store(store: SqliteStore, clock: ManualClock) -> None:
    ca = StoreCA(store, clock)
    root = ca.trust_bundle()
    assert len(root) == 1 and root[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root[0].not_valid_after_utc.timestamp() - clock.time() > 9.9 * 365 * 86400
    again = StoreCA(store, clock)  # a restarted control plane keeps its root
    assert [pki.fingerprint(r) for r in again.trust_bundle()] == [pki.fingerprint(root[0])]
    assert isinstance(root[0].public_key(), pki.ec.EllipticCurvePublicKey)


def test_rsa_root_by_setting(store: SqliteStore, clock: ManualClock) -> None:
    ca = StoreCA(store, clock, key_type="rsa-2048")
    assert ca.trust_bundle()[0].public_key().key_size == 2048  # type: ignore[union-attr]
    chain, roots = _leaf(ca)
    pki.verify_chain(chain, roots, clock.time())


def test_issued_certificate_chains_to_the_root_and_has_exactly_the_spiffe_san(store: SqliteStore, clock: ManualClock) -> None:
    ca = StoreCA(store, clock)
    chain, roots = _leaf(ca, ttl=600)
    pki.verify_chain(chain, roots, clock.time())
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(g.value) for g in san] == [ID.uri]
    assert pki.spiffe_of(chain[0]) == ID
    assert abs(chain[0].not_valid_after_utc.timestamp() - (clock.time() + 600)) < 2
    # Expired, and chained to a foreign root: both refused.
    with pytest.raises(pki.BadInput, match="not valid"):
        pki.verify_chain(chain, roots, clock.time() + 601)
    foreign_key = pki.generate_key()
    foreign = pki.self_signed_root(foreign_key, "other", "x", clock.time(), 3600)
    with pytest.raises(pki.BadInput, match="trusted root"):
        pki.verify_chain(chain, [foreign], clock.time())


def test_root_rotation_bundle_holds_both_roots_during_the_transition(store: SqliteStore, clock: ManualClock) -> None:
    ca = StoreCA(store, clock)
    old = ca.trust_bundle()[0]
    with pytest.raises(NovameshError, match="start a rotation"):
        rotate_root(ca, "activate")
    with pytest.raises(NovameshError, match="does not sign yet"):
        rotate_root(ca, "finish")
    clock.advance(10)
    status = rotate_root(ca, "start")
    assert status["phase"] == "rotating: new root added"
    bundle = ca.trust_bundle()
    assert len(bundle) == 2 and bundle[0] == old
    new = bundle[1]
    chain, _ = _leaf(ca)
    assert chain[0].issuer == old.subject  # the old root still signs
    with pytest.raises(NovameshError, match="already in progress"):
        rotate_root(ca, "start")
    rotate_root(ca, "activate")
    chain_b, roots = _leaf(ca)
    assert chain_b[0].issuer == new.subject and len(roots) == 2
    # During the transition, certificates of either root verify against the bundle.
    pki.verify_chain(chain, roots, clock.time())
    pki.verify_chain(chain_b, roots, clock.time())
    status = rotate_root(ca, "finish")
    assert status["phase"] == "stable" and [r["fingerprint"] for r in status["roots"]] == [pki.fingerprint(new)]
    # After the transition a certificate of the old root is refused.
    with pytest.raises(pki.BadInput):
        pki.verify_chain(chain, ca.trust_bundle(), clock.time())
    with pytest.raises(NovameshError, match="unknown rotation step"):
        rotate_root(ca, "sideways")


def _write_plugged(directory: Path, clock: ManualClock, *, with_root_in_chain: bool = True) -> tuple[x509.Certificate, x509.Certificate]:
    """An offline root and an intermediate signed by it, laid out like cert-manager does."""
    return write_intermediate_ca(directory, clock.time(), root_in_chain=with_root_in_chain)


def test_a_state_write_of_this_process_is_seen_at_once_and_others_within_refresh(store: SqliteStore, clock: ManualClock) -> None:
    polled = StoreCA(store, clock)  # e.g. the one behind GET /api/v1/ca/bundle
    clock.advance(10)  # the new root's name (creation time) differs from the first's
    assert len(polled.trust_bundle()) == 1
    # A rotation through another CA object of this process: seen without waiting REFRESH.
    rotate_root(StoreCA(store, clock), "start")
    assert len(polled.trust_bundle()) == 2
    signer = polled.signer_subject()
    # A write this process does not know of (another replica's) is seen once REFRESH has passed.
    state = json.loads(store.get_secret("ca/state") or b"{}")
    state["signer"] = 1
    store.put_secret("ca/state", json.dumps(state, sort_keys=True).encode())
    assert polled.signer_subject() == signer
    clock.advance(StoreCA.REFRESH + 0.1)
    assert polled.signer_subject() != signer


def test_plugged_in_intermediate_issues_certificates_chaining_to_the_given_root(tmp_path: Path, clock: ManualClock) -> None:
    root, inter = _write_plugged(tmp_path / "ca", clock)
    ca = PluggedCA(tmp_path / "ca", clock)
    chain, roots = _leaf(ca)
    assert chain[1] == inter and roots == [root]  # leaf + intermediate; the root comes from the bundle
    pki.verify_chain(chain, [root], clock.time())
    assert ca.status()["mode"].startswith("plugged-in")


def test_plugged_in_ca_reloads_when_its_files_change(tmp_path: Path, clock: ManualClock) -> None:
    directory = tmp_path / "ca"
    first_root, _ = _write_plugged(directory, clock)
    ca = PluggedCA(directory, clock)
    assert not ca.maybe_reload()  # nothing changed
    second_root, _ = _write_plugged(directory, clock, with_root_in_chain=False)
    for f in directory.iterdir():  # make sure the mtime moves even on coarse filesystems
        os.utime(f, (clock.time() + 5, clock.time() + 5))
    assert ca.maybe_reload()
    chain, roots = _leaf(ca)
    pki.verify_chain(chain, [second_root], clock.time())
    with pytest.raises(pki.BadInput):
        pki.verify_chain(chain, [first_root], clock.time())
    # A broken replacement is refused and the working CA kept.
    (directory / "ca-key.pem").write_bytes(pki.key_pem(pki.generate_key()))
    os.utime(directory / "ca-key.pem", (clock.time() + 10, clock.time() + 10))
    assert not ca.maybe_reload()
    pki.verify_chain(_leaf(ca)[0], [second_root], clock.time())


def test_plugged_in_ca_with_bad_files_names_the_problem(tmp_path: Path, clock: ManualClock) -> None:
    with pytest.raises(NovameshError, match="ca-cert.pem is missing"):
        PluggedCA(tmp_path / "empty", clock)
    _write_plugged(tmp_path / "ca", clock)
    (tmp_path / "ca" / "root-cert.pem").write_bytes(pki.cert_pem(pki.self_signed_root(pki.generate_key(), "x", "y", clock.time(), 60)))
    with pytest.raises(NovameshError, match="does not chain to root-cert.pem"):
        PluggedCA(tmp_path / "ca", clock)
    (tmp_path / "ca" / "ca-key.pem").write_text("garbage")
    with pytest.raises(NovameshError, match="not a PEM private key"):
        PluggedCA(tmp_path / "ca", clock)
