"""Syntax of names, hosts, addresses and regular expressions, as Istio and Envoy define them."""

from __future__ import annotations

import ipaddress
import re

from .names import is_ip

try:
    import re2 as _re2
except ImportError:  # pragma: no cover - google-re2 is a declared dependency
    _re2 = None

__all__ = [
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "is_ip",
    "is_cidr",
    "host_problem",
    "regex_error",
]

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?")


def is_dns1123_label(value: str) -> bool:
    """Lower-case alphanumerics and '-', starting and ending alphanumeric, at most 63."""
    return len(value) <= 63 and _LABEL.fullmatch(value) is not None


def is_dns1123_subdomain(value: str) -> bool:
    """Dot-separated DNS-1123 labels, at most 253 characters in all."""
    return 0 < len(value) <= 253 and all(is_dns1123_label(p) for p in value.split("."))



def is_cidr(value: str) -> bool:
    """True for an IP address or a CIDR block."""
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


def host_problem(host: str, *, wildcard: bool = True) -> str | None:
    """Why ``host`` is not a valid (optionally wildcard-prefixed) host name, or None."""
    if not host:
        return "host must not be empty"
    if is_ip(host):
        return None
    if "*" in host:
        if not wildcard:
            return f"host '{host}' must not contain a wildcard"
        if host == "*":
            return None
        if not host.startswith("*.") or "*" in host[2:]:
            return (
                f"wildcard '*' is only allowed as the whole first label of '{host}' (*.example.com)"
            )
        host = host[2:]
    if len(host) > 253:
        return f"host '{host}' is longer than 253 characters"
    for label in host.split("."):
        if len(label) > 63 or _HOST_LABEL.fullmatch(label) is None:
            return (
                f"'{host}' is not a valid host name: label '{label}' must be 1-63 letters, "
                "digits or '-', starting and ending with a letter or digit"
            )
    return None


def regex_error(pattern: str) -> str | None:
    """The RE2 error compiling ``pattern`` (Envoy's regex engine), or None if it compiles."""
    if _re2 is None:  # pragma: no cover - fallback when google-re2 is not installed
        try:
            re.compile(pattern)
        except re.error as exc:
            return str(exc)
        return None
    options = _re2.Options()
    options.log_errors = False
    try:
        _re2.compile(pattern, options)
    except _re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        return detail.decode("utf-8", "replace") if isinstance(detail, bytes) else str(detail)
    except UnicodeError:
        return "pattern is not valid UTF-8 text"
    return None
