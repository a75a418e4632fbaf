"""Stacks: a YAML file describing a local mesh (control plane, workloads, config) that
``novamesh up`` starts and ``novamesh down`` stops. The format is documented in docs/stacks.md.

:func:`load_stack` reads and validates a file into a frozen :class:`Stack` (every problem is a
:class:`~novamesh.errors.Violation` naming the file, line and field path). :class:`StackRunner`
starts the processes, waits for them with deadlines, and records their pids in
``<dataDir>/stack-state.json`` so :func:`stop_stack` works from another process.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from .agent.workload import PROTOCOLS as _PROTOCOLS
from .errors import ConfigError, ControlPlaneUnavailable, NovameshError, Violation
from .settings import Settings
from .stack_ha import parse_ha, start_ha_control_plane

__all__ = [
    "PortSpec",
    "WorkloadSpec",
    "ControlPlaneSpec",
    "Stack",
    "load_stack",
    "StackRunner",
    "ProcessStatus",
    "stop_stack",
    "running_stacks",
    "stack_data_dir",
    "STATE_FILE",
]

STATE_FILE = "stack-state.json"
Progress = Callable[[str], None]

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


# -- processes -------------------------------------------------------------------------------


def _proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _pid_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether ``pid`` runs (zombies count as exited) and, when known, is the same process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return start_time is None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


def _tail(path: Path, lines: int = 20) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class _Proc:
    """A process the stack started: from this runner (``popen``) or from the state file."""

    role: str  # "control-plane", "workload" (has ports) or "client" (no ports)
    name: str  # "control-plane" or "reviews/v1#0"
    pid: int
    log: Path
    start_time: int | None = None
    key: tuple[str, str, str] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_alive(self.pid, self.start_time)

    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def signal(self, sig: signal.Signals) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill_leftovers(self) -> None:
        """SIGKILL whatever is left of its process group (it leads one: start_new_session), e.g.
        an Envoy or app orphaned by a crashed agent.

        Only when the group id is provably ours: our process still exists, or no process has
        that pid (a group id cannot be handed to a new process while any member lives).
        """
        if self.popen is None and not self.alive():
            try:
                os.kill(self.pid, 0)
                return  # the pid now belongs to some other process: leave its group alone
            except ProcessLookupError:
                pass
            except PermissionError:
                return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "pid": self.pid, "log": str(self.log),
                "start_time": self.start_time, "key": list(self.key) if self.key else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Proc:
        key = data.get("key")
        return cls(role=data["role"], name=data["name"], pid=int(data["pid"]), log=Path(data["log"]),
                   start_time=data.get("start_time"), key=(str(key[0]), str(key[1]), str(key[2])) if key else None)


@dataclass(frozen=True)
class ProcessStatus:
    """One process of a running stack, for status tables."""

    name: str
    pid: int
    running: bool
    log: Path
    address: str = ""
    ready: bool | None = None


def stack_data_dir(stack: Stack, settings: Settings) -> Path:
    """``controlPlane.dataDir``, or ``<settings.data_dir>/stacks/<name>``."""
    return stack.control_plane.data_dir or (Path(settings.data_dir).expanduser() / "stacks" / stack.name)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class StackRunner:
    """Starts and stops one stack's processes."""

    def __init__(
        self,
        stack: Stack,
        settings: Settings | None = None,
        *,
        novamesh_command: Sequence[str] | None = None,
        control_plane_timeout: float = 30.0,
        workload_timeout: float | None = None,
    ) -> None:
        """``settings`` defaults to :meth:`Settings.from_env`; the stack's ``controlPlane``
        section overrides it. ``novamesh_command`` (default ``python -m novamesh``) is how the
        ``control-plane`` and ``run`` commands are invoked."""
        base = settings or Settings.from_env()
        cp = stack.control_plane
        typed = Settings.from_env({f"NOVAMESH_{k.upper()}": v for k, v in cp.settings.items()})
        eff = base.replace(**{k: getattr(typed, k) for k in cp.settings})
        eff = eff.replace(http_port=cp.http_port, xds_port=cp.xds_port)
        if cp.xds_port is not None and "csr_port" not in cp.settings and eff.csr_port == Settings().csr_port:
            eff = eff.replace(csr_port=cp.xds_port + 2)  # moved xDS: keep Istio's 15010/15012 spacing
        self.data_dir = stack_data_dir(stack, eff)
        host = "127.0.0.1" if eff.bind_host in ("0.0.0.0", "::", "") else eff.bind_host
        self.url = f"http://{host}:{eff.http_port}"
        self.settings = eff.replace(data_dir=str(self.data_dir), control_plane_url=self.url)
        self.agent_url = self.url
        """What workloads get as --control-plane (every replica's URL in an HA stack)."""
        self.stack = stack
        self.log_dir = self.data_dir / "logs"
        self.state_file = self.data_dir / STATE_FILE
        self.novamesh_command = list(novamesh_command or [sys.executable, "-m", "novamesh"])
        self.control_plane_timeout = control_plane_timeout
        self.workload_timeout = workload_timeout if workload_timeout is not None else self.settings.ready_timeout + 15
        self._procs: list[_Proc] = []

    # -- environment and commands ------------------------------------------------------------

    def process_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment of every started process: ours, plus every effective setting as
        ``NOVAMESH_*`` (so all processes agree), plus ``extra``."""
        env = dict(os.environ)
        for f in dataclasses.fields(Settings):
            env[f"NOVAMESH_{f.name.upper()}"] = str(getattr(self.settings, f.name))
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    def control_plane_argv(self) -> list[str]:
        """The control-plane command line."""
        s = self.settings
        return [*self.novamesh_command, "control-plane", "--data-dir", str(self.data_dir),
                "--http-port", str(s.http_port), "--xds-port", str(s.xds_port)]

    def workload_argv(self, workload: WorkloadSpec) -> list[str]:
        """The ``novamesh run`` command line of one replica."""
        argv = [*self.novamesh_command, "run", "--service", workload.service, "--namespace", workload.namespace,
                "--version", workload.version]
        for port in workload.ports:
            argv += ["--port", port.run_flag()]
        command = [sys.executable if a == "python" else a for a in workload.command[:1]] + list(workload.command[1:])
        return [*argv, "--control-plane", self.agent_url, "--", *command]

    # -- up ----------------------------------------------------------------------------------

    def up(self, progress: Progress | None = None) -> None:
        """Start the control plane, apply config, start every workload replica, and return once
        all are registered and ready. On any failure (or Ctrl-C) everything started is stopped
        again and the error names the process that failed, with the tail of its log."""
        say = progress or (lambda _msg: None)
        self._check_not_running()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_control_plane(say)
            self._apply_config(say)
            self._start_workloads(say)
        except BaseException:
            say("startup failed; stopping what was started")
            self.down()
            raise
        say(f"stack {self.stack.name} is up")

    def _check_not_running(self) -> None:
        state = _read_state(self.data_dir)
        if state is not None:
            alive = [p for p in state if p.alive()]
            if alive:
                raise NovameshError(
                    f"stack '{self.stack.name}' is already running from {self.data_dir} "
                    f"({', '.join(f'{p.name} pid {p.pid}' for p in alive[:3])}); "
                    f"stop it with `novamesh down --data-dir {self.data_dir}`"
                )
            self.state_file.unlink(missing_ok=True)  # stale: every process is gone
        host = self.url.split("//", 1)[1].rsplit(":", 1)[0]
        for what, port in (("HTTP", self.settings.http_port), ("xDS", self.settings.xds_port)):
            if not _port_free(host, port):
                raise NovameshError(
                    f"control-plane {what} port {host}:{port} is already in use (another stack or "
                    f"control plane?); stop it with `novamesh down`, or pick another port with "
                    f"controlPlane.{'httpPort' if what == 'HTTP' else 'xdsPort'}"
                )

    def _spawn(self, role: str, name: str, argv: list[str], log: Path, env: dict[str, str],
               key: tuple[str, str, str] | None = None) -> _Proc:
        with log.open("ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n".encode())
            out.flush()
            # A new session: Ctrl-C in our terminal does not reach the children, so `down`
            # decides the order (workloads drain first); SIGKILL can then take the whole group.
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     env=env, cwd=self.stack.directory, start_new_session=True)
        proc = _Proc(role, name, popen.pid, log, _proc_start_time(popen.pid), key, popen)
        self._procs.append(proc)
        self._write_state()
        return proc

    def _start_control_plane(self, say: Progress) -> None:
        if self.stack.control_plane.store == "etcd":
            return start_ha_control_plane(self, say)
        say(f"starting the control plane on {self.url} (data in {self.data_dir})")
        proc = self._spawn("control-plane", "control-plane", self.control_plane_argv(),
                           self.log_dir / "control-plane.log", self.process_env())

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1.0, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            self._wait(healthy, self.control_plane_timeout, [proc], "the control plane to answer /healthz")
        except TimeoutError as exc:
            raise ControlPlaneUnavailable(str(exc)) from None
        say("control plane is up")

    def _apply_config(self, say: Progress) -> None:
        files = config_files(self.stack)
        if not files:
            return
        documents = [{"file": str(f), "content": f.read_text()} for f in files]
        body = {"documents": documents, "namespace": "default", "dry_run": False,
                "author": "novamesh up", "message": f"stack {self.stack.name}"}
        try:
            response = httpx.post(f"{self.url}/api/v1/apply", json=body, timeout=30.0, trust_env=False)
        except httpx.HTTPError as exc:
            raise ControlPlaneUnavailable(f"applying config to {self.url}: {exc}") from exc
        answer = _json(response)
        if response.status_code == 422:
            violations = [Violation.from_dict(v) for v in answer.get("violations", []) if isinstance(v, dict)]
            raise ConfigError(violations or [Violation(str(answer.get("message", response.text)))],
                              f"stack {self.stack.name}: config rejected by the control plane")
        if response.status_code != 200:
            raise NovameshError(f"applying config failed: HTTP {response.status_code}: {answer.get('message', response.text)}")
        changes = answer.get("changes", [])
        summary = ", ".join(f"{c.get('kind')} {c.get('namespace')}/{c.get('name')} {c.get('action')}" for c in changes)
        say(f"applied {len(files)} config file(s) (revision {answer.get('revision')}): {summary or 'no changes'}")

    def _start_workloads(self, say: Progress) -> None:
        # Servers first; clients (no ports, e.g. load generators) once every server is ready,
        # so they do not see startup errors. `down` stops them in the reverse order.
        before = {w.get("id") for w in self.api_workloads()}  # leftovers of an earlier run are not ours
        servers = [w for w in self.stack.workloads if not w.is_client]
        clients = [w for w in self.stack.workloads if w.is_client]
        for role, group in (("workload", servers), ("client", clients)):
            if not any(w.replicas for w in group):
                continue
            for workload in group:
                env = self.process_env(workload.env)
                for i in range(workload.replicas):
                    say(f"starting {workload.label} replica {i}")
                    self._spawn(role, f"{workload.label}#{i}", self.workload_argv(workload),
                                self.log_dir / workload.log_name(i), env, workload.key)
            self._wait_ready(group, before, "every workload" if role == "workload" else "every client")
            say(f"{sum(w.replicas for w in group)} {role} process(es) ready")

    def _wait_ready(self, group: list[WorkloadSpec], before: Collection[Any], what: str) -> None:
        def all_ready() -> bool:
            counts = self._ready_counts(exclude=before)
            return all(counts.get(w.key, 0) >= w.replicas for w in group)

        try:
            self._wait(all_ready, self.workload_timeout, [*self._procs], f"{what} to be ready")
        except TimeoutError as exc:
            counts = self._ready_counts(exclude=before)
            missing = [w for w in group if counts.get(w.key, 0) < w.replicas]
            detail = "\n".join(
                f"{w.label}: {counts.get(w.key, 0)}/{w.replicas} ready; last lines of "
                f"{self.log_dir / w.log_name(0)}:\n{_tail(self.log_dir / w.log_name(0))}"
                for w in missing[:3]
            )
            raise NovameshError(f"{exc}\n{detail}") from None

    def _ready_counts(self, exclude: Collection[Any] = ()) -> dict[tuple[str, str, str], int]:
        clients = {w.key for w in self.stack.workloads if w.is_client}
        counts: dict[tuple[str, str, str], int] = {}
        for w in self.api_workloads():
            if w.get("id") in exclude:
                continue
            key = (str(w.get("service")), str(w.get("namespace")), str(w.get("version")))
            if w.get("ready") or key in clients:
                counts[key] = counts.get(key, 0) + 1
        return counts

    def _wait(self, predicate: Callable[[], bool], timeout: float, watch: list[_Proc], what: str) -> None:
        """Poll ``predicate`` until true; fail fast when a watched process exits."""
        deadline = time.monotonic() + timeout
        while True:
            for proc in watch:
                if not proc.alive():
                    raise NovameshError(
                        f"{proc.name} exited (code {proc.returncode()}) while waiting for {what}; "
                        f"last lines of {proc.log}:\n{_tail(proc.log)}"
                    )
            if predicate():
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(0.2)

    # -- while running -----------------------------------------------------------------------

    def api_workloads(self) -> list[dict[str, Any]]:
        """``GET /api/v1/workloads`` (empty when the control plane does not answer)."""
        try:
            response = httpx.get(f"{self.url}/api/v1/workloads", timeout=2.0, trust_env=False)
        except httpx.HTTPError:
            return []
        data = _json(response, default=[])
        return [w for w in data if isinstance(w, dict)] if response.status_code == 200 and isinstance(data, list) else []

    def status(self) -> list[ProcessStatus]:
        """Every process with whether it runs, and (for workloads, matched by service and
        version in start order) its address and readiness from the control plane."""
        procs = self._procs or (_read_state(self.data_dir) or [])
        by_key: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for w in sorted(self.api_workloads(), key=lambda w: str(w.get("address", ""))):
            by_key.setdefault((str(w.get("service")), str(w.get("namespace")), str(w.get("version"))), []).append(w)
        out: list[ProcessStatus] = []
        for p in procs:
            entry = by_key.get(p.key, [{}]).pop(0) if p.key and by_key.get(p.key) else {}
            address = str(entry.get("address", "")) if entry else (self.url if p.role == "control-plane" else "")
            ready = bool(entry.get("ready")) if entry else None
            out.append(ProcessStatus(p.name, p.pid, p.alive(), p.log, address, ready))
        return out

    def exited(self) -> list[ProcessStatus]:
        """Processes of this runner that are no longer running."""
        return [s for s in self.status() if not s.running]

    # -- down --------------------------------------------------------------------------------

    def down(self, progress: Progress | None = None) -> None:
        """Stop workloads (SIGTERM, then SIGKILL after a deadline), then the control plane."""
        procs = self._procs or (_read_state(self.data_dir) or [])
        _stop(procs, self.settings, progress or (lambda _msg: None))
        self._procs = []
        self.state_file.unlink(missing_ok=True)

    def _write_state(self) -> None:
        state = {"name": self.stack.name, "stack_file": str(self.stack.file), "control_plane_url": self.url,
                 "processes": [p.to_json() for p in self._procs]}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_file)


def _json(response: httpx.Response, default: Any = None) -> Any:
    try:
        return response.json()
    except ValueError:
        return {} if default is None else default


def _read_state(data_dir: Path) -> list[_Proc] | None:
    try:
        data = json.loads((data_dir / STATE_FILE).read_text())
        return [_Proc.from_json(p) for p in data.get("processes", [])]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NovameshError(f"cannot read {data_dir / STATE_FILE}: {exc}") from exc


def _stop(procs: list[_Proc], settings: Settings, say: Progress) -> None:
    # Workloads get time to deregister and drain (what `novamesh run` does on SIGTERM).
    workload_grace = settings.deregister_grace + settings.drain_time + settings.stop_timeout + 5
    # Clients first (they make the traffic), then servers, then the control plane.
    for role, grace in (("client", workload_grace), ("workload", workload_grace),
                        ("control-plane", settings.stop_timeout + 5), ("etcd", 15.0)):
        group = [p for p in procs if p.role == role]
        alive = [p for p in group if p.alive()]
        if alive:
            say(f"stopping {len(alive)} {role} process(es)")
        for p in alive:
            p.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(p.alive() for p in alive) and time.monotonic() < deadline:
            time.sleep(0.1)
        for p in alive:
            if p.alive():
                say(f"{p.name} (pid {p.pid}) did not stop within {grace:g}s; killing it")
        for p in group:
            p.kill_leftovers()
            if p.popen is not None:
                p.popen.wait()


def stop_stack(data_dir: str | os.PathLike[str], settings: Settings | None = None, progress: Progress | None = None) -> bool:
    """Stop the stack whose state is in ``data_dir`` (from any process). Returns False when no
    state file was found there."""
    path = Path(data_dir)
    procs = _read_state(path)
    if procs is None:
        return False
    _stop(procs, settings or Settings.from_env(), progress or (lambda _msg: None))
    (path / STATE_FILE).unlink(missing_ok=True)
    return True


def running_stacks(settings: Settings | None = None) -> list[Path]:
    """Data directories under ``<settings.data_dir>/stacks`` holding a state file with a live
    process (stacks with a custom ``dataDir`` are not found here)."""
    root = Path((settings or Settings.from_env()).data_dir).expanduser() / "stacks"
    found: list[Path] = []
    for state in sorted(root.glob(f"*/{STATE_FILE}")):
        try:
            procs = _read_state(state.parent) or []
        except NovameshError:
            continue
        if any(p.alive() for p in procs):
            found.append(state.parent)
    return found
