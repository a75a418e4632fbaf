"""Semantic checks of PeerAuthentication (Istio's own validation rules).

- ``mtls.mode`` and every ``portLevelMtls`` mode must be one of UNSET, DISABLE, PERMISSIVE,
  STRICT (modes are matched case-sensitively, as Istio's enum is).
- ``portLevelMtls`` needs a ``selector`` with labels: Istio rejects port-level settings on a
  namespace- or mesh-wide policy, since ports only mean something for a known workload.
- ``portLevelMtls`` keys are ports (1-65535).
"""

from __future__ import annotations

from collections.abc import Callable

from ._paths import Problem
from .base import Spec
from .types_security import MTLS_MODES, PeerAuthenticationMTLS, PeerAuthenticationSpec

__all__ = ["PEER_AUTHN_CHECKERS", "check_peer_authentication"]


def _mode_problem(mtls: PeerAuthenticationMTLS, path: str) -> list[Problem]:
    if mtls.mode in MTLS_MODES:
        return []
    hint = f"use one of {', '.join(MTLS_MODES)}"
    if mtls.mode.upper() in MTLS_MODES:
        hint = f"write it in capitals: mode: {mtls.mode.upper()}"
    return [Problem(f"{path}.mode", f"unknown mTLS mode '{mtls.mode}'", hint)]


def check_peer_authentication(spec: PeerAuthenticationSpec) -> list[Problem]:
    """Every problem of one PeerAuthentication spec, with field paths under ``spec``."""
    problems: list[Problem] = []
    if spec.mtls is not None:
        problems += _mode_problem(spec.mtls, "spec.mtls")
    for port, mtls in sorted(spec.port_level_mtls.items()):
        path = f"spec.portLevelMtls[{port}]"  # as the schema check writes map keys that are ints
        if not 1 <= port <= 65535:
            problems.append(Problem(path, f"port {port} is out of range", "use a port between 1 and 65535"))
        problems += _mode_problem(mtls, path)
    if spec.port_level_mtls and (spec.selector is None or not spec.selector.match_labels):
        problems.append(
            Problem(
                "spec.portLevelMtls",
                "portLevelMtls requires a workload selector",
                "add `selector: {matchLabels: {app: NAME}}` naming the workload whose ports these are, "
                "or drop portLevelMtls and set spec.mtls.mode for the whole namespace",
            )
        )
    return problems


PEER_AUTHN_CHECKERS: dict[str, Callable[[Spec], list[Problem]]] = {
    "PeerAuthentication": lambda spec: check_peer_authentication(spec) if isinstance(spec, PeerAuthenticationSpec) else [],
}
"""Checkers of the security kinds owned here, merged into ``_semantic._CHECKERS``."""
