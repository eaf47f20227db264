"""`bluegreen dlq list|replay`: the dead letters."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bluegreen.cli.context import cli_context
from consumers import dlq

app = typer.Typer(help="Inspect and replay the dead-letter topic.")


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Dead letters not replayed yet: where they came from, which step refused them, why."""
    settings = cli_context(ctx).settings
    letters = dlq.open_dead_letters(settings.kafka, settings.consumer.group_id, limit=limit)
    total = dlq.open_count(settings.kafka, settings.consumer.group_id)
    if as_json:
        rows = [
            {"dlq_partition": x.dlq_partition, "dlq_offset": x.dlq_offset, **x.headers}
            for x in letters
        ]
        typer.echo(json.dumps({"open": total, "letters": rows}, indent=2))
        return
    table = Table(title=f"{total} open dead letters in {settings.kafka.dlq_topic}")
    for column in ("dlq offset", "from", "step", "error", "reason"):
        table.add_column(column, overflow="fold")
    for x in letters:
        table.add_row(
            f"{x.dlq_partition}@{x.dlq_offset}",
            x.original,
            x.headers.get("step", "?"),
            x.headers.get("error", "?").rsplit(".", 1)[-1],
            x.headers.get("reason", ""),
        )
    Console(width=160).print(table)


@app.command()
def replay(ctx: typer.Context) -> None:
    """Re-submit every open dead letter to the change topic (after the cause was fixed).

    They are applied like any change, with the same version guard; a message that
    fails again becomes a new dead letter.
    """
    settings = cli_context(ctx).settings
    count = dlq.replay(settings.kafka, settings.consumer.group_id)
    typer.echo(f"replayed {count} dead letters to {settings.kafka.topic}")
