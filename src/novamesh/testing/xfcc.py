"""Parsing Envoy's ``x-forwarded-client-cert`` header (just enough to find the caller's URI).

The header is a comma-separated list of elements, one per proxy hop, each a ``;``-separated list
of ``Key=Value`` pairs; values may be double-quoted and then contain ``,``, ``;``, ``=`` and
``\\"``. The *last* element describes the client certificate of the hop closest to us.
"""

from __future__ import annotations

__all__ = ["parse_xfcc", "caller_principal"]


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes (backslash escapes inside quotes)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def parse_xfcc(header: str) -> list[dict[str, list[str]]]:
    """Every element of the header as ``{key (lower case): [values...]}`` (``URI`` and ``DNS``
    may repeat), in the order the header lists them."""
    elements: list[dict[str, list[str]]] = []
    for raw in _split(header, ","):
        if not raw.strip():
            continue
        element: dict[str, list[str]] = {}
        for pair in _split(raw, ";"):
            key, sep, value = pair.partition("=")
            if not sep:
                continue
            element.setdefault(key.strip().lower(), []).append(_unquote(value))
        elements.append(element)
    return elements


def caller_principal(header: str | None) -> str | None:
    """The ``URI=`` value of the last element (the immediate caller's SPIFFE id), or ``None``."""
    if not header:
        return None
    elements = parse_xfcc(header)
    if not elements:
        return None
    uris = elements[-1].get("uri")
    return uris[0] if uris else None
