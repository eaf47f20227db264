"""`bluegreen seed`: deterministic demo data into blue."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from bluegreen.app.cli.context import cli_context
from bluegreen.core import db
from bluegreen.core.progress import progress
from schemas.catalog.seed_load import load_seed


def seed(
    ctx: typer.Context,
    products: Annotated[
        int, typer.Option("--products", min=1, help="Blue rows (one SKU in one channel each).")
    ] = 300_000,
    seed_value: Annotated[int, typer.Option("--seed", help="Same seed, same rows.")] = 42,
    replace: Annotated[
        bool, typer.Option("--replace", help="Empty blue's table first if it holds rows.")
    ] = False,
) -> None:
    """Fill blue with N legacy product rows, deterministically, with COPY."""
    settings = cli_context(ctx).settings
    started = time.monotonic()
    with progress("seeding blue", total=products) as reporter:
        report = load_seed(
            settings.blue_dsn, products, seed_value, replace=replace, progress=reporter
        )
    seconds = time.monotonic() - started
    typer.echo(
        f"seeded {report.rows:,} rows into {db.describe(settings.blue_dsn)} in {seconds:.1f}s "
        f"({report.rows / seconds:,.0f} rows/s); table {report.table_bytes / 2**20:.1f} MiB "
        f"of which TOAST {report.toast_bytes / 2**20:.1f} MiB"
    )
