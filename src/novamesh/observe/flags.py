"""Envoy response flags turned into sentences: what happened, the likely cause, the config involved.

Pure. Meanings follow Envoy's access-log documentation (``%RESPONSE_FLAGS%``); causes and config
are novamesh's. :func:`explain` takes the flags as they appear in an access log (``UO``,
``URX,UF``, ``-``) or a ``response_code_details`` value (``rbac_access_denied_matched_policy[none]``
means ``RBAC``) and, optionally, the *facts* of a service description
(:attr:`novamesh.observe.describe.ServiceDescription.facts`) to name the actual resources.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["FLAGS", "Explanation", "FlagInfo", "explain", "parse_flags", "render_explanations"]


@dataclass(frozen=True)
class FlagInfo:
    """One response flag: Envoy's name and meaning, the usual status, and novamesh's reading."""

    code: str
    name: str
    meaning: str
    cause: str
    topics: tuple[str, ...] = ()
    """Which facts of a service description are involved (see describe.TOPICS)."""
    status: str = ""


_F = FlagInfo
FLAGS: dict[str, FlagInfo] = {f.code: f for f in (
    _F("UH", "NoHealthyUpstream", "no healthy upstream host in the cluster",
       "the destination (or the chosen subset) has no ready endpoint: no workload is running or ready, "
       "the subset's labels select none, or outlier detection ejected them all",
       ("endpoints", "subsets", "outlier_detection"), "503"),
    _F("UF", "UpstreamConnectionFailure", "the connection to the upstream host failed",
       "the endpoint refused or timed out the TCP connection: the app is not listening on its port, "
       "crashed, or (for external services) the TLS settings do not match",
       ("endpoints", "tls", "connection_pool"), "503"),
    _F("UO", "UpstreamOverflow", "upstream overflow: a circuit breaker tripped",
       "more concurrent connections, pending requests or retries than the DestinationRule's connection "
       "pool allows", ("connection_pool",), "503"),
    _F("NR", "NoRouteFound", "no route matched the request (or no filter chain matched a connection)",
       "no route: the host is not in the mesh or no VirtualService route matched", ("routes", "sidecar"), "404"),
    _F("URX", "UpstreamRetryLimitExceeded", "the retry limit (HTTP) or maximum connect attempts (TCP) was reached",
       "every attempt failed; the last attempt's error is the real cause (look for UF/UC/UT or 5xx)",
       ("retries", "endpoints", "outlier_detection"), "503"),
    _F("NC", "NoClusterFound", "the upstream cluster was not found",
       "a route points at a cluster the proxy does not have yet (config still arriving) or a subset "
       "no DestinationRule defines", ("subsets", "routes"), "503"),
    _F("DT", "DurationTimeout", "the request or connection exceeded its maximum duration",
       "a maximum connection or stream duration ended it", ("connection_pool",)),
    _F("DC", "DownstreamConnectionTermination", "the downstream (client) connection was terminated",
       "the caller gave up (its own timeout, or it was stopped) before the response came", ("timeouts",)),
    _F("LH", "FailedLocalHealthCheck", "the local service failed its health check",
       "the workload's own app is failing its health check", ("endpoints",), "503"),
    _F("UT", "UpstreamRequestTimeout", "the upstream request timed out",
       "the destination answered slower than the route's timeout (or per-try timeout)",
       ("timeouts", "retries"), "504"),
    _F("LR", "LocalReset", "the connection was reset locally",
       "Envoy reset the stream itself (for example a draining or overloaded sidecar)", ("connection_pool",), "503"),
    _F("UR", "UpstreamRemoteReset", "the upstream host reset the connection",
       "the destination app closed or reset the stream (a crash, a restart, or a protocol mismatch)",
       ("endpoints", "connection_pool"), "503"),
    _F("UC", "UpstreamConnectionTermination", "the upstream connection was terminated",
       "the destination closed a connection Envoy was using; often a keep-alive connection the app "
       "closed (compare the app's idle timeout with the connection pool's idleTimeout)",
       ("connection_pool", "endpoints"), "503"),
    _F("DI", "DelayInjected", "the request was delayed by fault injection",
       "a VirtualService fault delay is configured", ("faults",)),
    _F("FI", "FaultInjected", "the request was aborted by fault injection",
       "a VirtualService fault abort is configured", ("faults",)),
    _F("RL", "RateLimited", "the request was rate limited locally", "a local rate limit applied", (), "429"),
    _F("UAEX", "UnauthorizedExternalService", "the external authorization service denied the request",
       "an ext_authz policy denied it", ("authorization",), "403"),
    _F("RLSE", "RateLimitServiceError", "the rate limit service failed", "the rate limit service is unreachable or erroring", ()),
    _F("IH", "InvalidEnvoyRequestHeaders", "a strictly checked x-envoy-* request header had an invalid value",
       "the caller sent a malformed x-envoy-* header", (), "400"),
    _F("SI", "StreamIdleTimeout", "the stream was idle too long",
       "no bytes moved for longer than the stream idle timeout (300s on outbound listeners)", ("timeouts",), "408 or 504"),
    _F("DPE", "DownstreamProtocolError", "the downstream request had an HTTP protocol error",
       "the caller sent something that is not valid HTTP for the port's protocol", ()),
    _F("UPE", "UpstreamProtocolError", "the upstream response had an HTTP protocol error",
       "the destination port's protocol is wrong (for example declared HTTP but the app speaks TCP, TLS or gRPC)",
       ("endpoints",), "502"),
    _F("UMSDR", "UpstreamMaxStreamDurationReached", "the upstream request reached its maximum stream duration",
       "a maximum stream duration ended the request", ("timeouts",)),
    _F("RFCF", "ResponseFromCacheFilter", "the response was served from a cache filter", "not a failure", ()),
    _F("NFCF", "NoFilterConfigFound", "a filter's configuration was not available",
       "an extension configuration (ECDS) has not arrived", ()),
    _F("OM", "OverloadManagerTerminated", "Envoy's overload manager terminated the request",
       "the sidecar is out of memory or connections", ()),
    _F("DF", "DnsResolutionFailed", "the request was terminated because DNS resolution failed",
       "the host of an external (DNS) service does not resolve", ("resolution",), "503"),
    _F("DO", "DropOverload", "the request was dropped by a drop_overloads policy", "the cluster's load assignment drops a share of traffic", (), "503"),
    _F("UDO", "UnconditionalDropOverload", "every request was dropped by a 100% drop_overloads policy", "the cluster's load assignment drops all traffic", (), "503"),
    _F("DR", "DownstreamRemoteReset", "the downstream (client) reset the stream", "the caller cancelled the request", ()),
    _F("RBAC", "RBAC access denied", "Envoy's RBAC filter denied the request",
       "an authorization policy denied it", ("authorization",), "403"),
)}
"""Every flag Envoy documents, plus ``RBAC`` (seen in ``response_code_details``)."""


@dataclass(frozen=True)
class Explanation:
    """The explanation of one flag; ``config`` names the resources involved (with a service)."""

    code: str
    known: bool
    sentence: str
    config: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"flag": self.code, "known": self.known, "explanation": self.sentence, "config": list(self.config)}


_SPLIT = re.compile(r"[\s,|]+")


def parse_flags(text: str) -> list[str]:
    """The flags in ``text``: ``UO``, ``URX,UF``, ``-`` (none) or a ``response_code_details``
    value such as ``rbac_access_denied_matched_policy[none]`` (-> ``RBAC``). Order kept, no repeats."""
    out: list[str] = []
    for token in _SPLIT.split(text.strip()):
        if not token or token == "-":
            continue
        code = "RBAC" if token.lower().startswith("rbac") else token.upper()
        if code not in out:
            out.append(code)
    return out


def _config_lines(info: FlagInfo, service: str, facts: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    lines: list[str] = []
    for topic in info.topics:
        lines += facts.get(topic, [])
    if info.code == "UO" and not facts.get("connection_pool"):
        lines.append(f"no DestinationRule sets a connection pool for {service}: Envoy's defaults apply "
                     "(1024 connections, 1024 pending requests, 1024 requests, 3 concurrent retries)")
    if info.code == "NR":
        lines.append(f"see `novamesh describe service {service}` and `novamesh proxy-config routes <client>`")
    if info.code in ("DI", "FI") and not facts.get("faults"):
        lines.append(f"no VirtualService route of {service} injects faults: the fault came from another hop")
    if info.code == "UT" and not facts.get("timeouts"):
        lines.append(f"no route of {service} sets a timeout (Istio's default: none); a per-try timeout or the caller's may apply")
    return tuple(dict.fromkeys(lines))


def explain(text: str, facts: Mapping[str, Sequence[str]] | None = None, service: str = "") -> list[Explanation]:
    """One :class:`Explanation` per flag in ``text``; with ``facts`` (a service description's),
    each names the config of ``service`` involved. No flags: one explanation saying so."""
    codes = parse_flags(text)
    if not codes:
        return [Explanation("-", True, "no response flag: Envoy did not fail the request itself; "
                            "any error status came from the application (or a proxy further along)")]
    out: list[Explanation] = []
    for code in codes:
        info = FLAGS.get(code)
        if info is None:
            out.append(Explanation(code, False, f"{code}: not an Envoy response flag novamesh knows; "
                                   f"known flags: {', '.join(FLAGS)}"))
            continue
        status = f" (usually with status {info.status})" if info.status else ""
        sentence = f"{code} ({info.name}): {info.meaning}{status}. Likely cause: {info.cause}."
        config = _config_lines(info, service, facts) if facts is not None else ()
        out.append(Explanation(code, True, sentence, config))
    return out


def render_explanations(items: Sequence[Explanation]) -> str:
    """Plain text: each sentence, then the config involved, indented."""
    lines: list[str] = []
    for e in items:
        lines.append(e.sentence)
        lines += [f"  config: {c}" for c in e.config]
    return "\n".join(lines) + "\n"
