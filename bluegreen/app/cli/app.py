"""Root of the CLI: global options and the sub-commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bluegreen import __version__
from bluegreen.app.cli import (
    bench_cmd,
    chaos_cmd,
    cutover_cmd,
    demo_cmd,
    dlq_cmd,
    reverse_cdc_cmd,
    reverse_cmd,
    schemas_cmd,
    seed_cmd,
    service_cmds,
    snapshot_cmd,
    stack_cmd,
    status_cmd,
)
from bluegreen.app.cli.context import CliContext, enable_debug

app = typer.Typer(
    name="bluegreen",
    help="Zero-downtime blue-green migration of a product catalog through Apache Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(stack_cmd.app, name="stack")
app.add_typer(schemas_cmd.app, name="schemas")
app.command("seed")(seed_cmd.seed)
app.add_typer(snapshot_cmd.app, name="snapshot")
app.command("status")(status_cmd.status)
app.command("cdc")(service_cmds.cdc)
app.command("consume")(service_cmds.consume)
app.command("reverse-cdc")(reverse_cdc_cmd.reverse_cdc)
app.add_typer(dlq_cmd.app, name="dlq")
app.command("verify")(cutover_cmd.verify_cmd)
app.command("cutover")(cutover_cmd.cutover_cmd)
app.command("rollback")(cutover_cmd.rollback_cmd)
app.command("complete")(cutover_cmd.complete_cmd)
app.command("demo")(demo_cmd.demo)
app.add_typer(bench_cmd.app, name="bench")
app.command("chaos")(chaos_cmd.chaos)
app.command("reverse-apply")(reverse_cmd.reverse_apply)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bluegreen {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="BLUEGREEN_CONFIG",
            help="TOML file with settings (environment variables BLUEGREEN_* override it).",
            show_envvar=True,
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", help="console or json (default: BLUEGREEN_LOG__FORMAT)."),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an error, not one line.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    if debug:
        enable_debug()
    ctx.obj = CliContext(config_file=config, log_format=log_format)
