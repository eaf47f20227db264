"""`bluegreen status`: where the migration stands."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from bluegreen.cli.context import cli_context
from cutover.status import Status, collect
from producers.snapshot.tasks import State


def render(status: Status) -> Group:
    parts: list[Table | Panel] = []
    snap = Table(title="snapshot tasks", show_header=True)
    if status.snapshot is None:
        parts.append(Panel("not planned yet (`bluegreen snapshot`)", title="snapshot"))
    else:
        for state in State:
            snap.add_column(state.value, justify="right")
        snap.add_column("rows", justify="right")
        snap.add_row(
            *(str(status.snapshot.tasks_by_state.get(s, 0)) for s in State),
            f"{status.snapshot.rows:,}",
        )
        parts.append(snap)
        if status.snapshot.last_errors:
            errors = Table(title="last task errors")
            for column in ("task", "state", "attempts", "error"):
                errors.add_column(column, overflow="fold")
            for e in status.snapshot.last_errors:
                errors.add_row(str(e["task"]), e["state"], str(e["attempts"]), e["error"])
            parts.append(errors)
    if status.slot is None:
        parts.append(Panel("no replication slot yet", title="CDC source"))
    else:
        slot = Table(title=f"CDC source (slot {status.slot.slot})")
        for column in ("active", "lag bytes", "retained WAL bytes", "wal status"):
            slot.add_column(column, justify="right")
        slot.add_row(
            "yes" if status.slot.active else "no",
            f"{status.slot.lag_bytes:,}",
            f"{status.slot.retained_bytes:,}",
            status.slot.wal_status or "-",
        )
        parts.append(slot)
    for problem in status.problems:
        parts.append(Panel(problem, title="problem", style="red"))
    return Group(*parts)


def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON.")] = False,
) -> None:
    """Show the migration's state: snapshot tasks, CDC source lag and last errors."""
    settings = cli_context(ctx).settings
    current = collect(settings)
    if as_json:
        typer.echo(json.dumps(current.as_dict(), indent=2, default=str))
        return
    Console(width=160).print(render(current))
