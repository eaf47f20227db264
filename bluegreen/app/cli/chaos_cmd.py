"""`bluegreen chaos`: randomized fault injection on the local stack, with a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from bluegreen.app.cli.context import cli_context

if TYPE_CHECKING:
    from bluegreen.app.chaos.run import ChaosReport


def chaos(
    ctx: typer.Context,
    runs: Annotated[int, typer.Option(min=1, help="How many runs (seeds S, S+1, ...).")] = 20,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the first run.")] = 1,
    products: Annotated[
        int, typer.Option(min=300, help="Blue rows to seed per run (as `bluegreen seed`).")
    ] = 60_000,
    write_seconds: Annotated[
        float,
        typer.Option(
            min=5,
            help="How long the write load runs (at least until the "
            "snapshot's end plus --min-cdc-window).",
        ),
    ] = 45.0,
    keep_going: Annotated[
        bool, typer.Option("--keep-going", help="Run every run even after one failed.")
    ] = False,
    report_path: Annotated[
        Path | None, typer.Option("--report", help="Write the report as JSON here.")
    ] = None,
    faults: Annotated[
        str,
        typer.Option(
            help="Fault kinds to inject: all, none, or a list of snapshot-worker, snapshot, "
            "cdc, consumer, kafka, green, blue."
        ),
    ] = "all",
    load: Annotated[
        str, typer.Option(help="adversarial, or benign (control runs: the demo's kind of load).")
    ] = "adversarial",
    converge_timeout: Annotated[
        float, typer.Option(min=1, help="Seconds after the writes stop for green to converge.")
    ] = 60.0,
    min_cdc_window: Annotated[
        float, typer.Option(min=1, help="Seconds of writes (and CDC faults) after the snapshot.")
    ] = 10.0,
    evidence: Annotated[
        Path | None,
        typer.Option(help="Folder for failing runs' evidence (default: <state dir>/chaos)."),
    ] = None,
) -> None:
    """Kill -9 random components (snapshot worker and parent, cdc, a consumer, the broker,
    green's and blue's postmaster) under an adversarial write load, restart them, stop
    writing, and check that green converges to transform(blue) row by row.

    Each run uses its own databases, topic and consumer group on the local stack
    (`bluegreen stack up`), and is reproducible from its seed as far as timing allows.
    Exit 1 when a run did not converge exactly; its evidence stays in the evidence folder.
    """
    # Imported here: every service start loads the CLI, and none of them needs the harness.
    from bluegreen.app.chaos.run import ChaosOptions, run_many  # noqa: PLC0415
    from bluegreen.app.chaos.schedule import parse_kinds  # noqa: PLC0415

    settings = cli_context(ctx).settings
    if load not in {"adversarial", "benign"}:
        raise typer.BadParameter("adversarial or benign", param_hint="--load")
    try:
        kinds = parse_kinds(faults)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--faults") from exc
    options = ChaosOptions(
        products=products,
        write_seconds=write_seconds,
        kinds=kinds,
        profile=load,
        converge_timeout_s=converge_timeout,
        min_cdc_window_s=min_cdc_window,
        evidence_dir=(evidence or settings.stack.state_dir / "chaos").resolve(),
    )
    report = run_many(
        settings, runs=runs, seed=seed, options=options, keep_going=keep_going, echo=typer.echo
    )
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n")
    print_report(report, Console(width=160))
    if report.failed or len(report.runs) < runs:
        raise typer.Exit(1)


def print_report(report: ChaosReport, console: Console) -> None:
    from bluegreen.app.chaos.load import REQUIRED_OPS  # noqa: PLC0415 - see chaos()

    table = Table(title=f"bluegreen chaos: {report.products:,} blue rows per run")
    for column in (
        "seed",
        "faults (in order)",
        "snap s",
        "conv s",
        "diffs",
        "verify",
        "drained",
        "unexpected exits",
        "result",
    ):
        table.add_column(column)
    for run in report.runs:
        faults = (
            "\n".join(
                f"{f['kind']}@{f['phase']} {f['fired_at_s']:.0f}s"
                + (" (skipped)" if f["skipped"] else "")
                for f in run.faults
            )
            or "none"
        )
        exits = "\n".join(
            f"{e['service']}@{e['phase']} {e['at_s']:.0f}s" for e in run.unexpected_exits
        )
        table.add_row(
            str(run.seed),
            faults,
            "-" if run.snapshot_seconds is None else f"{run.snapshot_seconds:.0f}",
            "-" if run.converge_seconds is None else f"{run.converge_seconds:.1f}",
            str(run.differences),
            str(run.verify_differences),
            "yes" if run.offsets_drained else "NO",
            exits or "0",
            "ok" if run.ok else "FAILED",
        )
    console.print(table)
    ops = Table(title="operations on blue (committed), per run")
    ops.add_column("operation")
    for run in report.runs:
        ops.add_column(str(run.seed), justify="right")
    names = sorted({op for run in report.runs for op in run.ops} | set(REQUIRED_OPS))
    for name in names:
        ops.add_row(name, *(f"{run.ops.get(name, 0):,}" for run in report.runs))
    console.print(ops)
    kinds = report.faults_by_kind()
    console.print("faults injected by kind: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    for run in report.failed:
        console.print(f"seed {run.seed} FAILED: {'; '.join(run.failures)}")
        if run.evidence:
            console.print(f"  evidence: {run.evidence}")
    console.print(
        f"{len(report.runs) - len(report.failed)} of {len(report.runs)} runs converged "
        f"in {report.seconds:.0f}s"
    )
