"""`bluegreen snapshot`: the bulk snapshot of blue into Kafka."""

from __future__ import annotations

from typing import Annotated

import typer

from bluegreen import control
from bluegreen.app.cli.context import cli_context
from bluegreen.core import db
from bluegreen.core.metrics import Metrics, serve
from producers.snapshot import service

app = typer.Typer(
    help="Snapshot blue into Kafka as independent, resumable tasks.",
    invoke_without_command=True,
)
_METRICS_PORT = 9463


@app.callback()
def snapshot(
    ctx: typer.Context,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="Worker processes (default: snapshot.workers)."),
    ] = None,
    metrics_port: Annotated[
        int, typer.Option(help="Port of /metrics (0: any free port, -1: off).")
    ] = _METRICS_PORT,
) -> None:
    """Plan the tasks once, then run N worker processes until every task is COMPLETED or DEAD.

    Exit 0 when every task is COMPLETED (a worker killed on the way is restarted and
    its tasks taken over), 2 when a task is DEAD, 1 with one line when it cannot go on.
    Safe to run again after any failure: completed tasks are not run again.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = cli_context(ctx).settings
    metrics = Metrics()
    if metrics_port >= 0:
        serve(settings.metrics.model_copy(update={"port": metrics_port}), metrics.registry)
    report = service.SnapshotService(settings, cli_context(ctx).domain.source, metrics).run(
        workers or settings.snapshot.workers
    )
    typer.echo(
        f"snapshot: {report.completed}/{report.tasks} tasks completed, {report.dead} dead, "
        f"{report.rows:,} rows in {report.seconds:.1f}s ({report.rows_per_second:,.0f} rows/s)"
    )
    if report.dead:
        typer.echo(
            "some tasks are DEAD: see `bluegreen status` for their errors, fix the cause, then "
            "`bluegreen snapshot retry --dead` and run `bluegreen snapshot` again",
            err=True,
        )
        raise typer.Exit(2)
    if not report.ok:
        open_tasks = report.tasks - report.completed - report.dead
        typer.echo(
            f"bluegreen snapshot: error: {report.problem or 'workers stopped early'} "
            f"({open_tasks} tasks not completed; `bluegreen snapshot` resumes them)",
            err=True,
        )
        raise typer.Exit(1)


@app.command()
def plan(ctx: typer.Context) -> None:
    """Create the CDC slot, the topic and the tasks, without running workers."""
    settings = cli_context(ctx).settings
    count, fresh = service.prepare(settings, cli_context(ctx).domain.source)
    typer.echo(f"{count} tasks {'planned' if fresh else 'already planned'}")


@app.command()
def retry(
    ctx: typer.Context,
    dead: Annotated[bool, typer.Option("--dead", help="Put DEAD tasks back to READY.")] = False,
) -> None:
    """Retry tasks after fixing what made them fail."""
    if not dead:
        raise typer.BadParameter("say which tasks: --dead")
    settings = cli_context(ctx).settings
    with db.connect(settings.control_dsn) as conn:
        count = control.retry_dead(conn)
    typer.echo(f"{count} DEAD tasks are READY again; run `bluegreen snapshot`")
