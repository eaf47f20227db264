"""`bluegreen demo`: the whole migration on the local stack, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bluegreen.app.cli.context import cli_context
from bluegreen.app.demo.report import write_report
from bluegreen.app.demo.run import run
from bluegreen.core.progress import progress
from bluegreen.core.runtime import tune_for_throughput


def demo(
    ctx: typer.Context,
    products: Annotated[int, typer.Option(min=100, help="Blue rows to seed.")] = 300_000,
    report_path: Annotated[
        Path | None, typer.Option("--report", help="Write the report as JSON here.")
    ] = None,
    write_rate: Annotated[
        float,
        typer.Option(min=1, help="Write transactions per second the application makes."),
    ] = 300,
) -> None:
    """From an empty stack: seed blue, run snapshot, CDC and consumers under a live write
    and read load, cut over, roll back, cut over again, verify, report.

    It resets the demo's own state first (blue's legacy_product, green's schemas, the
    control schema, the slot, the topics). Exit 1 when a read or a write failed, an
    acknowledged write was lost, green differs, or a shadowed read did not match.
    """
    settings = cli_context(ctx).settings
    tune_for_throughput()
    with progress("demo", total=8, unit="steps", interval_s=1.0) as reporter:
        report = run(settings, products, write_rate=write_rate, reporter=reporter)
    if report_path is not None:
        write_report(report, report_path)
    table = Table(title=f"bluegreen demo: {products:,} blue rows")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in report.as_dict().items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    Console(width=120).print(table)
    if (
        report.failed_reads
        or report.verify_differences
        or report.failed_writes
        or report.lost_writes
        or report.verify_reverse_differences
        or report.shadow_mismatches
    ):
        raise typer.Exit(1)
