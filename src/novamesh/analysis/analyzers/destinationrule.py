"""DestinationRule analyzers: TLS without server verification (IST0128, IST0129), subsets that
select no workload (IST0173) and hosts that are no service (IST0174).

The TLS checks read ``trafficPolicy.tls`` by attribute: they report nothing until the
DestinationRule model has a ``tls`` field, and need no change when it gets one.
"""

from __future__ import annotations

from collections.abc import Iterator

from ...config.names import service_fqdn
from ...config.resource import Resource
from ..context import Context
from ..messages import Message
from ..registry import analyzer
from ._common import fqdn, host_covers

_ORIGINATING = ("SIMPLE", "MUTUAL")


def _unverified(tls: object) -> str | None:
    """The TLS mode when ``tls`` originates TLS without a CA to verify the server, else None."""
    mode = getattr(tls, "mode", None)
    mode_name = str(getattr(mode, "value", mode) or "")
    if mode_name not in _ORIGINATING:
        return None
    if getattr(tls, "ca_certificates", None) or getattr(tls, "credential_name", None):
        return None
    if getattr(tls, "insecure_skip_verify", None):
        return None  # the user said so explicitly
    return mode_name


def _policies(dr: Resource) -> Iterator[tuple[str, object]]:
    """(path, trafficPolicy) at the top level and of every subset."""
    policy = getattr(dr.spec, "traffic_policy", None)
    if policy is not None:
        yield "spec.trafficPolicy", policy
    for i, subset in enumerate(getattr(dr.spec, "subsets", None) or ()):
        sub_policy = getattr(subset, "traffic_policy", None)
        if sub_policy is not None:
            yield f"spec.subsets[{i}].trafficPolicy", sub_policy


def _host(ctx: Context, dr: Resource) -> str:
    return fqdn(str(getattr(dr.spec, "host", "")), dr.namespace, ctx.domain_suffix)


_TLS_HINT = ("set caCertificates to the CA bundle that signed the server's certificate "
             "(or credentialName), so the sidecar verifies who it talks to")


@analyzer("IST0128", "destinationrule.ServerCertificateVerificationAnalyzer",
          "A DestinationRule that originates TLS (mode SIMPLE or MUTUAL) sets caCertificates.")
def unverified_tls(ctx: Context) -> Iterator[Message]:
    for dr in ctx.of_kind("DestinationRule"):
        for path, policy in _policies(dr):
            mode = _unverified(getattr(policy, "tls", None))
            if mode is not None:
                yield ctx.message(
                    "IST0128", dr,
                    f"DestinationRule {dr.name} in namespace {dr.namespace} has TLS mode set to {mode} but no "
                    f"caCertificates are set to validate server identity for host: {_host(ctx, dr)}",
                    path=f"{path}.tls", hint=_TLS_HINT)


@analyzer("IST0129", "destinationrule.PortServerCertificateVerificationAnalyzer",
          "Port-level TLS settings that originate TLS set caCertificates.")
def unverified_port_tls(ctx: Context) -> Iterator[Message]:
    for dr in ctx.of_kind("DestinationRule"):
        for path, policy in _policies(dr):
            for i, port_policy in enumerate(getattr(policy, "port_level_settings", None) or ()):
                mode = _unverified(getattr(port_policy, "tls", None))
                if mode is None:
                    continue
                port = getattr(getattr(port_policy, "port", None), "number", "?")
                yield ctx.message(
                    "IST0129", dr,
                    f"DestinationRule {dr.name} in namespace {dr.namespace} has TLS mode set to {mode} but no "
                    f"caCertificates are set to validate server identity for host: {_host(ctx, dr)} at port {port}",
                    path=f"{path}.portLevelSettings[{i}].tls", hint=_TLS_HINT)


def _member_labels(ctx: Context, host: str) -> list[dict[str, str]] | None:
    """Labels of every instance of service ``host`` (registered workloads, or the endpoints a
    ServiceEntry gives it); None when ``host`` is no known service."""
    svc = ctx.service(host)
    if svc is None:
        return None
    if svc.origin == "registry":
        return [w.label_dict for w in ctx.workloads or ()
                if service_fqdn(w.service, w.namespace, ctx.domain_suffix) == host]
    return [dict(e.labels) for e in svc.endpoints]


@analyzer("IST0173", "destinationrule.SubsetSelectsWorkloadsAnalyzer",
          "Every DestinationRule subset selects at least one workload of its service.",
          live_only=True)
def empty_subsets(ctx: Context) -> Iterator[Message]:
    for dr in ctx.of_kind("DestinationRule"):
        members = _member_labels(ctx, _host(ctx, dr))
        if members is None:
            continue  # IST0174
        for i, subset in enumerate(getattr(dr.spec, "subsets", None) or ()):
            labels = dict(getattr(subset, "labels", None) or {})
            if not any(all(m.get(k) == v for k, v in labels.items()) for m in members):
                wanted = ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "(none)"
                yield ctx.message(
                    "IST0173", dr,
                    f"The Subset {subset.name} defined in the DestinationRule does not select any pods "
                    f"(labels {wanted}). Which may lead to 503 UH (NoHealthyUpstream).",
                    path=f"spec.subsets[{i}].labels",
                    hint="fix the subset's labels, start workloads with these labels, or remove the subset")


@analyzer("IST0174", "destinationrule.UnknownHostAnalyzer",
          "A DestinationRule's host is a service of the mesh.",
          live_only=True)
def unknown_hosts(ctx: Context) -> Iterator[Message]:
    services = list(ctx.snapshot.services)
    for dr in ctx.of_kind("DestinationRule"):
        host = _host(ctx, dr)
        if "*" in host or any(host_covers(s, host) for s in services):
            continue
        written = str(getattr(dr.spec, "host", ""))
        yield ctx.message(
            "IST0174", dr, f"The host {written} defined in the DestinationRule does not match any services in the mesh.",
            path="spec.host",
            hint="check the spelling; use the fully qualified name for a service in another namespace; "
            "add a ServiceEntry for a host outside the mesh")
