"""Semantic checks of a DestinationRule's ``trafficPolicy`` (Istio's own validation rules, plus a
few where Istio would silently do something surprising).

Called from :mod:`._semantic` for ``spec.trafficPolicy`` and every ``spec.subsets[i].trafficPolicy``.
Every problem is returned with its field path and a hint.

Judgement calls, documented in docs/istio-fields.md:

- ``simple: PASSTHROUGH`` is rejected as not supported yet (it needs original-destination
  clusters, which local mode without traffic capture cannot use).
- Durations must be at least 1ms and a whole number of milliseconds, as Istio requires; TCP
  keepalive ``time``/``interval`` must be whole seconds, Envoy's unit (Istio truncates silently).
- Two ``portLevelSettings`` for the same port are rejected (Istio silently uses the first).
- ``useSourceIp: false`` is not a hash key: it would hash nothing.
- TLS certificate paths must be absolute (Envoy would resolve a relative one against its own
  working directory), and ``insecureSkipVerify: true`` may not be combined with
  ``caCertificates`` or ``subjectAltNames`` (Istio silently ignores them).
"""

from __future__ import annotations

from ._paths import Problem
from .base import parse_duration
from .types_traffic import (
    ClientTLSSettings,
    ConnectionPoolSettings,
    ConsistentHashLB,
    LoadBalancerSettings,
    OutlierDetection,
    TrafficPolicy,
)

__all__ = ["traffic_policy_problems"]

_FIELDS_DOC = "docs/istio-fields.md"
_HASH_KEYS = ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")
_MAX_RING = 8_388_608  # Envoy's maximum_ring_size default (8M): a larger minimum is refused
_MAX_MAGLEV = 5_000_011  # Envoy's limit for a Maglev table


def traffic_policy_problems(policy: TrafficPolicy | None, path: str) -> list[Problem]:
    """Every problem in ``policy`` found at ``path`` (e.g. ``spec.trafficPolicy``)."""
    if policy is None:
        return []
    problems: list[Problem] = []
    if not (policy.load_balancer or policy.connection_pool or policy.outlier_detection or policy.tls
            or policy.port_level_settings):
        problems.append(
            Problem(path, "traffic policy has no settings", "add loadBalancer, connectionPool, outlierDetection, tls "
                    "or portLevelSettings, or remove 'trafficPolicy'")
        )
    problems += _settings(policy.load_balancer, policy.connection_pool, policy.outlier_detection, path)
    problems += _tls(policy.tls, f"{path}.tls")
    seen: dict[int, int] = {}
    for i, pls in enumerate(policy.port_level_settings):
        where = f"{path}.portLevelSettings[{i}]"
        if pls.port is None:
            problems.append(
                Problem(f"{where}.port", "port level settings need a port",
                        "add `port: {number: <service port>}` naming the port these settings apply to")
            )
        elif pls.port.number in seen:
            problems.append(
                Problem(f"{where}.port.number",
                        f"port {pls.port.number} already has settings ({path}.portLevelSettings[{seen[pls.port.number]}])",
                        "merge the two entries into one")
            )
        else:
            seen[pls.port.number] = i
        if not (pls.load_balancer or pls.connection_pool or pls.outlier_detection or pls.tls):
            problems.append(
                Problem(where, "port level settings have no settings",
                        "add loadBalancer, connectionPool, outlierDetection or tls, or remove the entry")
            )
        problems += _settings(pls.load_balancer, pls.connection_pool, pls.outlier_detection, where)
        problems += _tls(pls.tls, f"{where}.tls")
    return problems


def _settings(
    lb: LoadBalancerSettings | None, pool: ConnectionPoolSettings | None, outlier: OutlierDetection | None, path: str
) -> list[Problem]:
    return (
        _load_balancer(lb, f"{path}.loadBalancer")
        + _connection_pool(pool, f"{path}.connectionPool")
        + _outlier(outlier, f"{path}.outlierDetection")
    )


def _load_balancer(lb: LoadBalancerSettings | None, path: str) -> list[Problem]:
    if lb is None:
        return []
    if lb.simple is not None and lb.consistent_hash is not None:
        return [
            Problem(path, f"both simple ({lb.simple}) and consistentHash are set; a load balancer has one algorithm",
                    "keep either 'simple' or 'consistentHash'")
        ]
    if lb.simple is None and lb.consistent_hash is None:
        return [Problem(path, "load balancer settings name no algorithm",
                        "set `simple: ROUND_ROBIN | LEAST_REQUEST | RANDOM` or `consistentHash: {...}`")]
    if lb.simple == "PASSTHROUGH":
        return [
            Problem(f"{path}.simple", f"simple: PASSTHROUGH is not supported by novamesh yet (see {_FIELDS_DOC})",
                    "use ROUND_ROBIN, LEAST_REQUEST or RANDOM")
        ]
    if lb.consistent_hash is not None:
        return _consistent_hash(lb.consistent_hash, f"{path}.consistentHash")
    return []


