"""Progress for long work: a rich bar in a terminal, periodic log lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bluegreen.core.logs import get_logger


class Reporter(Protocol):
    def advance(self, n: int) -> None: ...

    def note(self, text: str) -> None: ...


class _Silent:
    """For work nobody watches (benchmarks, tests): every update is dropped."""

    def advance(self, n: int) -> None:
        pass

    def note(self, text: str) -> None:
        pass


SILENT: Reporter = _Silent()


class _Bar:
    def __init__(self, bar: Progress, total: int | None, unit: str, description: str) -> None:
        self._bar = bar
        self._unit = unit
        self._task = bar.add_task(description, total=total, rate="", note="")
        self._started = time.monotonic()
        self._done = 0

    def advance(self, n: int) -> None:
        self._done += n
        rate = self._done / max(time.monotonic() - self._started, 1e-9)
        self._bar.update(self._task, advance=n, rate=f"{rate:,.0f} {self._unit}/s")

    def note(self, text: str) -> None:
        self._bar.update(self._task, note=text)


class _Lines:
    def __init__(self, description: str, total: int | None, unit: str, interval_s: float):
        self._log = get_logger(task=description)
        self._total = total
        self._unit = unit
        self._interval = interval_s
        self._started = self._last = time.monotonic()
        self._done = 0
        self._note = ""

    def advance(self, n: int) -> None:
        self._done += n
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._emit("progress", now)

    def note(self, text: str) -> None:
        self._note = text

    def _emit(self, event: str, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        fields: dict[str, object] = {
            "done": self._done,
            "total": self._total,
            "seconds": round(elapsed, 1),
        }
        fields[f"{self._unit}_per_s"] = round(self._done / elapsed)
        if self._note:
            fields["status"] = self._note
        self._log.info(event, **fields)

    def finish(self) -> None:
        self._emit("finished", time.monotonic())


@contextmanager
def progress(
    description: str, total: int | None, unit: str = "rows", interval_s: float = 5.0
) -> Iterator[Reporter]:
    """A bar with rate, ETA and a status note on a TTY; a log line per interval otherwise."""
    if sys.stderr.isatty():
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
        )
        with Progress(*columns, transient=False) as bar:
            yield _Bar(bar, total, unit, description)
        return
    lines = _Lines(description, total, unit, interval_s)
    yield lines
    lines.finish()
