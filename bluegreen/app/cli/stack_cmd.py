"""`bluegreen stack up|down|status`: the local Kafka broker and PostgreSQL clusters."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bluegreen.app.cli.context import cli_context
from bluegreen.app.stack.local import LocalStack, ServiceStatus, state_paths

app = typer.Typer(help="Start, stop and inspect the local stack (Kafka + PostgreSQL).")
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _print(report: list[ServiceStatus], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps([s.as_dict() for s in report], indent=2))
        return
    table = Table(title=title)
    for column in ("service", "address", "pid", "state", "rss MB", "note"):
        table.add_column(column)
    for s in report:
        state = "healthy" if s.healthy else ("running" if s.running else "stopped")
        note = s.action + (f" in {s.seconds:.1f}s" if s.action else "")
        rss = f"{s.rss_mb:.0f}" if s.rss_mb else "-"
        table.add_row(s.name, s.address, str(s.pid or "-"), state, rss, note)
    Console().print(table)


@app.command()
def up(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Start (or report) the blue, green and control clusters and the Kafka broker."""
    settings = cli_context(ctx).settings
    stack = LocalStack(settings.stack)
    _print(stack.up(), as_json, f"bluegreen stack ({stack.state_dir})")


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop exactly the processes `stack up` started; data stays in the state folder."""
    stack = LocalStack(cli_context(ctx).settings.stack)
    stopped = stack.down()
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Say which services of the local stack run; exit 3 when one is not healthy."""
    settings = cli_context(ctx).settings
    stack = LocalStack(settings.stack)
    report = stack.status()
    _print(report, as_json, f"bluegreen stack ({stack.state_dir})")
    if not as_json and not all(s.healthy for s in report):
        logs = state_paths(settings.stack.state_dir)
        for s in report:
            if not s.healthy:
                typer.echo(f"{s.name} is down; its log: {logs[s.name]}", err=True)
    if not all(s.healthy for s in report):
        raise typer.Exit(3)
