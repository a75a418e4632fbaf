"""Stack files: the YAML format ``novamesh up`` reads (documented in docs/stacks.md).

:func:`load_stack` reads and validates a file into a frozen :class:`Stack`; every problem is a
:class:`~novamesh.errors.Violation` naming the file, line and field path (``workloads[2].ports[0]``)
with a hint, and all of them are raised together in one :class:`~novamesh.errors.ConfigError`.
Nothing here starts a process: :mod:`novamesh.stack` runs a loaded stack.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .agent.workload import PROTOCOLS as _PROTOCOLS
from .errors import ConfigError, Violation
from .settings import Settings
from .stack_ha import parse_ha

__all__ = [
    "ControlPlaneSpec",
    "PortSpec",
    "Stack",
    "WorkloadSpec",
    "config_files",
    "load_stack",
    "stack_data_dir",
]

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_VERSION = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
# Ports the sidecar itself binds on every workload address (Istio's reserved ports).
_RESERVED_PORTS = {15000, 15001, 15004, 15006, 15008, 15009, 15020, 15021, 15090}
_SETTINGS_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}

# -- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortSpec:
    """A service port of a workload. ``app_port`` is where the app listens (``None``: ``novamesh
    run`` picks one and passes it as ``PORT``); ``name`` is informational (the sidecar names
    ports ``<protocol>-<number>``, as Istio does)."""

    number: int
    protocol: str = "HTTP"
    name: str = ""
    app_port: int | None = None

    def run_flag(self) -> str:
        """The ``novamesh run --port`` value: ``NUMBER[/PROTOCOL][=APP_PORT]``."""
        text = str(self.number) if self.protocol == "HTTP" else f"{self.number}/{self.protocol.lower()}"
        return text if self.app_port is None else f"{text}={self.app_port}"


@dataclass(frozen=True)
class WorkloadSpec:
    """One workload entry: ``replicas`` copies of ``command`` behind sidecars."""

    service: str
    command: tuple[str, ...]
    namespace: str = "default"
    version: str = "v1"
    ports: tuple[PortSpec, ...] = ()
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def is_client(self) -> bool:
        """No ports: a client such as a load generator (ready once registered)."""
        return not self.ports

    @property
    def key(self) -> tuple[str, str, str]:
        """(service, namespace, version), how the control plane's workload list groups it."""
        return (self.service, self.namespace, self.version)

    @property
    def label(self) -> str:
        """``service/version`` (``service.namespace/version`` outside ``default``)."""
        ns = "" if self.namespace == "default" else f".{self.namespace}"
        return f"{self.service}{ns}/{self.version}"

    def log_name(self, replica: int) -> str:
        """File name of replica ``replica``'s log: ``<service>-<version>-<i>.log``."""
        ns = "" if self.namespace == "default" else f".{self.namespace}"
        return f"{self.service}{ns}-{self.version}-{replica}.log"


@dataclass(frozen=True)
class ControlPlaneSpec:
    """The ``controlPlane`` section; ``None`` means "from settings"."""

    data_dir: Path | None = None
    http_port: int | None = None
    xds_port: int | None = None
    settings: Mapping[str, str] = field(default_factory=dict, hash=False)
    replicas: int = 1
    store: str = "sqlite"  # "etcd": a local etcd cluster (stack_ha)


@dataclass(frozen=True)
class Stack:
    """A validated stack file. Paths are absolute (resolved against the file's directory)."""

    name: str
    file: Path
    control_plane: ControlPlaneSpec = ControlPlaneSpec()
    workloads: tuple[WorkloadSpec, ...] = ()
    config: tuple[Path, ...] = ()

    @property
    def directory(self) -> Path:
        """The stack file's directory: relative paths and commands start here."""
        return self.file.parent

    def with_control_plane(
        self, *, data_dir: Path | None = None, http_port: int | None = None, xds_port: int | None = None
    ) -> Stack:
        """A copy with command-line overrides of the control plane (``None`` keeps the file's)."""
        cp = self.control_plane
        return dataclasses.replace(
            self,
            control_plane=dataclasses.replace(
                cp,
                data_dir=data_dir.resolve() if data_dir is not None else cp.data_dir,
                http_port=http_port if http_port is not None else cp.http_port,
                xds_port=xds_port if xds_port is not None else cp.xds_port,
            ),
        )


# -- loading and validation ------------------------------------------------------------------

_TOP_KEYS = ("name", "controlPlane", "workloads", "config")
_CP_KEYS = ("dataDir", "httpPort", "xdsPort", "settings", "replicas", "store")
_WORKLOAD_KEYS = ("service", "namespace", "version", "ports", "replicas", "command", "env")
_PORT_KEYS = ("number", "protocol", "name", "appPort")


def _line_index(text: str) -> dict[str, int]:
    """Field path (``workloads[1].ports[0]``) → 1-based line, from PyYAML's node marks."""
    index: dict[str, int] = {}

    def walk(node: yaml.Node, path: str) -> None:
        index.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                index.setdefault(child, key.start_mark.line + 1)
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{path}[{i}]")

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return index
    if root is not None:
        walk(root, "")
    return index


