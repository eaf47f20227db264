"""`bluegreen status`: where the migration stands, once or live."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

import typer
from rich.columns import Columns
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from bluegreen.app.cli.context import cli_context
from bluegreen.control import State
from cutover.status import Status, collect


def _overview(status: Status) -> Table:
    table = Table(title="migration", show_header=False, expand=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    reads = status.reads_on or "-"
    style = "bold green" if reads == "green" else "bold blue"
    table.add_row("phase", Text(status.phase or "-", style="bold"))
    table.add_row("reads served by", Text(reads, style=style))
    table.add_row(
        "router epoch", str(status.router_epoch if status.router_epoch is not None else "-")
    )
    writes = status.writes_on or "-"
    if status.writes_paused:
        writes += " (PAUSED)"
    table.add_row(
        "writes owned by", Text(writes, style="bold green" if writes == "green" else "bold blue")
    )
    table.add_row("write epoch", "-" if status.write_epoch is None else str(status.write_epoch))
    if status.refresh_pending:
        table.add_row("green refresh", Text("pending (rollback --writes)", style="bold red"))
    lag = status.total_lag
    table.add_row("consumer lag (messages)", "-" if lag is None else f"{lag:,}")
    table.add_row("open dead letters", "-" if status.dlq_open is None else f"{status.dlq_open:,}")
    superseded = status.dlq_superseded
    table.add_row("superseded dead letters", "-" if superseded is None else f"{superseded:,}")
    if status.slot is not None:
        table.add_row("CDC source lag (bytes)", f"{status.slot.lag_bytes:,}")
        table.add_row("slot retains WAL (bytes)", f"{status.slot.retained_bytes:,}")
        table.add_row("slot active", "yes" if status.slot.active else "no")
    else:
        table.add_row("CDC slot", "none yet")
    reverse = status.reverse_slot
    table.add_row(
        "reverse source lag (bytes)", "n/a" if reverse is None else f"{reverse.lag_bytes:,}"
    )
    reverse_lag = status.total_reverse_lag
    table.add_row("reverse lag (messages)", "n/a" if reverse_lag is None else f"{reverse_lag:,}")
    shadow = status.shadow
    if shadow is not None:
        table.add_row(
            f"shadow reads (last {shadow['window_minutes']} min)",
            f"{shadow['compared']:,} compared, {shadow['mismatched']:,} mismatched, "
            f"{shadow['dropped']:,} dropped",
        )
        table.add_row("shadow gate", _verdict(shadow))
    verification = status.verification
    if verification is None:
        table.add_row("verification", "not run yet")
    else:
        verdict = "clean" if verification["clean"] else f"{verification['differences']} differences"
        table.add_row("verification", f"{verdict} ({verification['at']:%H:%M:%S})")
    following = status.following
    if following is None:
        table.add_row("continuous verification", "not running (`bluegreen verify --follow`)")
    else:
        state = "running" if following["running"] else "STOPPED (heartbeat stale)"
        table.add_row(
            "continuous verification",
            f"{state}: watermark {following['watermark_age_s']}s old, "
            f"{following['differing']} SKUs differ, {following['pending']} moving, "
            f"{following['queued_batches']} batches queued",
        )
    return table


def _verdict(shadow: dict[str, Any]) -> Text:
    if not shadow["gate_passes"]:
        return Text("fails", style="bold red")
    return Text("passes" if shadow["gate_required"] else "passes (not required)", style="green")


def _snapshot(status: Status) -> Table | Panel:
    if status.snapshot is None:
        return Panel("not planned yet (`bluegreen snapshot`)", title="snapshot tasks")
    table = Table(title="snapshot tasks")
    for state in State:
        table.add_column(state.value, justify="right")
    table.add_column("rows", justify="right")
    table.add_row(
        *(str(status.snapshot.tasks_by_state.get(s, 0)) for s in State),
        f"{status.snapshot.rows:,}",
    )
    return table


def _lag(status: Status) -> Table | None:
    if not status.consumer_lag:
        return None
    table = Table(title="consumer lag per partition", min_width=32)
    table.add_column("partition", justify="right")
    table.add_column("lag", justify="right")
    for partition, lag in sorted(status.consumer_lag.items()):
        table.add_row(str(partition), f"{lag:,}")
    return table


def render(status: Status) -> Group:
    parts: list[object] = [Columns([_overview(status), _snapshot(status)])]
    lag = _lag(status)
    if lag is not None:
        parts.append(lag)
    if status.snapshot is not None and status.snapshot.last_errors:
        errors = Table(title="last task errors")
        for column in ("task", "state", "attempts", "error"):
            errors.add_column(column, overflow="fold")
        for e in status.snapshot.last_errors:
            errors.add_row(str(e["task"]), e["state"], str(e["attempts"]), e["error"])
        parts.append(errors)
    if status.audit:
        audit = Table(title="last audited actions")
        for column in ("at", "action", "to phase", "by", "reason"):
            audit.add_column(column, overflow="fold")
        for entry in status.audit:
            audit.add_row(
                f"{entry['at']:%H:%M:%S}",
                entry["action"],
                entry["to"] or "",
                entry["actor"],
                entry["reason"] or "",
            )
        parts.append(audit)
    for problem in status.problems:
        parts.append(Panel(problem, title="problem", style="red"))
    parts.append(Text(f"as of {status.collected_at:%Y-%m-%d %H:%M:%S %Z}", style="dim"))
    return Group(*parts)  # type: ignore[arg-type]


def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON.")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes.")] = 2.0,
    iterations: Annotated[
        int, typer.Option(min=0, help="With --watch: stop after N refreshes (0: until Ctrl-C).")
    ] = 0,
) -> None:
    """Phase, where reads and writes go, snapshot tasks, the lag of both directions (CDC
    source and consumer), DLQ, verification."""
    settings, domain = cli_context(ctx).settings, cli_context(ctx).domain
    if as_json:
        typer.echo(json.dumps(collect(settings, domain).as_dict(), indent=2, default=str))
        return
    console = Console(width=160)
    if not watch:
        console.print(render(collect(settings, domain)))
        return
    # Not a terminal (a pipe, a log): print every frame whole, not cropped to a screen.
    overflow: Literal["ellipsis", "visible"] = "ellipsis" if console.is_terminal else "visible"
    with Live(
        render(collect(settings, domain)),
        console=console,
        refresh_per_second=4,
        vertical_overflow=overflow,
    ) as live:
        try:
            refreshes = 0
            while not iterations or refreshes < iterations:
                time.sleep(interval)
                live.update(render(collect(settings, domain)))
                refreshes += 1
        except KeyboardInterrupt:
            return
