"""What an agent runs: the workload's description, port syntax, the app's environment.

Port syntax (``--port``, repeatable)::

    NUMBER[/PROTOCOL][=APP_PORT]

    9080              HTTP service port 9080; `run` picks a free app port
    9080/grpc         gRPC
    3306/tcp=13306    TCP; the app listens on 13306 (required for every port in `agent` mode)

PROTOCOL is one of HTTP (default), HTTP2, GRPC, HTTPS, TLS, TCP, case-insensitive. The port's
name is ``<protocol>-<number>`` in lower case (``http-9080``), as Istio names ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import NovameshError
from ..model.proxy import ProxyPort

__all__ = [
    "PROTOCOLS",
    "PORT_SYNTAX",
    "PortSpec",
    "parse_port",
    "parse_labels",
    "AgentConfig",
    "app_environment",
    "free_port",
    "port_open",
]

PROTOCOLS = ("HTTP", "HTTP2", "GRPC", "HTTPS", "TLS", "TCP")
# No square brackets: this text also appears in rich-formatted --help, where they are markup.
PORT_SYNTAX = "NUMBER, NUMBER/PROTOCOL, optionally followed by =APP_PORT (e.g. 9080, 9080/grpc, 3306/tcp=13306)"

_PORT_RE = re.compile(r"^(?P<number>\d+)(?:/(?P<protocol>[A-Za-z0-9-]+))?(?:=(?P<app_port>\d+))?$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class PortSpec:
    """A service port as given on the command line (``app_port`` 0 = pick a free one)."""

    number: int
    protocol: str = "HTTP"
    app_port: int = 0

    @property
    def name(self) -> str:
        """Istio-style port name, e.g. ``http-9080``."""
        return f"{self.protocol.lower()}-{self.number}"

    def to_proxy_port(self, app_port: int) -> ProxyPort:
        """The :class:`ProxyPort` served with the app on ``app_port``."""
        return ProxyPort(number=self.number, protocol=self.protocol, name=self.name, app_port=app_port)


def _check_port(value: int, text: str, what: str) -> int:
    if not 1 <= value <= 65535:
        raise NovameshError(f"--port {text!r}: {what} {value} is not between 1 and 65535")
    return value


def parse_port(text: str) -> PortSpec:
    """Parse ``NUMBER[/PROTOCOL][=APP_PORT]``; raises :class:`NovameshError` saying how to fix it."""
    match = _PORT_RE.match(text.strip())
    if not match:
        raise NovameshError(f"--port {text!r} is not valid; expected {PORT_SYNTAX}")
    protocol = (match["protocol"] or "HTTP").upper()
    if protocol not in PROTOCOLS:
        raise NovameshError(f"--port {text!r}: unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    number = _check_port(int(match["number"]), text, "port")
    app_port = _check_port(int(match["app_port"]), text, "app port") if match["app_port"] else 0
    return PortSpec(number=number, protocol=protocol, app_port=app_port)


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """Parse ``key=value`` items (``--label``) into a dict; later items win."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _LABEL_RE.match(key) or (value and not _LABEL_RE.match(value)):
            raise NovameshError(f"--label {item!r} is not valid; expected key=value, e.g. team=payments")
        labels[key] = value
    return labels


@dataclass(frozen=True)
class AgentConfig:
    """Everything ``novamesh run`` / ``novamesh agent`` was told about the workload.

    ``command`` is the app to start (``run``); empty means agent mode, where the app runs
    elsewhere and listens on ``app_host:APP_PORT`` for every port.
    """

    service: str
    namespace: str = "default"
    version: str = "v1"
    service_account: str = "default"
    ports: tuple[PortSpec, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    address: str | None = None
    app_host: str = "127.0.0.1"
    command: tuple[str, ...] = ()
    kind: str = "sidecar"
    """``gateway``: an Envoy with no app whose ports are served by the gateway itself."""

    def validate(self) -> None:
        """Raise :class:`NovameshError` for combinations that cannot work."""
        if not self.service:
            raise NovameshError("--service is required (the service this workload serves)")
        numbers = [p.number for p in self.ports]
        if len(set(numbers)) != len(numbers):
            raise NovameshError(f"--port: service port given twice in {numbers}")
        if self.kind == "gateway":
            return  # no app: the gateway's own listeners serve its ports
        if not self.command:
            missing = [p.number for p in self.ports if not p.app_port]
            if missing:
                raise NovameshError(
                    f"--port {missing[0]}: in agent mode every port needs the port your app listens on, "
                    f"e.g. --port {missing[0]}=8080 ({PORT_SYNTAX})"
                )


def app_environment(
    base: Mapping[str, str],
    *,
    address: str,
    ports: Sequence[ProxyPort],
    service: str,
    version: str,
    namespace: str,
    outbound_port: int,
) -> dict[str, str]:
    """The environment of the app started by ``novamesh run``: ``base`` plus HOST, PORT (the app
    port of the first service port), NOVAMESH_PORT_<number>, HTTP_PROXY/http_proxy (the sidecar's
    outbound listener) and NOVAMESH_SERVICE/VERSION/NAMESPACE/ADDRESS."""
    env = dict(base)
    proxy = f"http://{address}:{outbound_port}"
    env.update(
        {
            "HOST": address,
            "HTTP_PROXY": proxy,
            "http_proxy": proxy,
            "NOVAMESH_SERVICE": service,
            "NOVAMESH_VERSION": version,
            "NOVAMESH_NAMESPACE": namespace,
            "NOVAMESH_ADDRESS": address,
        }
    )
    if ports:
        env["PORT"] = str(ports[0].app_port)
    for port in ports:
        env[f"NOVAMESH_PORT_{port.number}"] = str(port.app_port)
    return env


def free_port(host: str) -> int:
    """A TCP port nobody is listening on at ``host`` right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether ``host:port`` accepts a TCP connection."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
