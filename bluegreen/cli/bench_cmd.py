"""`bluegreen bench ...`: benchmarks that print figures (never pass/fail)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bluegreen.bench import codec as codec_bench
from bluegreen.bench import snapshot as snapshot_bench
from bluegreen.bench.scratch import scratch
from bluegreen.cli.context import cli_context

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


@app.command("snapshot")
def snapshot(
    ctx: typer.Context,
    products: Annotated[int, typer.Option(min=1, help="Blue rows to snapshot.")] = 300_000,
    workers: Annotated[str, typer.Option(help="Comma-separated worker counts to measure.")] = "1,2",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Snapshot produce throughput (rows/s) for N blue rows with 1 and 2 workers.

    Runs in scratch databases and a scratch topic on the configured stack.
    """
    settings = cli_context(ctx).settings
    figures = []
    for count in (int(w) for w in workers.split(",")):
        with scratch(settings, f"snap{count}") as bench:
            figures.append(snapshot_bench.run_once(bench, products, count))
    if as_json:
        typer.echo(json.dumps([f.as_dict() for f in figures], indent=2))
        return
    table = Table(title=f"snapshot of {products:,} blue rows into Kafka")
    for column in ("workers", "produce s", "rows/s", "command s", "peak worker RSS MB"):
        table.add_column(column, justify="right")
    for f in figures:
        table.add_row(
            str(f.workers),
            f"{f.produce_seconds:.2f}",
            f"{f.rows_per_second:,.0f}",
            f"{f.command_seconds:.2f}",
            f"{f.peak_worker_rss_mb:.0f}",
        )
    Console().print(table)
