"""The processes of a running stack, and its state file.

:class:`~novamesh.stack.StackRunner` records every process it starts (role, name, pid, log,
start time) in ``<dataDir>/stack-state.json``, so :func:`stop_stack` and :func:`running_stacks`
work from another process (``novamesh down``, ``novamesh status``). A pid read back from the
file is only trusted while its start time still matches (pids are reused).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NovameshError
from .settings import Settings

__all__ = [
    "STATE_FILE",
    "ProcessStatus",
    "Progress",
    "StackProcess",
    "log_tail",
    "proc_start_time",
    "read_state",
    "running_stacks",
    "stop_processes",
    "stop_stack",
]

STATE_FILE = "stack-state.json"
Progress = Callable[[str], None]
"""A callback for one line of progress ("starting reviews/v1 replica 0")."""


def proc_start_time(pid: int) -> int | None:
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


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log (read from its last 16 KiB), for error messages."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class StackProcess:
    """A process the stack started: from this runner (``popen``) or from the state file."""

    role: str  # "control-plane", "workload" (has ports) or "client" (no ports)
    name: str  # "control-plane" or "reviews/v1#0"
    pid: int
    log: Path
    start_time: int | None = None
    key: tuple[str, str, str] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def alive(self) -> bool:
        """Whether it still runs (a pid from the state file must also have the recorded start time)."""
        if self.popen is not None:
            return self.popen.poll() is None
        return _pid_alive(self.pid, self.start_time)

    def returncode(self) -> int | None:
        """Its exit code, when this runner started it and it exited; else ``None``."""
        return self.popen.poll() if self.popen is not None else None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to it (a process that is already gone is ignored)."""
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
        """Its state-file entry (everything but ``popen``)."""
        return {"role": self.role, "name": self.name, "pid": self.pid, "log": str(self.log),
                "start_time": self.start_time, "key": list(self.key) if self.key else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StackProcess:
        """The inverse of :meth:`to_json`."""
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


def read_state(data_dir: Path) -> list[StackProcess] | None:
    """The processes recorded in ``data_dir``'s state file; ``None`` when there is none.
    Raises :class:`NovameshError` when the file cannot be read or parsed."""
    try:
        data = json.loads((data_dir / STATE_FILE).read_text())
        return [StackProcess.from_json(p) for p in data.get("processes", [])]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NovameshError(f"cannot read {data_dir / STATE_FILE}: {exc}") from exc


def stop_processes(procs: list[StackProcess], settings: Settings, say: Progress) -> None:
    """Stop ``procs`` by role (SIGTERM, then SIGKILL of the process group after a grace period)."""
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
    procs = read_state(path)
    if procs is None:
        return False
    stop_processes(procs, settings or Settings.from_env(), progress or (lambda _msg: None))
    (path / STATE_FILE).unlink(missing_ok=True)
    return True


def running_stacks(settings: Settings | None = None) -> list[Path]:
    """Data directories under ``<settings.data_dir>/stacks`` holding a state file with a live
    process (stacks with a custom ``dataDir`` are not found here)."""
    root = Path((settings or Settings.from_env()).data_dir).expanduser() / "stacks"
    found: list[Path] = []
    for state in sorted(root.glob(f"*/{STATE_FILE}")):
        try:
            procs = read_state(state.parent) or []
        except NovameshError:
            continue
        if any(p.alive() for p in procs):
            found.append(state.parent)
    return found
