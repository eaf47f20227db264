"""`bluegreen dlq list|replay`: the dead letters."""

from __future__ import annotations

import json
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from bluegreen.app.cli.context import cli_context
from consumers import dlq

app = typer.Typer(help="Inspect and replay the dead-letter topic.")


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Dead letters not replayed yet: where they came from, which step refused them, why,
    and whether they are superseded (green has since applied newer versions of every key
    they would touch; replay skips them and they do not block a cutover)."""
    settings = cli_context(ctx).settings
    letters, total = dlq.read_open(settings.kafka, settings.consumer.group_id)
    try:
        letters = dlq.classify(letters, settings.green_dsn, cli_context(ctx).domain)
        known = True
    except psycopg.Error as exc:
        known = False
        typer.echo(f"green unreachable, superseded letters not told apart: {exc}", err=True)
    superseded = sum(x.superseded for x in letters)
    shown = letters[:limit]
    if as_json:
        rows = [
            {
                "dlq_partition": x.dlq_partition,
                "dlq_offset": x.dlq_offset,
                "superseded": x.superseded if known else None,
                **x.headers,
            }
            for x in shown
        ]
        counts = {"open": total - superseded, "superseded": superseded if known else None}
        typer.echo(json.dumps({**counts, "letters": rows}, indent=2))
        return
    title = (
        f"{total - superseded} open, {superseded} superseded dead letters"
        if known
        else f"{total} dead letters not replayed (superseded ones not told apart)"
    )
    table = Table(title=f"{title} in {settings.kafka.dlq_topic}")
    for column in ("dlq offset", "from", "state", "step", "error", "reason"):
        table.add_column(column, overflow="fold")
    for x in shown:
        table.add_row(
            f"{x.dlq_partition}@{x.dlq_offset}",
            x.original,
            ("superseded" if x.superseded else "open") if known else "?",
            x.headers.get("step", "?"),
            x.headers.get("error", "?").rsplit(".", 1)[-1],
            x.headers.get("reason", ""),
        )
    Console(width=160).print(table)


@app.command()
def replay(ctx: typer.Context) -> None:
    """Re-submit the open dead letters to the change topic (after the cause was fixed).

    They are applied like any change, with the same version guard; a message that
    fails again becomes a new dead letter. Superseded letters (green has since applied
    newer versions of every key they would touch) are skipped, not re-submitted, and
    marked replayed with the others.
    """
    settings = cli_context(ctx).settings
    report = dlq.replay_open(
        settings.kafka, settings.consumer.group_id, settings.green_dsn, cli_context(ctx).domain
    )
    typer.echo(
        f"replayed {report.replayed} dead letters to {settings.kafka.topic}; skipped "
        f"{report.superseded} superseded (green holds newer versions of their keys)"
    )