class _Checker:
    """Collects violations with file and line filled in."""

    def __init__(self, file: Path, text: str) -> None:
        self.file = file
        self.lines = _line_index(text)
        self.violations: list[Violation] = []

    def add(self, path: str, message: str, hint: str = "") -> None:
        probe = path
        while probe and probe not in self.lines:  # fall back to the closest parent with a line
            parent = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", probe)
            probe = "" if parent == probe else parent
        self.violations.append(
            Violation(message=message, path=path, file=str(self.file), line=self.lines.get(probe), hint=hint)
        )

    def mapping(self, value: object, path: str, allowed: Sequence[str]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.add(path, f"must be a mapping, got {type(value).__name__}")
            return None
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"accepted keys: {', '.join(allowed)}"
                self.add(f"{path}.{key}" if path else str(key), f"unknown key '{key}'", hint)
        return value

    def port_number(self, value: object, path: str) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            self.add(path, f"port must be an integer from 1 to 65535, got {value!r}")
            return None
        return value

    def text(self, value: object, path: str, pattern: re.Pattern[str] | None = None, hint: str = "") -> str | None:
        if not isinstance(value, str) or not value:
            self.add(path, f"must be a non-empty string, got {value!r}")
            return None
        if pattern is not None and not pattern.match(value):
            self.add(path, f"invalid value {value!r}", hint)
            return None
        return value


def load_stack(path: str | os.PathLike[str]) -> Stack:
    """Read and validate a stack file. Raises :class:`ConfigError` listing every problem (file,
    line, field path such as ``workloads[2].ports[0].number``, and a hint)."""
    file = Path(path).resolve()
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError([Violation(f"cannot read stack file: {exc.strerror}", file=str(file))], "stack file rejected") from exc
    check = _Checker(file, text)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            [Violation(f"not valid YAML: {getattr(exc, 'problem', exc)}", file=str(file), line=mark.line + 1 if mark else None)],
            "stack file rejected",
        ) from exc
    top = check.mapping(data if data is not None else {}, "", _TOP_KEYS)
    stack = _build(check, top or {}, file)
    if check.violations:
        raise ConfigError(check.violations, "stack file rejected")
    assert stack is not None
    return stack


def _default_name(file: Path) -> str:
    base = file.parent.name if file.stem in ("stack", "novamesh") else file.stem
    return re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-") or "stack"


def _build(check: _Checker, top: dict[str, Any], file: Path) -> Stack | None:
    name = top.get("name", _default_name(file))
    check.text(name, "name", _LABEL, "use lower-case letters, digits and '-'")
    control_plane = _control_plane(check, top.get("controlPlane") or {}, file.parent)
    raw_workloads = top.get("workloads") or []
    workloads: list[WorkloadSpec] = []
    if not isinstance(raw_workloads, list):
        check.add("workloads", "must be a list of workloads")
        raw_workloads = []
    seen: dict[tuple[str, str, str], int] = {}
    for i, raw in enumerate(raw_workloads):
        workload = _workload(check, raw, f"workloads[{i}]")
        if workload is None:
            continue
        if workload.key in seen:
            check.add(f"workloads[{i}]", f"{workload.label} is already defined by workloads[{seen[workload.key]}]",
                      "raise 'replicas' instead, or give this entry another version")
        seen.setdefault(workload.key, i)
        workloads.append(workload)
    config = _config_paths(check, top.get("config") or [], file.parent)
    if check.violations:
        return None
    return Stack(name=str(name), file=file, control_plane=control_plane, workloads=tuple(workloads), config=config)


def _control_plane(check: _Checker, raw: object, base: Path) -> ControlPlaneSpec:
    cp = check.mapping(raw, "controlPlane", _CP_KEYS) or {}
    data_dir = None
    if "dataDir" in cp and check.text(cp["dataDir"], "controlPlane.dataDir"):
        data_dir = (base / Path(os.path.expanduser(cp["dataDir"]))).resolve()
    http_port = check.port_number(cp["httpPort"], "controlPlane.httpPort") if "httpPort" in cp else None
    xds_port = check.port_number(cp["xdsPort"], "controlPlane.xdsPort") if "xdsPort" in cp else None
    if http_port is not None and http_port == xds_port:
        check.add("controlPlane.xdsPort", "xdsPort and httpPort must differ")
    settings: dict[str, str] = {}
    raw_settings = cp.get("settings") or {}
    if check.mapping(raw_settings, "controlPlane.settings", list(_SETTINGS_FIELDS)) is not None:
        for key, value in raw_settings.items():
            path = f"controlPlane.settings.{key}"
            if key not in _SETTINGS_FIELDS:
                continue  # already reported as an unknown key
            if isinstance(value, (dict, list)) or value is None:
                check.add(path, f"must be a scalar, got {value!r}")
                continue
            default = _SETTINGS_FIELDS[key].default
            kind = str if default is dataclasses.MISSING else type(default)
            try:  # the conversion Settings.from_env applies to NOVAMESH_* variables
                kind(str(value))
            except ValueError:
                check.add(path, f"must be a{'n' if kind is int else ''} {kind.__name__}, got {value!r}")
                continue
            settings[key] = str(value)
    replicas, store = parse_ha(check, cp)  # HA stacks: stack_ha.py
    return ControlPlaneSpec(data_dir=data_dir, http_port=http_port, xds_port=xds_port, settings=settings,
                            replicas=replicas, store=store)  # fmt: skip


