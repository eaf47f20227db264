"""The `bluegreen` command line: one Typer app, one sub-app per area."""

from __future__ import annotations

import sys

from bluegreen.cli.app import app
from bluegreen.errors import BluegreenError

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except BluegreenError as exc:
        print(f"bluegreen: error: {exc}", file=sys.stderr)
        sys.exit(1)
