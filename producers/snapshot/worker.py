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

import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from confluent_kafka import KafkaError, KafkaException, Producer

from bluegreen.control.tasks import State, Task, TaskQueue
from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from bluegreen.core.kafka import producer_for_topic
from bluegreen.core.logs import get_logger
from bluegreen.core.retry import Reconnector, one_line
from producers.blue_setup import slot_exists
from producers.snapshot.deps import (
    UNAVAILABLE_KAFKA,
    Dependency,
    kafka_transient,
    permanent,
    pg_transient,
    probe_kafka,
)
from producers.snapshot.heartbeat import CONNECT_TIMEOUT_S, Heartbeat
from producers.snapshot.reader import BlueSnapshot
from producers.writer import KafkaWriter, Token
from schemas.codec import Codec, codec_for
from schemas.envelope import SourceTable, absent_event, now_ms
from schemas.fastpath import EnvelopeEncoder
from schemas.source import SourceSpec

_IDLE_SLEEP_S = 0.2
_BATCH = 1_000  # messages per produce_batch call
_DRAIN_TIMEOUT_S = 30.0
# librdkafka retries a message this much longer than the worker waits for the broker,
# so an outage ends in the worker's one-line error, not in a delivery failure first.
_DELIVERY_MARGIN_S = 30.0
# Client errors that hint the broker went away: probe it before claiming more.
_KAFKA_HINTS = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN})


def worker_id_for(prefix: str, pid: int) -> str:
    """host:pid:prefix, unique per live process; the parent derives it from Process.pid."""
    return f"{socket.gethostname()}:{pid}:{prefix}"


@dataclass
class _InFlight:
    task: Task
    rows: int
    snapshot_lsn: int