def _workload(check: _Checker, raw: object, path: str) -> WorkloadSpec | None:
    w = check.mapping(raw, path, _WORKLOAD_KEYS)
    if w is None:
        return None
    before = len(check.violations)
    hint = "use lower-case letters, digits and '-' (a DNS label)"
    if "service" not in w:
        check.add(f"{path}.service", "missing required key 'service'", "name the service, e.g. service: reviews")
    service = check.text(w["service"], f"{path}.service", _LABEL, hint) if "service" in w else None
    namespace = check.text(w.get("namespace", "default"), f"{path}.namespace", _LABEL, hint)
    version = check.text(str(w.get("version", "v1")), f"{path}.version", _VERSION,
                         "use letters, digits, '-', '_' and '.' (a label value)")
    command = _command(check, w, path)
    ports = _ports(check, w.get("ports") or [], f"{path}.ports")
    replicas = w.get("replicas", 1)
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        check.add(f"{path}.replicas", f"must be an integer >= 0, got {replicas!r}")
    env: dict[str, str] = {}
    raw_env = w.get("env") or {}
    if not isinstance(raw_env, dict):
        check.add(f"{path}.env", "must be a mapping of variable names to values")
    else:
        for key, value in raw_env.items():
            if isinstance(value, (dict, list)) or value is None:
                check.add(f"{path}.env.{key}", f"must be a string or number, got {value!r}", "quote the value")
            else:
                env[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    if len(check.violations) > before or service is None or namespace is None or version is None:
        return None
    return WorkloadSpec(service=service, namespace=namespace, version=version, ports=ports,
                        replicas=replicas, command=command, env=env)


def _command(check: _Checker, w: dict[str, Any], path: str) -> tuple[str, ...]:
    if "command" not in w:
        check.add(f"{path}.command", "missing required key 'command'",
                  'e.g. command: ["python", "-m", "novamesh.testing.echo"]')
        return ()
    raw = w["command"]
    if isinstance(raw, str):
        raw = shlex.split(raw)
    if not isinstance(raw, list) or not raw or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in raw):
        check.add(f"{path}.command", "must be a non-empty list of strings (or one string, split like a shell)",
                  'e.g. command: ["python", "-m", "novamesh.testing.echo"]')
        return ()
    return tuple(str(a) for a in raw)


def _ports(check: _Checker, raw: object, path: str) -> tuple[PortSpec, ...]:
    if not isinstance(raw, list):
        check.add(path, "must be a list of port numbers or {number, protocol, name} mappings")
        return ()
    ports: list[PortSpec] = []
    for i, item in enumerate(raw):
        item_path = f"{path}[{i}]"
        if isinstance(item, dict):
            m = check.mapping(item, item_path, _PORT_KEYS) or {}
            if "number" not in m:
                check.add(f"{item_path}.number", "missing required key 'number'")
                continue
            number = check.port_number(m["number"], f"{item_path}.number")
            protocol = str(m.get("protocol", "HTTP")).upper()
            if protocol not in _PROTOCOLS:
                check.add(f"{item_path}.protocol", f"unknown protocol {m.get('protocol')!r}", f"one of {', '.join(_PROTOCOLS)}")
            app_port = check.port_number(m["appPort"], f"{item_path}.appPort") if "appPort" in m else None
            port = PortSpec(number or 0, protocol, str(m.get("name", "")), app_port)
        else:
            number = check.port_number(item, item_path)
            port = PortSpec(number or 0)
        if number is None:
            continue
        if number in _RESERVED_PORTS:
            check.add(item_path, f"port {number} is used by the sidecar on every workload address",
                      f"pick a port outside {', '.join(map(str, sorted(_RESERVED_PORTS)))}")
        elif any(p.number == number for p in ports):
            check.add(item_path, f"port {number} is listed twice")
        ports.append(port)
    return tuple(ports)


def _config_paths(check: _Checker, raw: object, base: Path) -> tuple[Path, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        check.add("config", "must be a list of files or directories")
        return ()
    paths: list[Path] = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            check.add(f"config[{i}]", f"must be a path, got {item!r}")
            continue
        p = (base / os.path.expanduser(item)).resolve()
        if not p.exists():
            check.add(f"config[{i}]", f"{item} does not exist (looked at {p})", "paths are relative to the stack file")
        paths.append(p)
    return tuple(paths)


def config_files(stack: Stack) -> list[Path]:
    """The stack's config files in apply order (directories expand to their sorted YAML files)."""
    files: list[Path] = []
    for p in stack.config:
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
        else:
            files.append(p)
    return files


def stack_data_dir(stack: Stack, settings: Settings) -> Path:
    """``controlPlane.dataDir``, or ``<settings.data_dir>/stacks/<name>``."""
    return stack.control_plane.data_dir or (Path(settings.data_dir).expanduser() / "stacks" / stack.name)
