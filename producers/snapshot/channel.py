"""What a worker process tells the `bluegreen snapshot` process that spawned it.

A one-way pipe per worker carries two kinds of message: a dependency went down or came
back (the parent serves ``bluegreen_dependency_up`` on its /metrics, a worker has no
endpoint of its own), and the one line of an error that made the worker give up (the
parent prints it). Sends never block the worker for long and never fail it: a parent
that is gone simply stops listening.
"""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any

DEPENDENCY = "dependency"
GAVE_UP = "gave_up"


class ParentChannel:
    """The worker's end. ``labels(dep).set(v)`` makes it usable as a Reconnector's gauge."""

    def __init__(self, conn: Connection | None) -> None:
        self._conn = conn
        self._states: dict[str, int] = {}

    def labels(self, dependency: str) -> _DependencyState:
        return _DependencyState(self, dependency)

    def dependency(self, name: str, up: int) -> None:
        if self._states.get(name) != up:  # only changes cross the pipe
            self._states[name] = up
            self.send(DEPENDENCY, name, up)

    def gave_up(self, message: str) -> None:
        self.send(GAVE_UP, message)

    def send(self, *message: Any) -> None:
        if self._conn is None:
            return
        try:
            self._conn.send(message)
        except OSError:  # the parent is gone
            self._conn = None


class _DependencyState:
    def __init__(self, channel: ParentChannel, dependency: str) -> None:
        self._channel = channel
        self._dependency = dependency

    def set(self, value: float) -> None:
        self._channel.dependency(self._dependency, int(value))


class DependencyBoard:
    """The parent's end: one gauge per dependency, 0 while any process reports it down."""

    def __init__(self, gauge: Any) -> None:
        self._gauge = gauge
        self._up: dict[tuple[str, str], int] = {}

    def source(self, name: str) -> _Source:
        return _Source(self, name)

    def report(self, source: str, dependency: str, up: int) -> None:
        self._up[(source, dependency)] = up
        self._publish(dependency)

    def forget(self, source: str) -> None:
        """A process exited: its view of the dependencies no longer counts."""
        for key in [k for k in self._up if k[0] == source]:
            del self._up[key]
            self._publish(key[1])

    def _publish(self, dependency: str) -> None:
        states = [v for (_s, d), v in self._up.items() if d == dependency]
        if states:  # nobody left watching it: the last value stands
            self._gauge.labels(dependency).set(min(states))


class _Source:
    """One process's view, shaped like a gauge (``labels(dep).set(v)``) for a Reconnector."""

    def __init__(self, board: DependencyBoard, name: str) -> None:
        self._board = board
        self._name = name

    def labels(self, dependency: str) -> _SourceState:
        return _SourceState(self._board, self._name, dependency)


class _SourceState:
    def __init__(self, board: DependencyBoard, source: str, dependency: str) -> None:
        self._board = board
        self._source = source
        self._dependency = dependency

    def set(self, value: float) -> None:
        self._board.report(self._source, self._dependency, int(value))