def _consistent_hash(ch: ConsistentHashLB, path: str) -> list[Problem]:
    problems: list[Problem] = []
    keys = [
        name
        for name, value in zip(
            _HASH_KEYS, (ch.http_header_name, ch.http_cookie, ch.use_source_ip or None, ch.http_query_parameter_name)
        )
        if value is not None
    ]
    if not keys:
        problems.append(
            Problem(path, "consistent hash has no hash key",
                    "set one of httpHeaderName, httpCookie, useSourceIp: true, httpQueryParameterName")
        )
    elif len(keys) > 1:
        problems.append(
            Problem(path, f"consistent hash has {len(keys)} hash keys ({', '.join(keys)}); Istio allows one",
                    f"keep one of {', '.join(keys)}")
        )
    if ch.http_header_name is not None and not ch.http_header_name.strip():
        problems.append(Problem(f"{path}.httpHeaderName", "header name is empty", "name the header to hash, e.g. x-user"))
    if ch.http_query_parameter_name is not None and not ch.http_query_parameter_name.strip():
        problems.append(Problem(f"{path}.httpQueryParameterName", "query parameter name is empty",
                                "name the parameter to hash, e.g. user"))
    if ch.http_cookie is not None:
        if not ch.http_cookie.name:
            problems.append(Problem(f"{path}.httpCookie.name", "the cookie needs a name", "add `name: <cookie name>`"))
        if ch.http_cookie.ttl is not None and parse_duration(ch.http_cookie.ttl) != 0:
            problems += _millis(ch.http_cookie.ttl, f"{path}.httpCookie.ttl")
    algorithms = [n for n, v in (("ringHash", ch.ring_hash), ("maglev", ch.maglev), ("minimumRingSize", ch.minimum_ring_size)) if v is not None]
    if len(algorithms) > 1:
        problems.append(
            Problem(path, f"{' and '.join(algorithms)} are both set; a consistent hash uses one algorithm",
                    "keep one (minimumRingSize is the deprecated form of ringHash.minimumRingSize)")
        )
    ring = ch.ring_hash.minimum_ring_size if ch.ring_hash is not None else ch.minimum_ring_size
    if ring is not None and ring > _MAX_RING:
        where = f"{path}.ringHash.minimumRingSize" if ch.ring_hash is not None else f"{path}.minimumRingSize"
        problems.append(Problem(where, f"ring size {ring} is larger than Envoy's maximum {_MAX_RING}",
                                f"use a value up to {_MAX_RING} (e.g. 1024)"))
    if ch.maglev is not None:
        size = ch.maglev.table_size
        where = f"{path}.maglev.tableSize"
        if not size:
            problems.append(Problem(where, "maglev needs a tableSize", "set a prime table size, e.g. 65537"))
        elif size > _MAX_MAGLEV or not _is_prime(size):
            problems.append(Problem(where, f"tableSize {size} must be a prime number up to {_MAX_MAGLEV}",
                                    f"use a prime such as {_next_prime(min(size, _MAX_MAGLEV))} or 65537"))
    return problems


def _connection_pool(pool: ConnectionPoolSettings | None, path: str) -> list[Problem]:
    if pool is None:
        return []
    if pool.tcp is None and pool.http is None:
        return [Problem(path, "connection pool has no settings", "add `tcp:` or `http:` settings, or remove it")]
    problems: list[Problem] = []
    if pool.tcp is not None:
        if pool.tcp.connect_timeout is not None:
            problems += _millis(pool.tcp.connect_timeout, f"{path}.tcp.connectTimeout")
        ka = pool.tcp.tcp_keepalive
        if ka is not None:
            for name, value in (("time", ka.time), ("interval", ka.interval)):
                if value is not None:
                    seconds = parse_duration(value)
                    if seconds < 1 or seconds != int(seconds):
                        problems.append(
                            Problem(f"{path}.tcp.tcpKeepalive.{name}",
                                    f"{value} is not a whole number of seconds (Envoy's keepalive unit)",
                                    f"write whole seconds, at least 1s, e.g. {max(1, round(seconds))}s")
                        )
    if pool.http is not None and pool.http.idle_timeout is not None:
        problems += _millis(pool.http.idle_timeout, f"{path}.http.idleTimeout")
    return problems


def _outlier(outlier: OutlierDetection | None, path: str) -> list[Problem]:
    if outlier is None:
        return []
    problems: list[Problem] = []
    for name, value in (("interval", outlier.interval), ("baseEjectionTime", outlier.base_ejection_time)):
        if value is not None:
            problems += _millis(value, f"{path}.{name}")
    return problems


def _tls(tls: ClientTLSSettings | None, path: str) -> list[Problem]:
    if tls is None:
        return []
    if tls.mode == "ISTIO_MUTUAL":
        return []  # mesh mTLS with the workload certificate (translate/mtls.py)
    problems: list[Problem] = []
    if tls.mode == "MUTUAL":
        for alias, value in (("clientCertificate", tls.client_certificate), ("privateKey", tls.private_key)):
            if not value:
                problems.append(Problem(f"{path}.{alias}", f"mode MUTUAL needs '{alias}'",
                                        f"add `{alias}: /path/to/file.pem` (a file on the sidecar's host)"))
    for alias, value in (("clientCertificate", tls.client_certificate), ("privateKey", tls.private_key),
                         ("caCertificates", tls.ca_certificates)):
        if value and not value.startswith("/"):
            problems.append(Problem(f"{path}.{alias}", f"'{value}' is not an absolute path",
                                    "write the absolute path of the PEM file on the sidecar's host"))
    if tls.insecure_skip_verify and (tls.ca_certificates or tls.subject_alt_names):
        problems.append(Problem(f"{path}.insecureSkipVerify",
                                "insecureSkipVerify turns off the verification caCertificates/subjectAltNames ask for",
                                "remove insecureSkipVerify, or remove caCertificates and subjectAltNames"))
    return problems


def _millis(value: str, path: str) -> list[Problem]:
    """Istio's ValidateDuration: at least 1ms, whole milliseconds."""
    seconds = parse_duration(value)
    millis = seconds * 1000
    if millis < 1 - 1e-9:
        return [Problem(path, f"duration {value} is shorter than 1ms", "use at least 1ms, e.g. 100ms or 1s")]
    if abs(millis - round(millis)) > 1e-6:
        return [Problem(path, f"duration {value} is not a whole number of milliseconds",
                        f"round it to milliseconds, e.g. {round(millis)}ms")]
    return []


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def _next_prime(n: int) -> int:
    while not _is_prime(n):
        n += 1
    return n
