"""One snapshot worker: claim a task, read its rows at the worker's snapshot, produce
them, and mark the task COMPLETED only once the broker acknowledged every message.

``run()`` loops ``run_once()``; a stop request (SIGTERM) stops claiming, drains the
messages in flight for a bounded time, completes what was acknowledged and gives
back what was not.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import KafkaException, Producer

from bluegreen import db
from bluegreen.config import Settings
from bluegreen.errors import BluegreenError
from bluegreen.kafka import producer_for_topic
from bluegreen.logs import get_logger
from producers.blue_setup import slot_exists
from producers.snapshot.reader import BlueSnapshot
from producers.snapshot.tasks import State, Task, TaskQueue
from producers.writer import KafkaWriter, Token
from schemas.codec import Codec, default_codec
from schemas.envelope import SourceTable, absent_event, now_ms
from schemas.fastpath import EnvelopeEncoder
from schemas.source import SourceSpec

_IDLE_SLEEP_S = 0.2
_BATCH = 1_000  # messages per produce_batch call
_DRAIN_TIMEOUT_S = 30.0


@dataclass
class _InFlight:
    task: Task
    rows: int
    snapshot_lsn: int


class Heartbeat(threading.Thread):
    """Keeps the claims of this worker's open tasks alive from a connection of its own."""

    def __init__(self, settings: Settings, worker_id: str) -> None:
        super().__init__(name="snapshot-heartbeat", daemon=True)
        self._settings = settings
        self._worker_id = worker_id
        self._task_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.failure: BaseException | None = None

    def hold(self, task_id: int) -> None:
        with self._lock:
            self._task_ids.add(task_id)

    def drop(self, task_id: int) -> None:
        with self._lock:
            self._task_ids.discard(task_id)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        interval = self._settings.snapshot.heartbeat_interval_s
        try:
            with db.connect(self._settings.control_dsn, autocommit=True) as conn:
                queue = TaskQueue(conn, self._worker_id, self._settings.snapshot)
                while not self._stop.wait(interval):
                    with self._lock:
                        held = sorted(self._task_ids)
                    queue.heartbeat(held)
        except (psycopg.Error, OSError) as exc:  # the control database went away
            self.failure = exc


class SnapshotWorker:
    def __init__(
        self,
        settings: Settings,
        source: SourceSpec,
        *,
        worker_id: str | None = None,
        producer: Producer | None = None,
        codec: Codec | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.worker_id = worker_id or f"{socket.gethostname()}:{id(self):x}"
        self.log = get_logger(service="snapshot", worker=self.worker_id)
        self._control = db.connect(settings.control_dsn, autocommit=True)
        self._queue = TaskQueue(self._control, self.worker_id, settings.snapshot)
        self._writer = KafkaWriter(
            producer or producer_for_topic(settings.kafka, settings.kafka.topic),
            settings.kafka.topic,
            name="snapshot",
        )
        self._codec = codec or default_codec()
        self._encoder = EnvelopeEncoder(self._codec, source.columns)
        self._snapshot: BlueSnapshot | None = None
        self._in_flight: dict[Token, _InFlight] = {}
        self._heartbeat = Heartbeat(settings, self.worker_id)
        self._stop = threading.Event()
        self.completed = 0
        self.failed = 0

    # -- service loop -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Signal-safe: only sets a flag; the loop stops at its next step."""
        self._stop.set()

    def run(self) -> None:
        try:
            if not slot_exists(self.settings.blue_dsn, self.settings.cdc.slot):
                raise BluegreenError(
                    f"blue has no replication slot {self.settings.cdc.slot}: the snapshot must "
                    "start after the CDC slot exists, or changes between the two would be lost. "
                    "Run `bluegreen snapshot` (it creates the slot) or `bluegreen cdc` first."
                )
            self._heartbeat.start()
            while not self._stop.is_set():
                if self._heartbeat.failure is not None:
                    raise BluegreenError("lost the control database") from self._heartbeat.failure
                if not self.run_once() and self._nothing_left():
                    break
        finally:
            self._shutdown()

    def run_once(self) -> bool:
        """One step; True when it did work (claimed a task or settled one)."""
        settled = self._settle(self._writer.finished())
        if len(self._in_flight) >= self.settings.snapshot.max_inflight_tasks:
            self._writer.poll(0.1)
            return settled > 0
        task = self._queue.claim()
        if task is None:
            self._writer.poll(0.05 if self._in_flight else _IDLE_SLEEP_S)
            return settled > 0
        self._heartbeat.hold(task.id)
        self._run_task(task)
        return True

    def _nothing_left(self) -> bool:
        if self._in_flight:
            return False
        row = self._control.execute(
            "SELECT count(*) FROM bluegreen.snapshot_task "
            "WHERE state IN ('READY', 'IN_PROGRESS', 'ERROR')"
        ).fetchone()
        return row is not None and row[0] == 0

    # -- one task -----------------------------------------------------------------------------

    def _run_task(self, task: Task) -> None:
        token = self._writer.token(task.id)
        try:
            snapshot = self._current_snapshot()
            table = self.source.source_table(snapshot.database)
            self._encoder.start_batch(table, snapshot.version, now_ms())
            rows = self._produce_rows(task, snapshot, token, table)
        except (
            BluegreenError,
            KafkaException,
            psycopg.Error,
            OSError,
            KeyError,
            ValueError,
        ) as exc:
            self._drop_snapshot()
            self._writer.seal(token)
            self._record_failure(task, f"{type(exc).__name__}: {exc}", 0)
            return
        self._in_flight[token] = _InFlight(task, rows, snapshot.version.lsn)
        self._writer.seal(token)
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
            batch.append({"key": values[key_position].encode(), "value": encode(values)})
            if len(batch) == _BATCH:
                self._writer.send_batch(token, batch)
                rows += len(batch)
                batch = []
            if task.kind == "keys":
                found.add(tuple(values[i] for i in natural))
        if batch:
            self._writer.send_batch(token, batch)
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
            self._writer.send(
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

    def _settle(self, tokens: list[Token]) -> int:
        for token in tokens:
            flight = self._in_flight.pop(token, None)
            if flight is None:
                continue  # a token of a task that already failed while reading
            if token.ok:
                if self._queue.complete(flight.task, flight.rows, flight.snapshot_lsn):
                    self.completed += 1
                else:
                    self.log.warning(
                        "task was taken over before it completed", task_id=flight.task.id
                    )
            else:
                self._record_failure(flight.task, "; ".join(token.errors), token.failed)
            self._heartbeat.drop(flight.task.id)
        return len(tokens)

    def _record_failure(self, task: Task, error: str, produce_errors: int) -> None:
        state = self._queue.fail(task, error, produce_errors)
        self._heartbeat.drop(task.id)
        self.failed += 1
        log = self.log.error if state is State.DEAD else self.log.warning
        log("task failed", task_id=task.id, attempt=task.attempts, state=state.value, error=error)

    def _shutdown(self) -> None:
        """Drain in-flight messages (bounded), settle them, give back the rest."""
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        while self._in_flight and time.monotonic() < deadline:
            self._writer.poll(0.1)
            self._settle(self._writer.finished())
        for flight in self._in_flight.values():
            self._queue.release(flight.task)
        self._in_flight.clear()
        self._heartbeat.stop()
        self._drop_snapshot()
        self._writer.flush(5)
        self._control.close()
