"""Building blocks shared by every config model: the Spec base, StringMatch, Destination,
durations and percentages with Istio's syntax.

Kind-specific models live in :mod:`.types` (and modules it imports); everything here has no
dependency on them, so any model module can import it.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

__all__ = ["Spec", "StringMatch", "PortSelector", "Destination", "WorkloadSelector", "Duration", "Percent", "parse_duration"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns)$")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: str) -> float:
    """Seconds in an Istio/protobuf duration such as ``1.5s``, ``250ms`` or ``1h``."""
    m = _DURATION.match(value.strip())
    if not m:
        raise ValueError(
            f"{value!r} is not a duration; write a non-negative number with a unit, e.g. 5s, 250ms, 1.5s, 1m"
        )
    return float(m.group(1)) * _UNITS[m.group(2)]


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]
"""A duration string, validated with :func:`parse_duration` (negative or unit-less is an error)."""


class Spec(BaseModel):
    """Base of every spec model: camelCase aliases, unknown fields rejected, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=False,
    )


class StringMatch(Spec):
    """Istio StringMatch: exactly one of exact, prefix, regex (RE2 syntax).

    An empty StringMatch (``{}``) is allowed where Istio allows it: in ``headers`` it means
    "header present", in ``withoutHeaders`` it means "header absent".
    """

    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> StringMatch:
        set_ = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(set_) > 1:
            raise ValueError(
                f"only one of exact, prefix, regex may be set, found {', '.join(set_)}"
            )
        return self

    def is_empty(self) -> bool:
        return self.exact is None and self.prefix is None and self.regex is None


class PortSelector(Spec):
    number: int = Field(ge=1, le=65535)


class Destination(Spec):
    host: str = Field(min_length=1)
    subset: str | None = None
    port: PortSelector | None = None


class WorkloadSelector(Spec):
    labels: dict[str, str] = Field(default_factory=dict)


class Percent(Spec):
    """Istio's Percent message: ``{value: 12.5}``, between 0 and 100."""

    value: float = Field(ge=0.0, le=100.0)