@dataclass
class _Outcome:
    """How an attempt ended, waiting to be written to the control database."""

    kind: str  # complete | fail | interrupt | release
    task: Task
    rows: int = 0
    snapshot_lsn: int = 0
    detail: str = ""
    produce_errors: int = 0


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

        self._control_dep = Dependency(
            reconnector("control", db.describe(settings.control_dsn)),
            self._connect_control,
            pg_transient,
        )
        self._blue = Dependency(
            reconnector("blue", db.describe(settings.blue_dsn)), self._check_blue, pg_transient
        )
        self._kafka = Dependency(
            reconnector("kafka", settings.kafka.bootstrap_servers),
            self._connect_kafka,
            kafka_transient,
        )
        self._control: psycopg.Connection | None = None
        self._queue: TaskQueue | None = None
        self._producer = producer
        self._writer: KafkaWriter | None = None
        self._kafka_hint: KafkaError | None = None
        self._codec = codec or codec_for(source.avro)
        self._encoder = EnvelopeEncoder(self._codec, source.columns)
        self._snapshot: BlueSnapshot | None = None
        self._in_flight: dict[Token, _InFlight] = {}
        self._outcomes: deque[_Outcome] = deque()
        self._heartbeat = Heartbeat(
            settings, self.worker_id, parent_pid=parent_pid, on_orphaned=self.request_stop
        )
        self._stop = threading.Event()
        self.completed = 0
        self.failed = 0

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
        if self._writer is not None:
            self._collect(self._writer.finished())
        self._heed_kafka_hint()
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
        if len(self._in_flight) >= self.settings.snapshot.max_inflight_tasks:
            writer.poll(0.1)
            return recorded > 0
        task = self._claim()
        if task is None:
            writer.poll(0.05 if self._in_flight else _IDLE_SLEEP_S)
            return recorded > 0
        self._heartbeat.hold(task.id)
        self._run_task(task)
        return True

    def _idle(self) -> None:
        """Wait a little while a dependency is down, still serving delivery reports."""
        pause = min(_IDLE_SLEEP_S, max(0.01, self._soonest_retry()))
        if self._writer is not None:
            self._writer.poll(pause)
        else:
            self._stop.wait(pause)

    def _soonest_retry(self) -> float:
        waits = [d.seconds_to_retry() for d in (self._control_dep, self._blue, self._kafka)]
        return min(w for w in waits if w > 0) if any(waits) else 0.0

    def _nothing_left(self) -> bool:
        if self._in_flight or self._outcomes or not self._control_dep.up:
            return False
        try:
            row = (
                self._queue_or_fail()
                .conn.execute(
                    "SELECT count(*) FROM bluegreen.snapshot_task "
                    "WHERE state IN ('READY', 'IN_PROGRESS', 'ERROR')"
                )
                .fetchone()
            )
        except psycopg.Error as exc:
            self._control_lost(exc)
            return False
        return row is not None and row[0] == 0

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

    def _check_blue(self) -> None:
        if not slot_exists(self.settings.blue_dsn, self.settings.cdc.slot):
            raise BluegreenError(
                f"blue has no replication slot {self.settings.cdc.slot}: the snapshot must "
                "start after the CDC slot exists, or changes between the two would be lost. "
                "Run `bluegreen snapshot` (it creates the slot) or `bluegreen cdc` first."
            )

    def _connect_kafka(self) -> None:
        probe_kafka(self.settings.kafka)
        if self._writer is None:
            self._writer = KafkaWriter(
                self._producer or self._make_producer(), self.settings.kafka.topic, name="snapshot"
            )

    def _make_producer(self) -> Producer:
        timeout_s = self.settings.snapshot.reconnect_timeout_s + _DELIVERY_MARGIN_S
        overrides = {
            "message.timeout.ms": int(timeout_s * 1000),
            "error_cb": self._on_kafka_error,
            # librdkafka's own line per failed connection would drown the Reconnector's
            # one line per attempt; its errors still reach error_cb and delivery reports.
            "log_level": 2,
        }
        return producer_for_topic(
            self.settings.kafka, self.settings.kafka.topic, **cast(dict[str, Any], overrides)
        )

    def _on_kafka_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (inside poll): remember it for the loop."""
        if error.fatal() or (error.code() in _KAFKA_HINTS and self._kafka_hint is None):
            self._kafka_hint = error

    def _heed_kafka_hint(self) -> None:
        hint, self._kafka_hint = self._kafka_hint, None
        if hint is None:
            return
        if hint.fatal():  # the idempotent producer cannot go on; a new process can
            raise KafkaException(hint)
        self._kafka.suspect()

    def _queue_or_fail(self) -> TaskQueue:
        if self._queue is None:
            raise BluegreenError(f"{self.name}: not connected to the control database")
        return self._queue

    def _writer_or_fail(self) -> KafkaWriter:
        if self._writer is None:
            raise BluegreenError(f"{self.name}: not connected to Kafka")
        return self._writer

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
            snapshot = self._current_snapshot()
            table = self.source.source_table(snapshot.database)
            self._encoder.start_batch(table, snapshot.version, now_ms())
            rows = self._produce_rows(task, snapshot, token, table)
        except psycopg.Error as exc:
            self._drop_snapshot()
            writer.seal(token)
            if not pg_transient(exc):
                self._outcomes.append(_Outcome("fail", task, detail=_describe(exc)))
                return
            self._outcomes.append(_Outcome("interrupt", task, detail=f"blue: {one_line(exc)}"))
            self._blue.lost(exc)
            return
        except (BluegreenError, KafkaException, OSError, KeyError, ValueError) as exc:
            self._drop_snapshot()
            writer.seal(token)
            self._outcomes.append(_Outcome("fail", task, detail=_describe(exc)))
            return
        self._in_flight[token] = _InFlight(task, rows, snapshot.version.lsn)
        writer.seal(token)
        self.log.debug("task produced", task_id=task.id, rows=rows)

    def _produce_rows(
        self, task: Task, snapshot: BlueSnapshot, token: Token, table: SourceTable
    ) -> int:
        spec = self.source
        key_position = spec.names.index(spec.aggregate_key)
        encode = self._encoder.encode
        rows = 0
        if task.kind == "range":
            assert task.lo is not None
            source = snapshot.read_range(task.lo, task.hi)
        else:
            source = snapshot.read_keys(task.keys or [])
        found: set[tuple[str, ...]] = set()
        natural = [spec.names.index(c) for c in spec.natural_key]
        batch: list[dict[str, bytes]] = []
        for values in source:
            batch.append({"key": str(values[key_position]).encode(), "value": encode(values)})
            if len(batch) == _BATCH:
                self._writer_or_fail().send_batch(token, batch)
                rows += len(batch)
                batch = []
            if task.kind == "keys":
                found.add(tuple(values[i] for i in natural))
        if batch:
            self._writer_or_fail().send_batch(token, batch)
            rows += len(batch)
        if task.kind == "keys":
            rows += self._produce_absent(task, snapshot, token, table, found)
        return rows

    def _produce_absent(
        self,
        task: Task,
        snapshot: BlueSnapshot,
        token: Token,
        table: SourceTable,
        found: set[tuple[str, ...]],
    ) -> int:
        """Requested keys blue does not have: deletes at the snapshot's version."""
        spec = self.source
        count = 0
        for key in task.keys or []:
            if tuple(key) in found:
                continue
            key_fields: dict[str, Any] = dict(zip(spec.natural_key, key, strict=True))
            event = absent_event(table, key_fields, version=snapshot.version, ts_ms=now_ms())
            self._writer_or_fail().send(
                token, str(key_fields[spec.aggregate_key]).encode(), self._codec.encode(event)
            )
            count += 1
        return count

    def _current_snapshot(self) -> BlueSnapshot:
        snap = self._snapshot
        if snap is not None and snap.age_s > self.settings.snapshot.max_snapshot_age_s:
            self._drop_snapshot()
            snap = None
        if snap is None:
            snap = BlueSnapshot(
                self.settings.blue_dsn,
                self.source,
                create_timeout_s=self.settings.snapshot.slot_create_timeout_s,
            )
            self.log.info("snapshot taken", consistent_lsn=snap.version.lsn, slot=snap.slot)
            self._snapshot = snap
        return snap

    def _drop_snapshot(self) -> None:
        if self._snapshot is not None:
            self._snapshot.close()
            self._snapshot = None

    # -- settling ---------------------------------------------------------------------------

    def _collect(self, tokens: list[Token]) -> None:
        """Turn finished tokens into outcomes; nothing is written here."""
        for token in tokens:
            flight = self._in_flight.pop(token, None)
            if flight is None:
                continue  # a token of a task that already failed while reading
            if token.ok:
                self._outcomes.append(
                    _Outcome("complete", flight.task, flight.rows, flight.snapshot_lsn)
                )
                continue
            error = "; ".join(token.errors)
            if token.errors and all(e.split(":")[0] in UNAVAILABLE_KAFKA for e in token.errors):
                # The broker stayed away past the delivery timeout: not the task's fault.
                self._outcomes.append(_Outcome("interrupt", flight.task, detail=f"kafka: {error}"))
                self._kafka.lost(KafkaException(KafkaError(KafkaError._MSG_TIMED_OUT, error)))
            else:
                self._outcomes.append(
                    _Outcome("fail", flight.task, detail=error, produce_errors=token.failed)
                )

    def _record_outcomes(self) -> int:
        """Write the outcomes waiting, oldest first; stop at a lost control connection."""
        recorded = 0
        while self._outcomes:
            outcome = self._outcomes[0]
            try:
                self._record(self._queue_or_fail(), outcome)
            except psycopg.Error as exc:
                self._control_lost(exc)
                break
            self._outcomes.popleft()
            self._heartbeat.drop(outcome.task.id)
            recorded += 1
        return recorded

    def _record(self, queue: TaskQueue, outcome: _Outcome) -> None:
        task = outcome.task
        if outcome.kind == "complete":
            if queue.complete(task, outcome.rows, outcome.snapshot_lsn):
                self.completed += 1
            else:
                self.log.warning("task was taken over before it completed", task_id=task.id)
        elif outcome.kind == "fail":
            state = queue.fail(task, outcome.detail, outcome.produce_errors)
            self.failed += 1
            log = self.log.error if state is State.DEAD else self.log.warning
            log(
                "task failed",
                task_id=task.id,
                attempt=task.attempts,
                state=state.value,
                error=outcome.detail,
            )
        elif outcome.kind == "interrupt":
            state = queue.interrupt(task, outcome.detail)
            self.log.warning(
                "task interrupted; back to the queue",
                task_id=task.id,
                state=state.value,
                cause=outcome.detail,
            )
        else:
            queue.release(task)

    def _shutdown(self) -> None:
        """Drain in-flight messages (bounded), record what settled, give back the rest."""
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        try:
            self._drain(deadline)
        except BluegreenError as exc:  # a dependency stayed away: leave the rest to reclaim
            self.log.warning(
                "stopping with tasks not recorded; they are reclaimed",
                task_ids=[o.task.id for o in self._outcomes],
                error=str(exc),
            )
        finally:
            self._heartbeat.stop()
            self._drop_snapshot()
            if self._writer is not None:
                self._writer.flush(5 if self._kafka.up else 0)
            if self._heartbeat.is_alive():
                self._heartbeat.join(CONNECT_TIMEOUT_S)
            if self._control is not None:
                self._control.close()

    def _drain(self, deadline: float) -> None:
        writer = self._writer
        while writer is not None and self._in_flight and self._kafka.up:
            if time.monotonic() >= deadline:
                break
            writer.poll(0.1)
            self._collect(writer.finished())
        for flight in self._in_flight.values():
            self._outcomes.append(_Outcome("release", flight.task))
        self._in_flight.clear()
        while self._outcomes and time.monotonic() < deadline:
            if self._control_dep.ready():
                self._record_outcomes()
            else:
                time.sleep(min(_IDLE_SLEEP_S, max(0.01, self._control_dep.seconds_to_retry())))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
