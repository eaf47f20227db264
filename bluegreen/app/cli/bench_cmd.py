"""`bluegreen bench ...`: benchmarks that print figures (never pass/fail)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bluegreen.app.bench import apply as apply_bench
from bluegreen.app.bench import cdc as cdc_bench
from bluegreen.app.bench import codec as codec_bench
from bluegreen.app.bench import pipeline as pipeline_bench
from bluegreen.app.bench import snapshot as snapshot_bench
from bluegreen.app.bench import verify as verify_bench
from bluegreen.app.cli.context import cli_context
from bluegreen.app.scratch import scratch
from bluegreen.core.runtime import tune_for_throughput

app = typer.Typer(
    help="Benchmarks that report figures (never pass/fail): the whole pipeline against a "
    "plain COPY, and each part on its own.",
    invoke_without_command=True,
)


@app.callback()
def bench(
    ctx: typer.Context,
    products: Annotated[int, typer.Option(min=100, help="Blue rows.")] = 300_000,
    report_path: Annotated[
        Path | None, typer.Option("--report", help="Write the figures as JSON here.")
    ] = None,
    write_rate: Annotated[float, typer.Option(min=1, help="CDC phase: changes/s on blue.")] = 300,
    seconds: Annotated[float, typer.Option(min=1, help="CDC phase: its length.")] = 20,
    consumers: Annotated[int, typer.Option(min=1, help="Consumer processes.")] = 1,
) -> None:
    """(a) COPY baseline, (b) snapshot through the pipeline, (c) CDC end-to-end latency.

    Runs in scratch databases and topics on the configured stack; prints the ratio
    (b)/(a).
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = cli_context(ctx).settings
    tune_for_throughput()
    with scratch(settings, "bench") as scratch_settings:
        report = pipeline_bench.run(
            scratch_settings, products, write_rate=write_rate, seconds=seconds, consumers=consumers
        )
    data = report.as_dict()
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(data, indent=2) + "\n")
    table = Table(title=f"bluegreen bench: {products:,} blue rows")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in data.items():
        table.add_row(key, str(value))
    Console().print(table)


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


@app.command("cdc")
def cdc(
    ctx: typer.Context,
    rows: Annotated[int, typer.Option(min=1000, help="Blue rows the load updates.")] = 50_000,
    rate: Annotated[int, typer.Option(min=1, help="Steady load, changes per second.")] = 5_000,
    seconds: Annotated[float, typer.Option(min=1, help="Length of each load phase.")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """CDC commit-to-ack latency under a steady load, then sustained capture throughput.

    Runs in scratch databases and a scratch topic on the configured stack.
    """
    settings = cli_context(ctx).settings
    with scratch(settings, "cdc") as bench:
        figures = cdc_bench.run(bench, rows=rows, rate=rate, seconds=seconds)
    if as_json:
        typer.echo(json.dumps(figures.as_dict(), indent=2))
        return
    table = Table(title="CDC capture (blue commit -> acknowledged by Kafka)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for label, value in (
        ("steady load, changes/s (target)", f"{figures.steady_changes_per_s:,.0f} ({rate:,})"),
        ("latency p50 ms", f"{figures.latency_p50_ms:.1f}"),
        ("latency p99 ms", f"{figures.latency_p99_ms:.1f}"),
        ("latency max ms", f"{figures.latency_max_ms:.1f}"),
        ("burst writes, changes/s", f"{figures.burst_write_changes_per_s:,.0f}"),
        ("capture during burst, changes/s", f"{figures.capture_changes_per_s:,.0f}"),
        ("catch-up after burst, s", f"{figures.catch_up_seconds:.1f}"),
        ("capture process peak RSS, MB", f"{figures.peak_rss_mb:.0f}"),
    ):
        table.add_row(label, value)
    Console().print(table)


@app.command("apply")
def apply(
    ctx: typer.Context,
    products: Annotated[int, typer.Option(min=1, help="Snapshot events to apply.")] = 300_000,
    backlog: Annotated[
        int, typer.Option(min=0, help="Backlog for the memory figure (0: skip).")
    ] = 1_000_000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Consumer apply throughput (events/s, 1 process) and peak RSS under a large backlog.

    Runs `bluegreen consume` against scratch databases and topics on the configured stack.
    """
    settings = cli_context(ctx).settings
    results: dict[str, dict[str, float]] = {}
    with scratch(settings, "apply") as bench:
        apply_bench.fill_with_snapshot(bench, products)
        results["throughput"] = apply_bench.consume_all(bench).as_dict()
    if backlog:
        with scratch(settings, "backlog") as bench:
            apply_bench.fill_with_snapshot(bench, min(products, backlog))
            apply_bench.top_up(bench, backlog)
            results["backlog"] = apply_bench.consume_all(bench).as_dict()
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    table = Table(title="consumer: snapshot events applied to green, one process")
    for column in ("run", "events", "seconds", "events/s", "peak RSS MB"):
        table.add_column(column, justify="right")
    for name, f in results.items():
        table.add_row(
            name,
            f"{f['events']:,.0f}",
            f"{f['seconds']:.1f}",
            f"{f['events_per_second']:,.0f}",
            f"{f['peak_rss_mb']:.0f}",
        )
    Console().print(table)


@app.command("verify")
def verify(
    ctx: typer.Context,
    products: Annotated[int, typer.Option(min=100, help="Blue rows to seed.")] = 300_000,
    runs: Annotated[int, typer.Option(min=1, help="Verifications to time (median).")] = 3,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Full verification throughput (blue rows/s, SKUs/s), median of `runs` passes.

    Seeds blue and fills green through the pipeline in scratch databases and a scratch
    topic on the configured stack, then times `verify` of every aggregate.
    """
    settings = cli_context(ctx).settings
    tune_for_throughput()
    with scratch(settings, "verify") as bench:
        figures = verify_bench.run(bench, products, runs)
    if as_json:
        typer.echo(json.dumps(figures.as_dict(), indent=2))
        return
    table = Table(title=f"full verification of {products:,} blue rows, median of {runs}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.as_dict().items():
        table.add_row(key, str(value))
    Console().print(table)
