"""Analysis messages: levels, the catalogue of message types (Istio's IST codes and our NM
codes) and the :class:`Message` an analyzer reports.

Codes, names and levels of ``IST`` types follow Istio's ``messages.yaml`` so that tools and
people who know ``istioctl analyze`` read them unchanged; ``NM`` codes are novamesh's own mesh
standards. docs/analyze.md lists every type with what triggers it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["CATALOGUE", "Level", "Message", "MessageType", "documentation_url", "message_type"]


class Level(enum.IntEnum):
    """Severity of a message; a higher value is more severe."""

    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        """``Error``, ``Warning`` or ``Info``, as istioctl prints it."""
        return self.name.capitalize()

    @classmethod
    def parse(cls, text: str) -> Level:
        """The level named ``text`` (case-insensitive); ValueError naming the choices."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown level {text!r}; use error, warning or info") from None


@dataclass(frozen=True)
class MessageType:
    """One kind of finding: a stable code, a CamelCase name, a level and what it means."""

    code: str
    name: str
    level: Level
    description: str


def _types(*types: MessageType) -> dict[str, MessageType]:
    return {t.code: t for t in types}


_E, _W, _I = Level.ERROR, Level.WARNING, Level.INFO

CATALOGUE: dict[str, MessageType] = _types(
    MessageType("IST0001", "InternalError", _E, "An analyzer failed; this is a bug in novamesh."),
    MessageType("IST0101", "ReferencedResourceNotFound", _E, "A resource being referenced does not exist."),
    MessageType("IST0104", "GatewayPortNotOnWorkload", _W, "A Gateway server port is not a port of any workload the Gateway selects."),
    MessageType("IST0106", "SchemaValidationError", _E, "The resource has a schema validation error."),
    MessageType("IST0108", "UnknownAnnotation", _W, "An Istio annotation is not recognized (novamesh honours none)."),
    MessageType("IST0109", "ConflictingMeshGatewayVirtualServiceHosts", _E, "VirtualServices bound to the mesh gateway define the same host."),
    MessageType("IST0110", "ConflictingSidecarWorkloadSelectors", _E, "A Sidecar selects the same workload as another Sidecar."),
    MessageType("IST0111", "MultipleSidecarsWithoutWorkloadSelectors", _E, "More than one Sidecar in a namespace has no workload selector."),
    MessageType("IST0112", "VirtualServiceDestinationPortSelectorRequired", _E, "A route goes to another service with more than one port but names no port."),
    MessageType("IST0113", "MTLSPolicyConflict", _E, "A DestinationRule and a PeerAuthentication are in conflict with regards to mTLS."),
    MessageType("IST0118", "PortNameIsNotUnderNamingConvention", _I, "A ServiceEntry port has no protocol and its name does not say one; it is treated as TCP."),
    MessageType("IST0127", "NoMatchingWorkloadsFound", _W, "A workload selector matches no workload."),
    MessageType("IST0128", "NoServerCertificateVerificationDestinationLevel", _W, "A DestinationRule originates TLS without caCertificates, so the server certificate is not verified."),
    MessageType("IST0129", "NoServerCertificateVerificationPortLevel", _W, "A DestinationRule port-level TLS setting has no caCertificates, so the server certificate is not verified."),
    MessageType("IST0130", "VirtualServiceUnreachableRule", _W, "A VirtualService rule is never used because an earlier rule catches all its requests."),
    MessageType("IST0131", "VirtualServiceIneffectiveMatch", _I, "A VirtualService match block duplicates a match of an earlier rule."),
    MessageType("IST0132", "VirtualServiceHostNotFoundInGateway", _W, "A VirtualService host is not served by the Gateway it binds to."),
    MessageType("IST0134", "ServiceEntryAddressesRequired", _W, "A ServiceEntry with TCP (or unset) protocol ports has no addresses."),
    MessageType("IST0145", "ConflictingGateways", _E, "Gateways with the same selector serve the same port and overlapping hosts."),
    MessageType("IST0173", "DestinationRuleSubsetNotSelectPods", _E, "A DestinationRule subset selects no workload; requests routed to it get 503."),
    MessageType("IST0174", "UnknownDestinationRuleHost", _W, "The host of a DestinationRule matches no service in the mesh."),
    MessageType("IST0177", "ConflictingServiceEntryProtocol", _W, "ServiceEntries define the same host and port with different protocols."),
    MessageType("NM0001", "RouteWithoutTimeout", _W, "An HTTP route has no timeout; novamesh has no mesh-wide default, so a slow upstream holds callers forever."),
    MessageType("NM0002", "DestinationRuleWithoutOutlierDetection", _I, "A DestinationRule has no outlierDetection; failing endpoints stay in the load-balancing pool."),
    MessageType("NM0003", "LeftoverCanaryWeights", _I, "A route keeps a 100/0 weight split after a canary; the 0-weight destinations do nothing."),
    MessageType("NM0004", "PerTryTimeoutNotRetried", _W, "A retry policy sets perTryTimeout but its retryOn has none of "
                "5xx, gateway-error, reset: a try that times out fails the request with 504 instead of being retried."),
)
"""Every message type an analyzer can report, by code."""


def message_type(code: str) -> MessageType:
    """The catalogued type of ``code``; KeyError for an unknown code (a bug, not user input)."""
    return CATALOGUE[code]


def documentation_url(code: str) -> str:
    """Istio's page for an IST code; novamesh's analyze doc for our own codes."""
    if code.startswith("IST"):
        return f"https://istio.io/latest/docs/reference/config/analysis/{code.lower()}/"
    return f"docs/analyze.md#{code.lower()}"


@dataclass(frozen=True)
class Message:
    """One finding about one resource.

    ``file``/``line`` locate it when the resource came from a file (empty for live resources);
    ``path`` is the field path (``spec.http[1]``); ``hint`` says how to fix it.
    """

    code: str
    text: str
    kind: str = ""
    namespace: str = ""
    name: str = ""
    file: str = ""
    line: int | None = None
    path: str = ""
    hint: str = ""

    @property
    def type(self) -> MessageType:
        return message_type(self.code)

    @property
    def level(self) -> Level:
        return self.type.level

    @property
    def resource(self) -> str:
        """``Kind namespace/name`` (or what is known of it)."""
        ident = f"{self.namespace}/{self.name}" if self.namespace and self.name else self.name
        return " ".join(p for p in (self.kind, ident) if p)

    @property
    def location(self) -> str:
        """``file:line`` when known, else ``""``."""
        if not self.file:
            return ""
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def sort_key(self) -> tuple[int, str, int, str, str, str]:
        """Most severe first, then by file and line, then by resource and code."""
        return (-int(self.level), self.file, self.line or 0, self.resource, self.code, self.text)

    def to_dict(self) -> dict[str, object]:
        """JSON/YAML form (the ``-o json`` contract in docs/analyze.md)."""
        return {
            "code": self.code,
            "name": self.type.name,
            "level": self.level.label,
            "resource": {"kind": self.kind, "namespace": self.namespace, "name": self.name},
            "origin": self.resource,
            "file": self.file or None,
            "line": self.line,
            "path": self.path,
            "message": self.text,
            "hint": self.hint,
            "documentation_url": documentation_url(self.code),
        }
