"""The echo app's switches (:class:`Behaviour`) and counters (:class:`Stats`).

Kept apart from the HTTP code so both are easy to read and test. Precedence of the switches, from
weakest to strongest: defaults, ``ECHO_*`` environment at start, ``POST /_echo/config`` at
runtime, ``x-echo-*`` headers on one request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["Behaviour", "Stats", "MAX_DELAY", "parse_delay", "parse_fraction", "parse_status"]

MAX_DELAY = 300.0
"""Longest delay accepted (seconds): a typo should not park a thread for a day."""

_ENV = {"delay": "ECHO_DELAY", "fail_fraction": "ECHO_FAIL_FRACTION", "fail_status": "ECHO_FAIL_STATUS", "status": "ECHO_STATUS"}
_HEADERS = {"delay": "x-echo-delay", "fail_fraction": "x-echo-fail-fraction", "status": "x-echo-status", "fail_status": "x-echo-fail-status"}


def parse_delay(value: object) -> float:
    """Seconds as a float in ``[0, MAX_DELAY]``; ``ValueError`` otherwise."""
    delay = _number(value, "delay")
    if not 0 <= delay <= MAX_DELAY:
        raise ValueError(f"delay must be between 0 and {MAX_DELAY:g} seconds, got {value!r}")
    return delay


def parse_fraction(value: object) -> float:
    """A probability in ``[0, 1]``; ``ValueError`` otherwise."""
    fraction = _number(value, "fail_fraction")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fail_fraction must be between 0 and 1, got {value!r}")
    return fraction


def parse_status(value: object, what: str = "status") -> int:
    """An HTTP status in ``[200, 599]`` (1xx are not final answers); ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{what} must be an integer HTTP status, got {value!r}")
    try:
        status = int(value)
    except ValueError:
        raise ValueError(f"{what} must be an integer HTTP status, got {value!r}") from None
    if not 200 <= status <= 599:
        raise ValueError(f"{what} must be between 200 and 599, got {value!r}")
    return status


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if number != number:  # NaN
        raise ValueError(f"{what} must be a number, got {value!r}")
    return number


def _parse_fail_status(value: object) -> int:
    return parse_status(value, "fail_status")


_PARSERS: dict[str, Callable[[object], Any]] = {
    "delay": parse_delay,
    "fail_fraction": parse_fraction,
    "fail_status": _parse_fail_status,
    "status": parse_status,
}


@dataclass(frozen=True)
class Behaviour:
    """How the echo app answers: wait ``delay`` seconds, then fail with ``fail_status`` with
    probability ``fail_fraction``, else answer ``status``."""

    delay: float = 0.0
    fail_fraction: float = 0.0
    fail_status: int = 503
    status: int = 200

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Behaviour:
        """Defaults overridden by ``ECHO_DELAY``, ``ECHO_FAIL_FRACTION``, ``ECHO_FAIL_STATUS`` and
        ``ECHO_STATUS``. Raises ``ValueError`` naming the variable when one is malformed."""
        changes: dict[str, Any] = {}
        for field_name, var in _ENV.items():
            raw = env.get(var)
            if raw is None or raw.strip() == "":
                continue
            try:
                changes[field_name] = _PARSERS[field_name](raw.strip())
            except ValueError as exc:
                raise ValueError(f"{var}: {exc}") from None
        return replace(cls(), **changes)

    def updated(self, changes: Mapping[str, Any]) -> Behaviour:
        """A copy with the given fields changed (a partial update); ``ValueError`` for unknown
        fields or bad values, and nothing is changed then."""
        unknown = sorted(set(changes) - set(_PARSERS))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; accepted: {', '.join(_PARSERS)}")
        parsed: dict[str, Any] = {k: _PARSERS[k](v) for k, v in changes.items()}
        return replace(self, **parsed)

    def for_request(self, headers: Mapping[str, str]) -> Behaviour:
        """This behaviour with one request's ``x-echo-*`` headers applied (``ValueError`` naming
        the header when one is malformed)."""
        changes: dict[str, Any] = {}
        for field_name, header in _HEADERS.items():
            raw = headers.get(header)
            if raw is None:
                continue
            try:
                changes[field_name] = _PARSERS[field_name](raw.strip())
            except ValueError as exc:
                raise ValueError(f"header {header}: {exc}") from None
        return replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as ``GET /_echo/config`` answers it."""
        return asdict(self)


class Stats:
    """Thread-safe request counters; ``/_echo/*`` requests are not counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = 0
        self._in_flight = 0
        self._max_in_flight = 0

    def enter(self) -> None:
        """A counted request started."""
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)

    def leave(self) -> None:
        """A counted request finished."""
        with self._lock:
            self._in_flight -= 1

    def reset(self) -> None:
        """Zero ``requests``; ``max_in_flight`` restarts from the requests in flight now."""
        with self._lock:
            self._requests = 0
            self._max_in_flight = self._in_flight

    def to_dict(self) -> dict[str, int]:
        """``{"requests", "in_flight", "max_in_flight"}``."""
        with self._lock:
            return {"requests": self._requests, "in_flight": self._in_flight, "max_in_flight": self._max_in_flight}
