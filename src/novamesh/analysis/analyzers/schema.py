"""IST0106 SchemaValidationError: what ``apply`` would refuse."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from ..context import Context
from ..messages import Message
from ..registry import analyzer
from ._common import dr_spec, fqdn


@analyzer("IST0106", "schema.ValidationAnalyzer",
          "Every document must parse and validate (field names, types, values), as `apply` requires; "
          "a resource defined twice is reported too.")
def schema_errors(ctx: Context) -> Iterator[Message]:
    yield from ctx.load_messages


@analyzer("IST0106", "schema.ConflictingDestinationRulesAnalyzer",
          "At most one DestinationRule per host and namespace (apply refuses a second one).")
def conflicting_destination_rules(ctx: Context) -> Iterator[Message]:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    rules = ctx.of_kind("DestinationRule")
    for dr in rules:
        spec = dr_spec(dr)
        if spec is not None:
            groups[(dr.namespace, fqdn(spec.host, dr.namespace, ctx.domain_suffix))].append(dr.name)
    for dr in rules:
        spec = dr_spec(dr)
        if spec is None:
            continue
        host = fqdn(spec.host, dr.namespace, ctx.domain_suffix)
        others = [n for n in groups[(dr.namespace, host)] if n != dr.name]
        if others:
            yield ctx.message(
                "IST0106", dr,
                f"host {host!r} has more than one DestinationRule in namespace {dr.namespace!r} "
                f"(also {', '.join(others)}); novamesh allows one per host and namespace",
                path="spec.host", hint="merge the subsets and policies into one DestinationRule",
            )
