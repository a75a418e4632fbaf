"""Gateway checks: one Gateway document, gateway references in a VirtualService, and the
cross-resource rules that tie them together.

Judgement calls (documented in docs/gateways.md):

- A Gateway needs a non-empty ``selector``. Istio accepts an empty one, which then programs
  every gateway workload of the mesh; that is never what a user means.
- TLS is terminated from files (``serverCertificate``/``privateKey``/``caCertificates``, as
  Istio supports for mounted certificates); ``credentialName`` names a Kubernetes Secret and is
  rejected until novamesh has a secret store. Certificate paths must be absolute: Envoy would
  read a relative path from its own working directory.
- Modes SIMPLE and MUTUAL are served; the others, and TCP/TLS/MONGO servers (which need TCP and
  TLS routes), are rejected as not supported yet.
- A VirtualService bound to a Gateway that does not exist, or whose hosts match none of the
  Gateway's server hosts, is an error (Istio only warns, and the routes silently go nowhere).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping

from ..errors import Violation
from ._paths import Problem
from ._syntax import host_problem, is_dns1123_label, is_dns1123_subdomain
from .base import Spec
from .names import MESH_GATEWAY, resolve_gateway, resolve_host
from .resource import Resource, ResourceKey
from .types_gateway import GatewaySpec, Server, served_hosts, server_host_parts

__all__ = ["bound_hosts", "check_gateway", "gateway_ref_problems", "gateway_violations", "server_bound_hosts"]

_DOC = "docs/gateways.md"
_SERVED_PROTOCOLS = ("HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-WEB")
_TERMINATED_MODES = ("SIMPLE", "MUTUAL")
REFERENCE_CODE = "IST0101"
HOST_CODE = "IST0132"


def _plain(server: Server) -> bool:
    """Whether the server speaks plain HTTP on its port (TLS-terminating servers do not)."""
    return server.port.protocol != "HTTPS"


def check_gateway(spec: Spec) -> list[Problem]:
    """Every problem of one Gateway spec."""
    assert isinstance(spec, GatewaySpec)
    problems: list[Problem] = []
    if not spec.selector:
        problems.append(
            Problem(
                "spec.selector",
                "a Gateway needs a selector; an empty one would program every gateway workload",
                "add labels of the gateway workloads, e.g. `selector: {istio: ingressgateway}`",
            )
        )
    for i, server in enumerate(spec.servers):
        problems += _server(server, f"spec.servers[{i}]")
    problems += _clashes(spec)
    return problems


def _server(server: Server, path: str) -> list[Problem]:
    problems: list[Problem] = []
    protocol = server.port.protocol
    if not server.port.name:
        problems.append(
            Problem(f"{path}.port.name", "missing required field 'name'", "name the port, e.g. name: http")
        )
    if protocol not in _SERVED_PROTOCOLS:
        problems.append(
            Problem(
                f"{path}.port.protocol",
                f"gateway servers with protocol {protocol} are not supported yet (they need TCP/TLS "
                f"routes; see {_DOC})",
                f"use one of {', '.join(_SERVED_PROTOCOLS)}",
            )
        )
    seen: dict[str, int] = {}
    for j, host in enumerate(server.hosts):
        namespace, name = server_host_parts(host)
        where = f"{path}.hosts[{j}]"
        if namespace not in ("*", ".") and not is_dns1123_label(namespace):
            problems.append(
                Problem(
                    where,
                    f"'{namespace}' in '{host}' is not a namespace",
                    "write host, */host, ./host or <namespace>/host",
                )
            )
        reason = host_problem(name)
        if reason:
            problems.append(Problem(where, reason, "write a host such as shop.example.com or *.example.com"))
        elif name in seen:
            problems.append(
                Problem(where, f"duplicate host '{host}' (same as {path}.hosts[{seen[name]}])", "list each host once")
            )
        seen.setdefault(name, j)
    problems += _tls(server, path)
    return problems


def _tls(server: Server, path: str) -> list[Problem]:
    tls, protocol = server.tls, server.port.protocol
    if tls is None:
        if protocol == "HTTPS":
            return [
                Problem(
                    f"{path}.tls",
                    "an HTTPS server needs TLS settings",
                    "add `tls: {mode: SIMPLE, serverCertificate: /path/cert.pem, privateKey: /path/key.pem}`",
                )
            ]
        return []
    problems: list[Problem] = []
    where = f"{path}.tls"
    if protocol != "HTTPS":
        if tls.mode is not None or tls.server_certificate or tls.private_key or tls.ca_certificates:
            problems.append(
                Problem(
                    where,
                    f"a plain-text {protocol} server cannot terminate TLS; only httpsRedirect is allowed here",
                    "set the port's protocol to HTTPS, or keep just `tls: {httpsRedirect: true}`",
                )
            )
        return problems
    mode = tls.mode or "PASSTHROUGH"
    if mode not in _TERMINATED_MODES:
        problems.append(
            Problem(
                f"{where}.mode",
                f"TLS mode {mode} is not supported yet" + (" (the default when mode is unset)" if tls.mode is None else ""),
                f"use mode SIMPLE (server certificate) or MUTUAL (also verify client certificates); see {_DOC}",
            )
        )
        return problems
    if tls.credential_name:
        problems.append(
            Problem(
                f"{where}.credentialName",
                "credentialName (a Kubernetes Secret) is not supported yet",
                "give the certificate as files instead: serverCertificate and privateKey (and "
                "caCertificates for MUTUAL), absolute paths readable by the gateway",
            )
        )
        return problems
    files = [("serverCertificate", tls.server_certificate), ("privateKey", tls.private_key)]
    if mode == "MUTUAL":
        files.append(("caCertificates", tls.ca_certificates))
    elif tls.ca_certificates:
        problems.append(
            Problem(
                f"{where}.caCertificates",
                "caCertificates is only used with mode MUTUAL (to verify client certificates)",
                "remove it, or set mode: MUTUAL",
            )
        )
    for field, value in files:
        if not value:
            problems.append(
                Problem(
                    f"{where}.{field}",
                    f"TLS mode {mode} needs '{field}' (a file path)",
                    f"add e.g. {field}: /etc/novamesh/certs/{_EXAMPLE[field]}",
                )
            )
        elif not value.startswith("/"):
            problems.append(
                Problem(
                    f"{where}.{field}",
                    f"'{value}' is not an absolute path",
                    "write the full path of the file, starting with '/'",
                )
            )
    return problems


_EXAMPLE = {"serverCertificate": "tls.crt", "privateKey": "tls.key", "caCertificates": "ca.crt"}


def _clashes(spec: GatewaySpec) -> list[Problem]:
    """Servers sharing a port must agree on the protocol and must not repeat a host."""
    problems: list[Problem] = []
    first: dict[int, int] = {}
    hosts: dict[tuple[int, str], str] = {}
    names: dict[str, int] = {}
    for i, server in enumerate(spec.servers):
        path = f"spec.servers[{i}]"
        number = server.port.number
        if server.port.name and server.port.name in names:
            problems.append(
                Problem(
                    f"{path}.port.name",
                    f"port name '{server.port.name}' is used twice (also spec.servers[{names[server.port.name]}])",
                    "give each server's port a unique name",
                )
            )
        names.setdefault(server.port.name, i)
        k = first.setdefault(number, i)
        other = spec.servers[k]
        if k != i and (other.port.protocol != server.port.protocol or _plain(other) != _plain(server)):
            problems.append(
                Problem(
                    f"{path}.port.protocol",
                    f"port {number} is already served with protocol {other.port.protocol} by "
                    f"spec.servers[{k}]; one port speaks one protocol",
                    f"use another port number, or protocol {other.port.protocol}",
                )
            )
            continue
        for j, host in enumerate(server.hosts):
            _, name = server_host_parts(host)
            earlier = hosts.setdefault((number, name), f"{path}.hosts[{j}]")
            if k != i and earlier != f"{path}.hosts[{j}]":
                problems.append(
                    Problem(
                        f"{path}.hosts[{j}]",
                        f"host '{name}' is served twice on port {number} (also {earlier})",
                        "serve each host once per port: merge the servers, or remove the host from one",
                    )
                )
    return problems


def gateway_ref_problems(refs: list[str], path: str) -> list[Problem]:
    """Syntax of gateway references: ``mesh``, ``name`` or ``namespace/name``."""
    problems: list[Problem] = []
    for i, ref in enumerate(refs):
        if ref == MESH_GATEWAY:
            continue
        namespace, sep, name = ref.partition("/")
        ok = is_dns1123_subdomain(name) and is_dns1123_label(namespace) if sep else is_dns1123_subdomain(ref)
        if not ok:
            problems.append(
                Problem(
                    f"{path}[{i}]",
                    f"'{ref}' is not a gateway reference",
                    "write mesh (the sidecars), a Gateway name, or <namespace>/<name>",
                )
            )
    return problems


def bound_hosts(vs: Resource, gateway: Resource, domain_suffix: str = "cluster.local") -> set[str]:
    """Hosts of ``vs`` served by some server of ``gateway`` (namespace filters applied)."""
    spec = gateway.spec
    assert isinstance(spec, GatewaySpec)
    found: set[str] = set()
    for server in spec.servers:
        found |= server_bound_hosts(vs, gateway, server, domain_suffix)
    return found


def server_bound_hosts(vs: Resource, gateway: Resource, server: Server, domain_suffix: str = "cluster.local") -> set[str]:
    """The hosts one ``server`` of ``gateway`` serves for ``vs`` (see :func:`served_hosts`)."""
    vs_hosts = [resolve_host(h, vs.namespace, domain_suffix) for h in getattr(vs.spec, "hosts", [])]
    return served_hosts(server, vs_hosts, vs.namespace, gateway.namespace)


def _refs(vs: Resource) -> Iterator[tuple[str, str, bool]]:
    """(path, reference, top-level?) of every gateway a VirtualService names."""
    spec = vs.spec
    for i, ref in enumerate(getattr(spec, "gateways", [])):
        yield f"spec.gateways[{i}]", ref, True
    for i, http in enumerate(getattr(spec, "http", [])):
        for j, match in enumerate(http.match):
            for k, ref in enumerate(getattr(match, "gateways", [])):
                yield f"spec.http[{i}].match[{j}].gateways[{k}]", ref, False


def gateway_violations(
    state: Mapping[ResourceKey, Resource], changed: Collection[ResourceKey], domain_suffix: str = "cluster.local"
) -> list[Violation]:
    """VirtualServices naming a Gateway that does not exist (IST0101) or whose hosts none of its
    servers serve (IST0132), when the VirtualService or that Gateway is part of the change."""
    changed = set(changed)
    out: list[Violation] = []
    for key in sorted(state):
        vs = state[key]
        if key[0] != "VirtualService":
            continue
        for path, ref, top in _refs(vs):
            if ref == MESH_GATEWAY:
                continue
            namespace, _, name = resolve_gateway(ref, vs.namespace).partition("/")
            gw_key = ("Gateway", namespace, name)
            if key not in changed and gw_key not in changed:
                continue
            gateway = state.get(gw_key)
            if gateway is None:
                others = sorted(f"{k[1]}/{k[2]}" for k in state if k[0] == "Gateway" and k[2] == name)
                hint = (
                    f"did you mean {' or '.join(others)}? A name without a namespace is looked up in "
                    f"the VirtualService's namespace '{vs.namespace}'"
                    if others
                    else f"create Gateway {namespace}/{name}, or name an existing one as <namespace>/<name>"
                )
                out.append(_violation(vs, path, f"Gateway {namespace}/{name} does not exist" + _cause(vs, changed), hint, REFERENCE_CODE))
            elif top and not bound_hosts(vs, gateway, domain_suffix):
                spec = gateway.spec
                assert isinstance(spec, GatewaySpec)
                served = sorted({h for s in spec.servers for h in s.hosts})
                out.append(
                    _violation(
                        vs,
                        path,
                        f"none of the hosts of this VirtualService is served by Gateway {namespace}/{name} "
                        f"(its servers' hosts: {', '.join(served)})" + _cause(vs, changed),
                        "add one of the VirtualService's hosts to a server of the Gateway (mind a "
                        "'namespace/' prefix on server hosts), or fix spec.hosts",
                        HOST_CODE,
                    )
                )
    return out


def _cause(vs: Resource, changed: set[ResourceKey]) -> str:
    return "" if vs.key in changed else " (this change to another resource would break it)"


def _violation(vs: Resource, path: str, message: str, hint: str, code: str) -> Violation:
    return Violation(
        message=message,
        path=path,
        kind=vs.kind,
        name=vs.name,
        namespace=vs.namespace,
        file=vs.source.file,
        document=vs.source.document,
        line=vs.source.line,
        hint=hint,
        code=code,
    )
