"""``novamesh up``, ``down`` and ``demo``: run a local mesh from a stack file (thin: parse, call
:mod:`novamesh.stack`, print)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError, NovameshError
from ..settings import Settings
from ..stack import Stack, StackRunner, load_stack, running_stacks, stop_stack

__all__ = ["register", "up", "down", "demo"]

console = Console()
err_console = Console(stderr=True)

FileOption = Annotated[Path, typer.Option("--file", "-f", help="Stack file (YAML).", exists=True, dir_okay=False)]
DetachOption = Annotated[bool, typer.Option("--detach", "-d", help="Return once everything is ready; stop later with `novamesh down`.")]


def register(app: typer.Typer) -> None:
    """Add ``up``, ``down`` and ``demo`` to the ``novamesh`` app."""
    app.command("up")(up)
    app.command("down")(down)
    app.command("demo")(demo)


def up(file: FileOption, detach: DetachOption = False) -> None:
    """Start a local mesh from a stack file: control plane, config, workloads with sidecars."""
    stack = _load(file)
    _run(StackRunner(stack, Settings.from_env()), detach, next_steps=None)


def down(
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Stack file whose stack to stop.", dir_okay=False)] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory of the stack to stop.")] = None,
) -> None:
    """Stop a running stack (workloads first, then the control plane)."""
    settings = Settings.from_env()
    if file is not None:
        target = StackRunner(_load(file), settings).data_dir
    elif data_dir is not None:
        target = data_dir.expanduser().resolve()
    else:
        found = running_stacks(settings)
        if not found:
            console.print(f"No running stack under {Path(settings.data_dir).expanduser() / 'stacks'}; "
                          "for a stack with its own dataDir use `novamesh down -f STACK` or `--data-dir DIR`.")
            return
        if len(found) > 1:
            err_console.print("[red]Several stacks are running; say which one with --data-dir:[/red]")
            for path in found:
                err_console.print(f"  novamesh down --data-dir {path}")
            raise typer.Exit(1)
        target = found[0]
    try:
        stopped = stop_stack(target, settings, _say)
    except NovameshError as exc:
        _fail(exc)
    console.print(f"[green]Stopped[/green] the stack in {target}." if stopped else f"No stack state in {target}; nothing to stop.")


def demo(
    detach: DetachOption = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where the demo keeps its store and logs.")] = None,
    http_port: Annotated[int | None, typer.Option("--http-port", help="Control-plane REST port.")] = None,
    xds_port: Annotated[int | None, typer.Option("--xds-port", help="Control-plane xDS port.")] = None,
) -> None:
    """Run the bundled demo: four services (reviews in three versions) as six echo workloads, a load generator, header routing and a canary."""
    from ..demo import stack_file

    stack = _load(stack_file()).with_control_plane(data_dir=data_dir, http_port=http_port, xds_port=xds_port)
    runner = StackRunner(stack, Settings.from_env())
    _run(runner, detach, next_steps=_demo_next_steps)


# -- helpers ---------------------------------------------------------------------------------


def _say(message: str) -> None:
    console.print(f"[dim]•[/dim] {message}", soft_wrap=True, highlight=False)


def _fail(exc: BaseException) -> NoReturn:
    if isinstance(exc, ConfigError):
        err_console.print(f"[red]error:[/red] {exc.summary}: {len(exc.violations)} problem(s); nothing was started",
                          highlight=False)
        for v in exc.violations:
            err_console.print(f"  [bold]{v.location() or '-'}[/bold]", highlight=False, markup=True)
            err_console.print(f"    {v.message}", highlight=False, markup=False)
            if v.hint:
                err_console.print(f"    fix: {v.hint}", highlight=False, markup=False)
    else:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
    raise typer.Exit(1)


def _load(file: Path) -> Stack:
    try:
        return load_stack(file)
    except NovameshError as exc:
        _fail(exc)


def _run(runner: StackRunner, detach: bool, next_steps: Callable[[StackRunner], None] | None) -> None:
    """Bring the stack up with progress, then either return (detach) or stay until Ctrl-C."""
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` in the foreground == Ctrl-C
    try:
        try:
            with console.status("starting…") as status:

                def progress(message: str) -> None:
                    _say(message)
                    status.update(message)

                runner.up(progress)
        except NovameshError as exc:
            _fail(exc)
        except KeyboardInterrupt:  # up() has already stopped what it started
            err_console.print("interrupted; the stack was stopped")
            raise typer.Exit(130) from None
        console.print(_status_table(runner))
        if next_steps is not None:
            next_steps(runner)
        if detach:
            console.print(f"Logs: {runner.log_dir}/  Stop with: [bold]novamesh down{_down_flags(runner)}[/bold]")
            return
        console.print(f"Logs: {runner.log_dir}/  Press [bold]Ctrl-C[/bold] to stop everything.")
        try:
            _watch(runner)
        except KeyboardInterrupt:
            console.print("stopping…")
        runner.down(_say)
        console.print("[green]Stopped.[/green]")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _watch(runner: StackRunner) -> None:
    """Until interrupted: report processes that exit and readiness changes."""
    seen: dict[str, tuple[bool, bool | None]] = {s.name: (s.running, s.ready) for s in runner.status()}
    while True:
        time.sleep(2.0)
        for s in runner.status():
            before = seen.get(s.name)
            now = (s.running, s.ready)
            if before == now:
                continue
            seen[s.name] = now
            if not s.running:
                err_console.print(f"[red]{s.name} (pid {s.pid}) exited[/red]; see {s.log}")
            elif s.ready is not None and before is not None and before[1] != s.ready:
                console.print(f"{s.name} is {'ready' if s.ready else '[yellow]not ready[/yellow]'}")


def _status_table(runner: StackRunner) -> Table:
    table = Table(title=f"stack {runner.stack.name} — control plane {runner.url}")
    for column in ("process", "pid", "address", "ready", "log"):
        table.add_column(column)
    for s in runner.status():
        ready = "-" if s.ready is None else ("[green]yes[/green]" if s.ready else "[yellow]no[/yellow]")
        state = "" if s.running else " [red](exited)[/red]"
        table.add_row(f"{s.name}{state}", str(s.pid), s.address, ready, s.log.name)
    return table


def _down_flags(runner: StackRunner) -> str:
    if runner.data_dir.parent == Path(Settings.from_env().data_dir).expanduser() / "stacks":
        return ""  # `novamesh down` finds stacks there on its own
    return f" --data-dir {runner.data_dir}"


def _demo_next_steps(runner: StackRunner) -> None:
    frontend = next((w for w in runner.api_workloads() if w.get("service") == "frontend"), None)
    address = str(frontend.get("address")) if frontend else "<frontend address>"
    proxy = f"http://{address}:{runner.settings.outbound_port}"
    cp = "" if runner.url == Settings().control_plane_url else f" --control-plane {runner.url}"
    console.print()
    console.print("[bold]Try it[/bold] (requests go through the frontend's sidecar, which routes by Host):")
    lines = [
        ("the whole call tree: frontend → catalog, reviews (→ ratings)", f"curl -s -x {proxy} http://frontend:9080/"),
        ("as jason: reviews v2 answers", f"curl -s -x {proxy} -H 'end-user: jason' http://frontend:9080/"),
        ("the 80/20 canary, 20 calls to reviews",
         f"for i in $(seq 20); do curl -si -x {proxy} http://reviews:9080/ | grep -i '^x-echo-service'; done"),
        ("echo switches per request: this one fails half the time",
         f"curl -s -o /dev/null -w '%{{http_code}}\\n' -x {proxy} -H 'x-echo-fail-fraction: 0.5' http://reviews:9080/"),
        ("sidecar sync status", f"novamesh proxy-status{cp}"),
        ("the routing config", f"novamesh get virtualservice{cp}"),
        ("logs", f"ls {runner.log_dir}/"),
        ("stop everything", f"novamesh down{_down_flags(runner)}"),
    ]
    for what, command in lines:
        console.print(f"  [dim]# {what}[/dim]")
        console.print(f"  {command}", highlight=False, soft_wrap=True)
    console.print()
