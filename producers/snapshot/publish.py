"""One task's rows into Kafka: read at the worker's exported snapshot, encoded, sent.

A worker keeps one blue snapshot (``BlueSnapshot``) for many tasks and takes a new
one once it is older than ``snapshot.max_snapshot_age_s``; every message of a task
carries that snapshot's version, so the version guard downstream orders them
against CDC. A key task (verification's repair) also sends a delete, at the same
version, for every requested key blue no longer has.
"""

from __future__ import annotations

from typing import Any

from structlog.stdlib import BoundLogger

from bluegreen.control import Task
from bluegreen.core.config import Settings
from producers.snapshot.reader import BlueSnapshot
from producers.writer import KafkaWriter, Token
from schemas.codec import Codec
from schemas.envelope import SourceTable, absent_event, now_ms
from schemas.fastpath import EnvelopeEncoder
from schemas.source import SourceSpec

_BATCH = 1_000  # messages per produce_batch call


class TaskPublisher:
    def __init__(
        self,
        settings: Settings,
        source: SourceSpec,
        codec: Codec,
        encoder: EnvelopeEncoder,
        log: BoundLogger,
    ) -> None:
        self._settings = settings
        self._source = source
        self._codec = codec
        self._encoder = encoder
        self._log = log
        self._snapshot: BlueSnapshot | None = None

    def publish(self, task: Task, writer: KafkaWriter, token: Token) -> tuple[int, int]:
        """Send the task's rows under `token`; (messages sent, the snapshot's LSN).

        Raises what blue, the encoder or the producer raised; the caller drops the
        snapshot and decides whether the task failed or was interrupted.
        """
        snapshot = self.current_snapshot()
        table = self._source.source_table(snapshot.database)
        self._encoder.start_batch(table, snapshot.version, now_ms())
        rows = self._produce_rows(task, snapshot, writer, token, table)
        return rows, snapshot.version.lsn

    def _produce_rows(
        self,
        task: Task,
        snapshot: BlueSnapshot,
        writer: KafkaWriter,
        token: Token,
        table: SourceTable,
    ) -> int:
        spec = self._source
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
                writer.send_batch(token, batch)
                rows += len(batch)
                batch = []
            if task.kind == "keys":
                found.add(tuple(values[i] for i in natural))
        if batch:
            writer.send_batch(token, batch)
            rows += len(batch)
        if task.kind == "keys":
            rows += self._produce_absent(task, snapshot, writer, token, table, found=found)
        return rows

    def _produce_absent(
        self,
        task: Task,
        snapshot: BlueSnapshot,
        writer: KafkaWriter,
        token: Token,
        table: SourceTable,
        *,
        found: set[tuple[str, ...]],
    ) -> int:
        """Requested keys blue does not have: deletes at the snapshot's version."""
        spec = self._source
        count = 0
        for key in task.keys or []:
            if tuple(key) in found:
                continue
            key_fields: dict[str, Any] = dict(zip(spec.natural_key, key, strict=True))
            event = absent_event(table, key_fields, version=snapshot.version, ts_ms=now_ms())
            writer.send(
                token, str(key_fields[spec.aggregate_key]).encode(), self._codec.encode(event)
            )
            count += 1
        return count

    def current_snapshot(self) -> BlueSnapshot:
        snap = self._snapshot
        if snap is not None and snap.age_s > self._settings.snapshot.max_snapshot_age_s:
            self.drop_snapshot()
            snap = None
        if snap is None:
            snap = BlueSnapshot(
                self._settings.blue_dsn,
                self._source,
                create_timeout_s=self._settings.snapshot.slot_create_timeout_s,
            )
            self._log.info("snapshot taken", consistent_lsn=snap.version.lsn, slot=snap.slot)
            self._snapshot = snap
        return snap

    def drop_snapshot(self) -> None:
        if self._snapshot is not None:
            self._snapshot.close()
            self._snapshot = None
