"""`bluegreen schemas check|ddl`: the contracts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consumers import positions
from schemas.catalog.ddl import ddl_script
from schemas.codec import load_version_dir, load_versions
from schemas.compat import check_evolution

app = typer.Typer(help="Check schema evolution; print the DDL of blue and green.")


@app.command()
def check(
    candidate: Annotated[
        Path | None,
        typer.Argument(
            help="A folder with a new version's .avsc files to check before adding it "
            "(default: check the newest kept version against the older ones).",
        ),
    ] = None,
) -> None:
    """Refuse a schema change that breaks readers of older data or older readers of new data."""
    versions = load_versions()
    if candidate is not None:
        new = load_version_dir(candidate)
        versions = [v for v in versions if v.version < new.version] + [new]
    newest = versions[-1]
    problems = check_evolution(versions)
    if problems:
        typer.echo(f"schema v{newest.version} is NOT compatible:", err=True)
        for problem in problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1)
    older = ", ".join(f"v{v.version}" for v in versions[:-1]) or "none"
    typer.echo(
        f"schema v{newest.version} (fingerprint {newest.fingerprint.hex()}) is backward and "
        f"forward compatible with: {older}"
    )


@app.command()
def ddl(color: Annotated[str, typer.Argument(help="blue or green")]) -> None:
    """Print the CREATE statements of blue's or green's tables."""
    if color not in ("blue", "green"):
        raise typer.BadParameter("blue or green", param_hint="COLOR")
    typer.echo(ddl_script(color))
    if color == "green":  # the engine's own table, beside the domain's
        typer.echo(positions.DDL.strip())
