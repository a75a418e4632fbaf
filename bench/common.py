"""Shared helpers: machine facts, /proc readings, result files."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import statistics
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def machine() -> dict[str, Any]:
    """nproc, CPU model, RAM, Python and the UTC date of the run."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {"nproc": os.cpu_count(), "cpu_model": model, "ram_gib": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    """Resident set size of one process in MB."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1e6


def descendants(pid: int) -> list[int]:
    """Every descendant pid of ``pid`` (bounded walk of /proc/*/task/*/children)."""
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 1000:
        p = todo.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = [int(k) for k in (task / "children").read_text().split()]
                out.extend(kids)
                todo.extend(kids)
        except OSError:
            continue
    return out


def find_child(pid: int, needle: str, exclude: str = "\0") -> int:
    """The descendant of ``pid`` whose command line contains ``needle`` (and not ``exclude``)."""
    for p in descendants(pid):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmd and exclude not in cmd:
            return p
    raise LookupError(f"no descendant of {pid} runs {needle!r}")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of ``values`` (nearest rank); NaN when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of ``values``."""
    return {"n": len(values), "p50": pct(values, 50), "p90": pct(values, 90), "p99": pct(values, 99),
            "max": max(values) if values else float("nan"), "mean": statistics.fmean(values) if values else float("nan")}


def write(name: str, data: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``data`` (plus machine facts) to ``<out or bench/results>/<name>.json``."""
    d = out or RESULTS
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **data}, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path
