"""Progress for long work: a rich bar in a terminal, periodic log lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bluegreen.logs import get_logger

Advance = Callable[[int], None]


@contextmanager
def progress(
    description: str, total: int | None, unit: str = "rows", interval_s: float = 5.0
) -> Iterator[Advance]:
    """Yield advance(n). A bar with rate and ETA on a TTY; a log line per interval otherwise."""
    if sys.stderr.isatty():
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task(description, total=total, rate="")
            started = time.monotonic()
            done = 0

            def advance(n: int) -> None:
                nonlocal done
                done += n
                rate = done / max(time.monotonic() - started, 1e-9)
                bar.update(task, advance=n, rate=f"{rate:,.0f} {unit}/s")

            yield advance
        return
    log = get_logger(task=description)
    started = last = time.monotonic()
    done = 0

    def advance_plain(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= interval_s:
            last = now
            log.info("progress", done=done, total=total, rate=round(done / (now - started)))

    yield advance_plain
    elapsed = time.monotonic() - started
    log.info(
        "finished", done=done, seconds=round(elapsed, 2), rate=round(done / max(elapsed, 1e-9))
    )
