"""The one exception tree of novamesh.

::

    NovameshError                  base of everything we raise on purpose
    ├── ConfigError                user config is wrong; carries every Violation found
    ├── NotFoundError              a named resource, workload or proxy does not exist
    ├── ConflictError              a write collides with current state (e.g. stale revision)
    ├── StoreError                 the config store failed (disk, etcd unreachable)
    ├── ControlPlaneUnavailable    the CLI or agent could not reach the control plane
    ├── EnvoyError                 the Envoy binary is missing, will not start, or exited
    └── SecurityError              authentication/authorization failed (opaque to callers)

User errors say *what* is wrong, *where* (file, document, field path, line) and *how to fix it*.
Security errors say nothing useful to the caller; the detail goes to the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "NovameshError",
    "Violation",
    "ConfigError",
    "NotFoundError",
    "ConflictError",
    "StoreError",
    "ControlPlaneUnavailable",
    "EnvoyError",
    "SecurityError",
]


class NovameshError(Exception):
    """Base class for every error novamesh raises deliberately."""


@dataclass(frozen=True)
class Violation:
    """One problem in user config, located as precisely as we can.

    ``path`` is a field path such as ``spec.http[0].route[1].weight``; ``file``/``document``
    (0-based index of the YAML document in the file) and ``line`` (1-based) are filled when the
    config came from a file. ``hint`` tells the user how to fix it.
    """

    message: str
    path: str = ""
    kind: str = ""
    name: str = ""
    namespace: str = ""
    file: str = ""
    document: int | None = None
    line: int | None = None
    hint: str = ""
    code: str = "IST0106"

    def location(self) -> str:
        """Human-readable 'where' of this violation."""
        parts: list[str] = []
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
            parts.append(where)
        if self.document is not None:
            parts.append(f"document {self.document + 1}")
        if self.kind:
            ident = f"{self.kind}"
            if self.name:
                ident += f" {self.namespace + '/' if self.namespace else ''}{self.name}"
            parts.append(ident)
        if self.path:
            parts.append(f"field {self.path}")
        return ", ".join(parts)

    def __str__(self) -> str:
        text = self.message
        loc = self.location()
        if loc:
            text = f"{loc}: {text}"
        if self.hint:
            text += f" (fix: {self.hint})"
        return text

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form used by the REST API."""
        return {
            "message": self.message,
            "path": self.path,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
            "file": self.file,
            "document": self.document,
            "line": self.line,
            "hint": self.hint,
            "code": self.code,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Violation:
        """Inverse of :meth:`to_dict` (used by the CLI to re-raise API errors)."""
        doc = data.get("document")
        line = data.get("line")
        return cls(
            message=str(data.get("message", "")),
            path=str(data.get("path", "") or ""),
            kind=str(data.get("kind", "") or ""),
            name=str(data.get("name", "") or ""),
            namespace=str(data.get("namespace", "") or ""),
            file=str(data.get("file", "") or ""),
            document=int(doc) if isinstance(doc, int) else None,
            line=int(line) if isinstance(line, int) else None,
            hint=str(data.get("hint", "") or ""),
            code=str(data.get("code", "IST0106") or "IST0106"),
        )


@dataclass
class ConfigError(NovameshError):
    """User configuration was rejected; ``violations`` lists every problem found."""

    violations: list[Violation] = field(default_factory=list)
    summary: str = "configuration rejected"

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [f"{self.summary}: {len(self.violations)} problem(s); nothing was stored"]
        lines += [f"  - {v}" for v in self.violations]
        return "\n".join(lines)


class NotFoundError(NovameshError):
    """A named resource, workload or proxy does not exist."""


class ConflictError(NovameshError):
    """A write collides with the current state."""


class StoreError(NovameshError):
    """The config store failed; the message says which store and why."""


class ControlPlaneUnavailable(NovameshError):
    """The control plane could not be reached at the given URL."""


class EnvoyError(NovameshError):
    """The Envoy binary is missing, failed to start, or exited unexpectedly."""


class SecurityError(NovameshError):
    """Authentication or authorization failed. The message is deliberately opaque."""
