"""`bluegreen verify|cutover|rollback|complete`: the release window."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bluegreen import control
from bluegreen.app.cli import follow_cmd, write_switch_cmd
from bluegreen.app.cli.context import cli_context
from bluegreen.core import db, kafka
from bluegreen.core.metrics import Metrics
from bluegreen.core.runtime import tune_for_throughput
from cutover import fence, gates, switch
from cutover.verify import VerifyReport, verify
from cutover.verify_reverse import verify_reverse
from producers.blue_setup import drop_capture
from producers.snapshot import service as snapshot

Timeout = Annotated[
    float,
    typer.Option("--timeout", min=1, help="Seconds to wait for the fence on every partition."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON.")]
Writes = Annotated[
    bool, typer.Option("--writes", help="Move write ownership (not reads); see the Runbook.")
]
PauseBudget = Annotated[
    str,
    typer.Option(
        "--write-pause-budget",
        help="With --writes: the longest new writes are held (1s, 500ms); past it the "
        "switch aborts and writes resume where they were.",
    ),
]


def _print_verify(report: VerifyReport, console: Console) -> None:
    verdict = "[bold green]clean[/]" if report.clean else "[bold red]NOT clean[/]"
    console.print(
        f"verification {verdict}: {report.skus:,} SKUs, {report.products:,} products, "
        f"{report.listings:,} listings in {report.ranges} ranges ({report.ranges_differing} "
        f"differing), snapshot LSN {report.snapshot_lsn}, {report.seconds:.1f}s, "
        f"{report.rounds} round(s)"
    )
    if report.differences:
        table = Table(title=f"{len(report.differences)} differences")
        for column in ("sku", "kind", "table", "channel", "fields", "detail"):
            table.add_column(column, overflow="fold")
        for d in report.differences[:100]:
            part = "" if d.channel is None else str(d.channel)
            table.add_row(str(d.sku), d.kind, d.table, part, ", ".join(d.fields), d.detail)
        console.print(table)
    if report.unsettled:
        unsettled = ", ".join(map(str, report.unsettled[:50]))
        console.print(f"still changing on every snapshot tried: {unsettled}")


def verify_cmd(
    ctx: typer.Context,
    repair: Annotated[
        bool, typer.Option("--repair", help="Re-snapshot exactly the differing keys, then verify.")
    ] = False,
    no_fence: Annotated[
        bool,
        typer.Option(
            "--no-fence", help="Blue is quiet and green caught up: do not wait for a fence."
        ),
    ] = False,
    timeout: Timeout = 120.0,
    as_json: JsonFlag = False,
    direction: Annotated[
        str,
        typer.Option(
            "--direction",
            help="forward: green == transform(blue); reverse: blue == inverse(green) "
            "(writes on green: a fence through reverse-cdc and reverse-apply).",
        ),
    ] = "forward",
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Run as a service: one full pass, then re-verify exactly the keys the "
            "change stream touches, keeping a watermark the cutover gate reads.",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", help="--follow: seconds between cycles.")
    ] = 1.0,
    metrics_port: Annotated[
        int, typer.Option(help="--follow: port of /metrics (0: any free port, -1: off).")
    ] = 9467,
) -> None:
    """Compare transform(blue) with green, every key; list exactly the keys that differ.

    With CDC and the consumer running (the default), a fence proves green holds every
    blue change up to the snapshot compared. Exit 1 when differences remain. With
    --follow it keeps verifying until SIGTERM/SIGINT (see the README, Verification).
    """
    settings, domain = cli_context(ctx).settings, cli_context(ctx).domain
    tune_for_throughput()  # a full pass allocates millions of short-lived objects
    if follow:
        follow_cmd.follow(settings, domain, interval_s=interval, metrics_port=metrics_port)
        return
    console = Console(width=160)
    if direction not in ("forward", "reverse"):
        raise typer.BadParameter("forward or reverse", param_hint="--direction")
    wait = None if no_fence else fence.waiter(settings, timeout)
    if direction == "reverse":
        fence_timeout = None if no_fence else timeout
        report = verify_reverse(settings, domain, fence_timeout_s=fence_timeout)
        repair = False  # a reverse difference is repaired by the reverse applier, not here
    else:
        report = verify(settings, domain, wait_for=wait)
        gates.record(settings, report)
    if repair and not report.clean:
        keys = report.keys(domain)
        if not as_json:
            _print_verify(report, console)
            console.print(f"repairing: re-snapshot of {len(keys)} keys through the pipeline")
        with db.connect(settings.control_dsn) as conn:
            control.ensure_schema(conn)
            control.add_key_task(conn, domain.source.qualified, keys)
        snapshot.SnapshotService(settings, domain.source, Metrics()).run(workers=1)
        report = verify(settings, domain, wait_for=fence.waiter(settings, timeout))
        gates.record(settings, report)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        _print_verify(report, console)
    if not report.clean:
        raise typer.Exit(1)


def cutover_cmd(
    ctx: typer.Context,
    timeout: Timeout = 120.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report every gate; switch nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Switch even if a gate fails (needs --reason).")
    ] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (audited).")] = None,
    as_json: JsonFlag = False,
    writes: Writes = False,
    write_pause_budget: PauseBudget = "1s",
    recover: Annotated[
        bool,
        typer.Option(
            "--recover", help="With --writes: finish a write switch that died with writes paused."
        ),
    ] = False,
) -> None:
    """Switch reads to green once every gate passes: snapshot complete, no open dead
    letters, lag zero end to end (a fence applied on every partition), verification clean.

    With --writes (from reads-on-green, every gate passing): pause writes at the
    routers, drain blue's writes in flight, fence, flip write ownership to green, revoke
    the application's writes on blue, resume. Exit 2 when a gate refuses (each failing
    gate is named with its figure), 3 when the write switch aborted (writes on blue).
    """
    settings = cli_context(ctx).settings
    tune_for_throughput()  # the verification gate's full pass, as `verify`
    if writes:
        if force:
            typer.echo(
                "bluegreen: --force does not apply to --writes: every gate must pass", err=True
            )
            raise typer.Exit(2)
        write_switch_cmd.cutover_writes(
            settings,
            cli_context(ctx).domain,
            budget=write_pause_budget,
            timeout=timeout,
            reason=reason,
            as_json=as_json,
            recover=recover,
            dry_run=dry_run,
        )
        return
    try:
        report = switch.cutover(
            settings,
            cli_context(ctx).domain,
            timeout_s=timeout,
            dry_run=dry_run,
            force=force,
            reason=reason,
        )
    except switch.CutoverRefusedError as exc:
        typer.echo(f"bluegreen: {exc}", err=True)
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        table = Table(title="cutover gates")
        for column in ("gate", "result", "figure"):
            table.add_column(column, overflow="fold")
        for gate in report.gates:
            table.add_row(gate.name, "[green]pass[/]" if gate.ok else "[red]FAIL[/]", gate.figure)
        console = Console(width=160)
        console.print(table)
        if report.switched:
            forced = " (FORCED)" if report.forced else ""
            console.print(
                f"reads now served by [bold green]green[/]{forced}, router epoch "
                f"{report.router.epoch if report.router else '?'}; flip {report.switch_ms:.1f} ms"
            )
        else:
            console.print("dry run: nothing switched")
    if dry_run and not report.passed:
        raise typer.Exit(2)


def rollback_cmd(
    ctx: typer.Context,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (audited).")] = None,
    writes: Writes = False,
    write_pause_budget: PauseBudget = "1s",
    refresh_only: Annotated[
        bool,
        typer.Option("--refresh-only", help="With --writes: only refresh keys written on green."),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Switch reads back to blue: one audited transaction, every client follows at once.

    With --writes: write ownership back to blue (the mirror image of `cutover --writes`),
    then the keys written on green are re-snapshotted from blue.
    """
    settings = cli_context(ctx).settings
    if writes:
        write_switch_cmd.rollback_writes(
            settings,
            cli_context(ctx).domain,
            budget=write_pause_budget,
            reason=reason,
            refresh_only=refresh_only,
            as_json=as_json,
        )
        return
    router, millis = switch.rollback(settings, reason=reason)
    typer.echo(f"reads now served by blue, router epoch {router.epoch}; flip {millis:.1f} ms")


def complete_cmd(
    ctx: typer.Context,
    reason: Annotated[str, typer.Option("--reason", help="Why (audited).")],
    drop_capture_: Annotated[
        bool, typer.Option("--drop-capture", help="Drop blue's replication slot and publication.")
    ] = False,
    drop_topics: Annotated[
        bool, typer.Option("--drop-topics", help="Delete the change and dead-letter topics.")
    ] = False,
) -> None:
    """Finish the migration (reads stay on green) and optionally clean up."""
    settings = cli_context(ctx).settings
    with db.connect(settings.control_dsn) as conn:
        control.ensure_schema(conn)
        control.transition(conn, control.Phase.COMPLETED, action="complete", reason=reason)
    typer.echo("migration completed")
    if drop_capture_:
        dropped = drop_capture(settings.blue_dsn, settings.cdc)
        typer.echo(f"dropped on blue: {', '.join(dropped) or 'nothing (already gone)'}")
    if drop_topics:
        kafka.delete_topics(settings.kafka, [settings.kafka.topic, settings.kafka.dlq_topic])
        typer.echo(f"deleted topics {settings.kafka.topic}, {settings.kafka.dlq_topic}")
