"""The `bluegreen` command line: one Typer app, one sub-app per area."""

from __future__ import annotations

import sys

import psycopg
from confluent_kafka import KafkaException

from bluegreen.app.cli.app import app
from bluegreen.app.cli.context import debug_enabled
from bluegreen.core.errors import BluegreenError
from bluegreen.core.retry import one_line

__all__ = ["app", "main"]

# Errors a command may meet talking to its dependencies: one line, not a traceback.
_ONE_LINE = (BluegreenError, psycopg.Error, KafkaException, OSError)


def main() -> None:
    try:
        app()
    except _ONE_LINE as exc:
        if debug_enabled():
            raise
        cause = "" if isinstance(exc, BluegreenError) else f"{type(exc).__name__}: "
        print(
            f"bluegreen {_command()}: error: {cause}{one_line(exc)} (--debug shows the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)


def _command() -> str:
    words = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    return words[0] if words else ""
