"""`bluegreen bench ...`: benchmarks that print figures (never pass/fail)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bluegreen.bench import codec as codec_bench

app = typer.Typer(help="Benchmarks that report figures: codec, and the pipeline's parts.")


@app.command("codec")
def codec(
    events: Annotated[int, typer.Option(min=100, help="Events per kind.")] = 50_000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Encode and decode throughput of the change envelope (records/s), best of 3."""
    figures = codec_bench.run(events)
    if as_json:
        typer.echo(json.dumps([f.as_dict() for f in figures], indent=2))
        return
    table = Table(title=f"envelope codec, {events:,} events per kind, best of 3")
    for column in ("event", "bytes/event", "encode rec/s", "decode rec/s"):
        table.add_column(column, justify="right")
    for f in figures:
        table.add_row(
            f.kind, f"{f.mean_bytes:,.0f}", f"{f.encode_per_s:,.0f}", f"{f.decode_per_s:,.0f}"
        )
    Console().print(table)
