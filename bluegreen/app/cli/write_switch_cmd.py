"""`bluegreen cutover --writes` and `bluegreen rollback --writes`: what they print."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from bluegreen.core.config import Settings
from cutover import switch, write_recover, write_rollback, write_switch
from schemas.domain import Domain


def _print(report: write_switch.WriteSwitchReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, default=str))
        return
    console = Console(width=160)
    if report.gates:
        table = Table(title="write cutover gates")
        for column in ("gate", "result", "figure"):
            table.add_column(column, overflow="fold")
        for gate in report.gates:
            table.add_row(gate.name, "[green]pass[/]" if gate.ok else "[red]FAIL[/]", gate.figure)
        console.print(table)
    if not report.steps_ms:
        console.print(f"dry run: nothing switched, writes stay on {report.owner}")
        return
    steps = ", ".join(f"{name} {ms:.0f} ms" for name, ms in report.steps_ms.items())
    console.print(
        f"writes now owned by [bold]{report.owner}[/], write epoch {report.write_epoch}; "
        f"writes paused {report.pause_ms:.0f} ms ({steps})"
    )
    if report.refreshed_keys is not None:
        console.print(f"green refreshed: {report.refreshed_keys} keys written on green")


def cutover_writes(
    settings: Settings,
    domain: Domain,
    *,
    budget: str,
    timeout: float,
    reason: str | None,
    as_json: bool,
    recover: bool = False,
    dry_run: bool = False,
) -> None:
    if recover:
        state = write_recover.recover(settings, domain, reason=reason)
        typer.echo(f"writes resumed, owned by {state.route.color}, write epoch {state.route.epoch}")
        return
    budget_s = write_switch.parse_budget(budget)
    try:
        report = write_switch.preflight(settings, domain, timeout)
        if dry_run:
            _print(report, as_json)
            return
        write_switch.switch_to_green(settings, domain, report, budget_s=budget_s, reason=reason)
    except switch.CutoverRefusedError as exc:
        typer.echo(f"bluegreen: {exc}", err=True)
        raise typer.Exit(2) from exc
    except write_switch.WriteSwitchAbortedError as exc:
        typer.echo(f"bluegreen: {exc}", err=True)
        if as_json:
            typer.echo(json.dumps(exc.report.as_dict(), indent=2, default=str))
        raise typer.Exit(3) from exc
    _print(report, as_json)


def rollback_writes(
    settings: Settings,
    domain: Domain,
    *,
    budget: str,
    reason: str | None,
    refresh_only: bool,
    as_json: bool,
) -> None:
    if refresh_only:
        keys = write_rollback.refresh_green(settings, domain)
        typer.echo(f"green refreshed: {keys} keys written on green")
        return
    try:
        report = write_rollback.rollback_writes(
            settings, domain, budget_s=write_switch.parse_budget(budget), reason=reason
        )
    except write_switch.WriteSwitchAbortedError as exc:
        typer.echo(f"bluegreen: {exc}", err=True)
        raise typer.Exit(3) from exc
    _print(report, as_json)
