"""What became of a worker's tasks: in flight until the broker settled their messages,
then an outcome waiting to be written to the control database.

Nothing is written when a token settles (``collect``): outcomes wait in order, so
with the control database away the worker keeps serving delivery reports, and a
task is COMPLETED only by a write that says so (``record``), never assumed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from structlog.stdlib import BoundLogger

from bluegreen.control import State, Task, TaskQueue
from producers.snapshot.deps import UNAVAILABLE_KAFKA
from producers.writer import Token


@dataclass
class InFlight:
    task: Task
    rows: int
    snapshot_lsn: int


@dataclass
class Outcome:
    """How an attempt ended, waiting to be written to the control database."""

    kind: str  # complete | fail | interrupt | release
    task: Task
    rows: int = 0
    snapshot_lsn: int = 0
    detail: str = ""
    produce_errors: int = 0


class Outcomes:
    def __init__(self, log: BoundLogger) -> None:
        self._log = log
        self.in_flight: dict[Token, InFlight] = {}
        self.waiting: deque[Outcome] = deque()
        self.completed = 0
        self.failed = 0

    def add(self, outcome: Outcome) -> None:
        self.waiting.append(outcome)

    def collect(self, tokens: list[Token], kafka_lost: Callable[[BaseException], None]) -> None:
        """Turn finished tokens into outcomes; nothing is written here."""
        for token in tokens:
            flight = self.in_flight.pop(token, None)
            if flight is None:
                continue  # a token of a task that already failed while reading
            if token.ok:
                self.waiting.append(
                    Outcome("complete", flight.task, flight.rows, flight.snapshot_lsn)
                )
                continue
            error = "; ".join(token.errors)
            if token.errors and all(e.split(":")[0] in UNAVAILABLE_KAFKA for e in token.errors):
                # The broker stayed away past the delivery timeout: not the task's fault.
                self.waiting.append(Outcome("interrupt", flight.task, detail=f"kafka: {error}"))
                kafka_lost(KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, error)))
            else:
                self.waiting.append(
                    Outcome("fail", flight.task, detail=error, produce_errors=token.failed)
                )

    def release_in_flight(self) -> None:
        """Stopping: every task still in flight is given back, unsettled."""
        for flight in self.in_flight.values():
            self.waiting.append(Outcome("release", flight.task))
        self.in_flight.clear()

    def record(self, queue: TaskQueue, outcome: Outcome) -> None:
        """Write one outcome (psycopg errors propagate; the outcome stays waiting)."""
        task = outcome.task
        if outcome.kind == "complete":
            if queue.complete(task, outcome.rows, outcome.snapshot_lsn):
                self.completed += 1
            else:
                self._log.warning("task was taken over before it completed", task_id=task.id)
        elif outcome.kind == "fail":
            state = queue.fail(task, outcome.detail, outcome.produce_errors)
            self.failed += 1
            log = self._log.error if state is State.DEAD else self._log.warning
            log(
                "task failed",
                task_id=task.id,
                attempt=task.attempts,
                state=state.value,
                error=outcome.detail,
            )
        elif outcome.kind == "interrupt":
            state = queue.interrupt(task, outcome.detail)
            self._log.warning(
                "task interrupted; back to the queue",
                task_id=task.id,
                state=state.value,
                cause=outcome.detail,
            )
        else:
            queue.release(task)
