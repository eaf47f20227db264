"""One snapshot worker: claim a task, read its rows at the worker's snapshot, produce
them, and mark the task COMPLETED only once the broker acknowledged every message.

``run()`` loops ``run_once()``; a stop request (SIGTERM, or the parent process gone)
stops claiming, drains the messages in flight for a bounded time, completes what was
acknowledged and gives back what was not.

Riding through its dependencies' restarts: the loop asks each dependency (control,
blue, Kafka) whether it is up before using it; one that went away is probed with
capped exponential backoff, one log line per attempt, for
``snapshot.reconnect_timeout_s``, and only then does the worker stop with a one-line
``DependencyError``. Meanwhile it keeps serving delivery reports and heartbeats, so
the tasks in flight are neither lost nor reclaimed:

- Kafka down: messages wait in the producer's queue (its delivery timeout is longer
  than the reconnect timeout), their tasks stay claimed and complete once the broker
  acknowledged them; no new task is claimed until the broker answers again.
- blue down: the task being read is given back to the queue (the attempt does not
  count, see ``TaskQueue.interrupt``); messages already sent under it are duplicates
  that the version guard makes harmless.
- control down: what the broker settled waits in memory until it can be recorded;
  a task is COMPLETED only by a write that says so, never assumed.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from typing import Any

import psycopg
from confluent_kafka import KafkaException, Producer

from bluegreen.control import Task, TaskQueue
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from bluegreen.core.logs import get_logger
from bluegreen.core.retry import Reconnector, one_line
from producers.blue_setup import slot_exists
from producers.snapshot.deps import (
    Dependency,
    kafka_transient,
    permanent,
    pg_transient,
)
from producers.snapshot.heartbeat import CONNECT_TIMEOUT_S, Heartbeat
from producers.snapshot.outcomes import InFlight, Outcome, Outcomes
from producers.snapshot.publish import TaskPublisher
from producers.snapshot.worker_kafka import WorkerKafka
from producers.writer import KafkaWriter, Token
from schemas.codec import Codec, codec_for
from schemas.fastpath import EnvelopeEncoder
from schemas.source import SourceSpec

_IDLE_SLEEP_S = 0.2
_DRAIN_TIMEOUT_S = 30.0


def worker_id_for(prefix: str, pid: int) -> str:
    """host:pid:prefix, unique per live process; the parent derives it from Process.pid."""
    return f"{socket.gethostname()}:{pid}:{prefix}"


class SnapshotWorker:
    def __init__(
        self,
        settings: Settings,
        source: SourceSpec,
        *,
        worker_id: str | None = None,
        name: str | None = None,
        producer: Producer | None = None,
        codec: Codec | None = None,
        gauge: Any = None,
        parent_pid: int | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.worker_id = worker_id or worker_id_for("w", os.getpid())
        self.name = name or f"snapshot worker {self.worker_id}"
        self.log = get_logger(service="snapshot", worker=self.worker_id)
        timeout = settings.snapshot.reconnect_timeout_s

        def reconnector(dependency: str, target: str) -> Reconnector:
            return Reconnector(self.name, dependency, target, timeout, gauge=gauge)

        self._kafka_side = WorkerKafka(settings, producer)
        self._control_dep = Dependency(
            reconnector("control", db.describe(settings.control_dsn)),
            self._connect_control,
            pg_transient,
        )
        self._blue = Dependency(
            reconnector("blue", db.describe(settings.blue_dsn)),
            functools.partial(_check_slot, settings),
            pg_transient,
        )
        self._kafka = Dependency(
            reconnector("kafka", settings.kafka.bootstrap_servers),
            self._kafka_side.connect,
            kafka_transient,
        )
        self._control: psycopg.Connection | None = None
        self._queue: TaskQueue | None = None
        codec = codec or codec_for(source.avro)
        self._publisher = TaskPublisher(
            settings, source, codec, EnvelopeEncoder(codec, source.columns), self.log
        )
        self._outcomes = Outcomes(self.log)
        self._heartbeat = Heartbeat(
            settings, self.worker_id, parent_pid=parent_pid, on_orphaned=self.request_stop
        )
        self._stop = threading.Event()

    @property
    def completed(self) -> int:
        """Tasks this worker recorded COMPLETED."""
        return self._outcomes.completed

    @property
    def failed(self) -> int:
        """Attempts this worker recorded failed."""
        return self._outcomes.failed

    # -- service loop -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Signal-safe: only sets a flag; the loop stops at its next step."""
        self._stop.set()

    def run(self) -> None:
        self._heartbeat.start()
        try:
            # The CDC slot first: without it nothing may be read, whatever else is up.
            while not self._stop.is_set() and not self._blue.ready():
                self._idle()
            while not self._stop.is_set():
                if self._heartbeat.failure is not None:
                    raise BluegreenError(
                        f"{self.name}: heartbeats failed: {one_line(self._heartbeat.failure)}"
                    ) from self._heartbeat.failure
                if not self.run_once() and self._nothing_left():
                    break
        finally:
            self._shutdown()

    def run_once(self) -> bool:
        """One step; True when it did work or waits for a dependency, False when idle."""
        if self._kafka_side.writer is not None:
            self._collect(self._kafka_side.writer.finished())
        self._kafka_side.heed_hint(self._kafka)
        if not self._control_dep.ready():
            self._idle()
            return True
        recorded = self._record_outcomes()
        if not self._control_dep.up:
            return True
        if not (self._blue.ready() and self._kafka.ready()):
            self._idle()
            return True
        writer = self._writer_or_fail()
        if len(self._outcomes.in_flight) >= self.settings.snapshot.max_inflight_tasks:
            writer.poll(0.1)
            return recorded > 0
        task = self._claim()
        if task is None:
            writer.poll(0.05 if self._outcomes.in_flight else _IDLE_SLEEP_S)
            return recorded > 0
        self._heartbeat.hold(task.id)
        self._run_task(task)
        return True

    def _idle(self) -> None:
        """Wait a little while a dependency is down, still serving delivery reports."""
        pause = min(_IDLE_SLEEP_S, max(0.01, self._soonest_retry()))
        if self._kafka_side.writer is not None:
            self._kafka_side.writer.poll(pause)
        else:
            self._stop.wait(pause)

    def _soonest_retry(self) -> float:
        waits = [d.seconds_to_retry() for d in (self._control_dep, self._blue, self._kafka)]
        return min(w for w in waits if w > 0) if any(waits) else 0.0

    def _nothing_left(self) -> bool:
        if self._outcomes.in_flight or self._outcomes.waiting or not self._control_dep.up:
            return False
        try:
            return self._queue_or_fail().open_count() == 0
        except psycopg.Error as exc:
            self._control_lost(exc)
            return False

    # -- dependencies -------------------------------------------------------------------------

    def _connect_control(self) -> None:
        if self._control is not None:
            self._control.close()
        self._control = db.connect(
            self.settings.control_dsn,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=f"bluegreen-snapshot {self.worker_id}"[:63],
        )
        self._queue = TaskQueue(self._control, self.worker_id, self.settings.snapshot)
        released = self._queue.release_unknown(self._heartbeat.held())
        if released:
            self.log.info("gave back tasks claimed as the connection was lost", task_ids=released)

    def _control_lost(self, exc: psycopg.Error) -> None:
        if not pg_transient(exc):
            raise permanent(self._control_dep.reconnector, exc) from exc
        self._control_dep.lost(exc)

    def _queue_or_fail(self) -> TaskQueue:
        if self._queue is None:
            raise BluegreenError(f"{self.name}: not connected to the control database")
        return self._queue

    def _writer_or_fail(self) -> KafkaWriter:
        if self._kafka_side.writer is None:
            raise BluegreenError(f"{self.name}: not connected to Kafka")
        return self._kafka_side.writer

    # -- one task -----------------------------------------------------------------------------

    def _claim(self) -> Task | None:
        try:
            return self._queue_or_fail().claim()
        except psycopg.Error as exc:
            self._control_lost(exc)
            return None

    def _run_task(self, task: Task) -> None:
        writer = self._writer_or_fail()
        token = writer.token(task.id)
        try:
            rows, snapshot_lsn = self._publisher.publish(task, writer, token)
        except psycopg.Error as exc:
            self._publisher.drop_snapshot()
            writer.seal(token)
            if not pg_transient(exc):
                self._outcomes.add(Outcome("fail", task, detail=_describe(exc)))
                return
            self._outcomes.add(Outcome("interrupt", task, detail=f"blue: {one_line(exc)}"))
            self._blue.lost(exc)
            return
        except (BluegreenError, KafkaException, OSError, KeyError, ValueError) as exc:
            self._publisher.drop_snapshot()
            writer.seal(token)
            self._outcomes.add(Outcome("fail", task, detail=_describe(exc)))
            return
        self._outcomes.in_flight[token] = InFlight(task, rows, snapshot_lsn)
        writer.seal(token)
        self.log.debug("task produced", task_id=task.id, rows=rows)

    # -- settling ---------------------------------------------------------------------------

    def _collect(self, tokens: list[Token]) -> None:
        self._outcomes.collect(tokens, self._kafka.lost)

    def _record_outcomes(self) -> int:
        """Write the outcomes waiting, oldest first; stop at a lost control connection."""
        recorded = 0
        waiting = self._outcomes.waiting
        while waiting:
            outcome = waiting[0]
            try:
                self._outcomes.record(self._queue_or_fail(), outcome)
            except psycopg.Error as exc:
                self._control_lost(exc)
                break
            waiting.popleft()
            self._heartbeat.drop(outcome.task.id)
            recorded += 1
        return recorded

    def _shutdown(self) -> None:
        """Drain in-flight messages (bounded), record what settled, give back the rest."""
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        try:
            self._drain(deadline)
        except BluegreenError as exc:  # a dependency stayed away: leave the rest to reclaim
            self.log.warning(
                "stopping with tasks not recorded; they are reclaimed",
                task_ids=[o.task.id for o in self._outcomes.waiting],
                error=str(exc),
            )
        finally:
            self._heartbeat.stop()
            self._publisher.drop_snapshot()
            if self._kafka_side.writer is not None:
                self._kafka_side.writer.flush(5 if self._kafka.up else 0)
            if self._heartbeat.is_alive():
                self._heartbeat.join(CONNECT_TIMEOUT_S)
            if self._control is not None:
                self._control.close()

    def _drain(self, deadline: float) -> None:
        writer = self._kafka_side.writer
        while writer is not None and self._outcomes.in_flight and self._kafka.up:
            if time.monotonic() >= deadline:
                break
            writer.poll(0.1)
            self._collect(writer.finished())
        self._outcomes.release_in_flight()
        while self._outcomes.waiting and time.monotonic() < deadline:
            if self._control_dep.ready():
                self._record_outcomes()
            else:
                time.sleep(min(_IDLE_SLEEP_S, max(0.01, self._control_dep.seconds_to_retry())))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _check_slot(settings: Settings) -> None:
    """The blue dependency's probe: blue answers and the CDC slot exists."""
    if not slot_exists(settings.blue_dsn, settings.cdc.slot):
        raise BluegreenError(
            f"blue has no replication slot {settings.cdc.slot}: the snapshot must "
            "start after the CDC slot exists, or changes between the two would be lost. "
            "Run `bluegreen snapshot` (it creates the slot) or `bluegreen cdc` first."
        )
