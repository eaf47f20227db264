"""`bluegreen consume`: the long-lived apply service.

One loop: consume, run each message through decode -> transform -> validate into
the batch, and when the batch is full or old enough, apply it to green in one
transaction, write its dead letters, then commit its offsets. Offsets are never
committed before green committed (auto-commit is refused by the client factory).

Green down or slow: the partitions are paused and the batch retried with
exponential backoff; nothing more is fetched meanwhile, so memory stays bounded
whatever the backlog. A rebalance flushes the batch before partitions go (or
drops what belongs to them, to be redelivered to their new owner). Green's own
record of positions decides where an assigned partition starts.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from bluegreen.config import Settings
from bluegreen.errors import SerializationError, TransformError
from bluegreen.kafka import ensure_topic, make_consumer
from bluegreen.logs import get_logger
from bluegreen.metrics import Metrics
from consumers.apply import TRANSIENT, GreenWriter
from consumers.batch import Batch, PartitionProgress, Rejected
from consumers.dlq import DlqLimit, DlqWriter
from consumers.steps import Fence, Heartbeat, Truncate, control_of, decode, transform_rows, validate
from cutover.exporter import MigrationGauges
from schemas.catalog.ddl import create_green
from schemas.catalog.validation import InvalidRowError
from schemas.codec import Codec, default_codec
from schemas.envelope import Version, now_ms

_FINAL_FLUSH_ATTEMPTS = 5
_IDLE_POLL_S = 0.05  # an empty batch waits this long for its first messages


class ConsumerService:
    def __init__(self, settings: Settings, metrics: Metrics, *, codec: Codec | None = None):
        self.settings = settings
        self.options = settings.consumer
        self.topic = settings.kafka.topic
        self.metrics = metrics
        self.log = get_logger(service="consume", group=settings.consumer.group_id)
        self._codec = codec or default_codec()
        self._stop = threading.Event()
        self._batch = Batch()
        self._floors: dict[int, Version] = {}
        self._committed: dict[int, int] = {}
        self._unknown_floors: set[int] = set()
        self._paused = False
        self._retry_at = 0.0
        self._retry_delay = self.options.retry_backoff_base_s
        self._limit = DlqLimit(self.options)
        self._last_lag = 0.0
        self._inflight: tuple[Batch, Future[float]] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="green-apply")
        self._gauges = MigrationGauges(settings, metrics)
        self.applied = 0

    def request_stop(self) -> None:
        """Signal-safe: only sets a flag."""
        self._stop.set()

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> None:
        settings = self.settings
        create_green(settings.green_dsn)
        ensure_topic(settings.kafka, self.topic, settings.kafka.partitions)
        ensure_topic(settings.kafka, settings.kafka.dlq_topic, settings.kafka.partitions)
        self._writer = GreenWriter(settings.green_dsn, self.topic)
        self._dlq = DlqWriter(settings.kafka, self.metrics)
        self._consumer: Consumer = make_consumer(settings.kafka, self.options.group_id)
        self._consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.log.info("consuming", topic=self.topic)
        try:
            while not self._stop.is_set():
                self.run_once()
            self._final_flush()
        except BaseException:
            self._batch = Batch()  # never apply or commit a batch the failure interrupted
            self._inflight = None
            raise
        finally:
            self._executor.shutdown(wait=True)
            self._consumer.close()
            self._writer.close()
            self.log.info("stopped", applied=self.applied)

    def run_once(self) -> None:
        now = time.monotonic()
        if self._paused:
            self._consumer.consume(num_messages=1, timeout=0.1)  # serve the group meanwhile
            if now >= self._retry_at and self._load_unknown_floors():
                self._flush()
            return
        room = self.options.batch_max_messages - self._batch.size
        if self._batch.empty:
            wait = _IDLE_POLL_S
        else:
            wait = max(0.0, self._batch.started + self.options.batch_max_wait_s - now)
        messages = self._consumer.consume(num_messages=max(1, room), timeout=wait)
        for message in messages:
            self._process(message)
        now = time.monotonic()
        drained = len(messages) < room  # nothing more waiting: no reason to hold the batch
        if not self._batch.empty and (
            drained
            or self._batch.size >= self.options.batch_max_messages
            or now >= self._batch.started + self.options.batch_max_wait_s
        ):
            self._dispatch()
        else:
            self._complete(block=False)
        if now - self._last_lag >= self.options.lag_interval_s:
            self._report_lag()
            self._gauges.maybe_refresh()

    # -- one message ----------------------------------------------------------------------------

    def _process(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            if error.code() != KafkaError._PARTITION_EOF:
                self.log.warning("consumer error", error=str(error))
            return
        partition, offset = int(message.partition() or 0), int(message.offset() or 0)
        if self._batch.empty:
            self._batch.started = time.monotonic()
        try:
            event = decode(self._codec, message.value())
        except SerializationError as exc:
            self._batch.advance(partition, offset)
            self._reject(message, "decode", exc)
            return
        control = control_of(event)
        if isinstance(control, Truncate):
            self._truncate(partition, offset, control)
            return
        progress = self._batch.advance(partition, offset)
        if isinstance(control, Fence):
            progress.fence = control
        elif isinstance(control, Heartbeat):
            progress.src_ts_ms = max(progress.src_ts_ms, control.ts_ms)
            self._batch.cdc_commit_ms.append(control.ts_ms)
        else:
            self._change(message, partition, progress, event)
            return
        self._limit.observe(False)

    def _change(
        self, message: Message, partition: int, progress: PartitionProgress, event: dict[str, Any]
    ) -> None:
        source = event["source"]
        if Version(source["lsn"], source["seq"]) <= self._floors.get(partition, Version(0, 0)):
            self._limit.observe(False)  # older than a TRUNCATE of blue: nothing to apply
            return
        try:
            rows = transform_rows(event, partition)
        except TransformError as exc:
            self._reject(message, "transform", exc)
            return
        try:
            validate(rows)
        except InvalidRowError as exc:
            self._reject(message, "validate", exc)
            return
        self._batch.add_rows(message, rows, event["op"])
        if not source["snapshot"]:
            progress.src_lsn = max(progress.src_lsn, source["lsn"])
            progress.src_ts_ms = max(progress.src_ts_ms, source["ts_ms"])
            self._batch.cdc_commit_ms.append(source["ts_ms"])
        self._limit.observe(False)

    def _reject(self, message: Message, step: str, error: BaseException) -> None:
        self._batch.rejected.append(Rejected(message, step, error))
        self.log.warning(
            "dead letter",
            step=step,
            partition=message.partition(),
            offset=message.offset(),
            error=str(error)[:500],
        )
        self._limit.observe(True)  # raises DlqLimitExceeded: nothing of this batch is committed

    def _truncate(self, partition: int, offset: int, control: Truncate) -> None:
        """Blue was truncated: apply everything before it, then the truncate on its own."""
        while not self._flush():
            self._wait_for_green()
        progress = self._batch.advance(partition, offset)
        while True:
            try:
                self._writer.truncate(partition, control.version, progress)
                break
            except TRANSIENT as exc:
                self._note_failure(exc)
                self._wait_for_green()
        self._floors[partition] = control.version
        self.log.warning("blue was truncated: partition cleared", partition=partition)
        self._commit(self._batch)
        self._batch = Batch()

    # -- batches --------------------------------------------------------------------------------
    #
    # A batch is applied in the apply thread while the next one is built here; at most
    # one is in flight. Its dead letters are acknowledged before it is applied, and its
    # offsets are committed after green committed: green's position never passes a
    # message that is neither applied nor dead-lettered.

    def _dispatch(self) -> bool:
        """Hand the current batch to the apply thread (after settling the previous one)."""
        if not self._complete(block=True):
            return False
        batch = self._batch
        if batch.empty:
            return True
        self._dead_letters(batch.rejected)
        batch.rejected.clear()
        self._batch = Batch()
        try:
            self._writer.stage(batch)  # here: formatting rows needs the GIL, the apply does not
        except TRANSIENT as exc:
            self._batch = batch
            self._note_failure(exc)
            return False
        self._inflight = (batch, self._executor.submit(self._timed_apply, batch, True))
        return True

    def _complete(self, *, block: bool) -> bool:
        """Settle the batch in flight: commit it, or take it back and pause if green failed."""
        if self._inflight is None:
            return True
        batch, future = self._inflight
        if not block and not future.done():
            return True
        self._inflight = None
        try:
            seconds = future.result()
        except TRANSIENT as exc:
            batch.absorb(self._batch)
            self._batch = batch
            self._note_failure(exc)
            return False
        except _Refused:
            seconds = self._bisect(batch)
        self._finish(batch, seconds)
        return True

    def _flush(self) -> bool:
        """Apply the current batch now (rebalance, truncate, stop, retry)."""
        if not self._complete(block=True):
            return False
        batch = self._batch
        if batch.empty:
            return True
        self._dead_letters(batch.rejected)
        batch.rejected.clear()
        try:
            seconds = self._timed_apply(batch)
        except TRANSIENT as exc:
            self._note_failure(exc)
            return False
        except _Refused:
            seconds = self._bisect(batch)
        self._batch = Batch()
        self._finish(batch, seconds)
        return True

    def _timed_apply(self, batch: Batch, staged: bool = False) -> float:
        started = time.monotonic()
        try:
            self._writer.apply(batch, staged=staged)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            raise _Refused(exc) from exc
        batch.committed_ms = now_ms()
        return time.monotonic() - started

    def _bisect(self, batch: Batch) -> float:
        """Green refused the batch's data: dead-letter the bad messages, apply the rest."""
        started = time.monotonic()
        self.log.warning("batch refused by green; applying message by message")

        def dead_letter_first(refused: list[tuple[int, psycopg.Error]]) -> None:
            letters = [Rejected(batch.messages[owner], "apply", err) for owner, err in refused]
            for _ in letters:
                self._limit.observe(True)
            self._dead_letters(letters)

        while True:
            try:
                self._writer.apply_each(batch, dead_letter_first)
                batch.committed_ms = now_ms()
                return time.monotonic() - started
            except TRANSIENT as exc:
                self._note_failure(exc)
                self._wait_for_green()

    def _dead_letters(self, rejected: list[Rejected]) -> None:
        for letter in rejected:
            self._dlq.send(letter.message, letter.step, letter.error)
        if rejected:
            self._dlq.flush()

    def _finish(self, batch: Batch, seconds: float) -> None:
        self._commit(batch)
        self._observe(batch, seconds)
        self._resume()

    def _commit(self, batch: Batch) -> None:
        offsets = [TopicPartition(self.topic, p, g.next_offset) for p, g in batch.progress.items()]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Green holds the position already: the partition's next owner starts there.
            self.log.warning("offset commit failed", error=str(exc))
            return
        for tp in offsets:
            self._committed[tp.partition] = tp.offset

    def _observe(self, batch: Batch, seconds: float) -> None:
        self.metrics.consumer_batch_seconds.observe(seconds)
        for op, count in batch.applied_ops.items():
            self.metrics.consumer_applied.labels(op).inc(count)
            self.applied += count
        green_ms = batch.committed_ms or now_ms()
        for commit_ms in batch.cdc_commit_ms:
            self.metrics.end_to_end_seconds.observe(max(0, green_ms - commit_ms) / 1000)
        lsns = [g.src_lsn for g in batch.progress.values() if g.src_lsn]
        if lsns:
            self.metrics.consumer_last_lsn.set(max(lsns))

    def _final_flush(self) -> None:
        for _ in range(_FINAL_FLUSH_ATTEMPTS):
            if self._flush():
                return
            self._wait_for_green()
        self.log.warning("stopping with an unapplied batch; it will be consumed again")

    # -- green down: pause, back off, resume ----------------------------------------------------

    def _note_failure(self, exc: BaseException) -> None:
        self.metrics.consumer_apply_retries.inc()
        if not self._paused:
            self._consumer.pause(self._consumer.assignment())
            self._paused = True
            self.metrics.consumer_paused.set(1)
        self._retry_at = time.monotonic() + self._retry_delay
        self.log.warning(
            "green refused the batch; partitions paused",
            error=str(exc).strip()[:300],
            retry_in_s=round(self._retry_delay, 2),
        )
        self._retry_delay = min(self._retry_delay * 2, self.options.retry_backoff_max_s)

    def _wait_for_green(self) -> None:
        while time.monotonic() < self._retry_at and not self._stop.is_set():
            self._consumer.consume(num_messages=1, timeout=0.1)

    def _resume(self) -> None:
        self._retry_delay = self.options.retry_backoff_base_s
        if self._paused and not self._unknown_floors:
            self._consumer.resume(self._consumer.assignment())
            self._paused = False
            self.metrics.consumer_paused.set(0)
            self.log.info("green accepts writes again; partitions resumed")

    def _load_unknown_floors(self) -> bool:
        if not self._unknown_floors:
            return True
        try:
            positions = self._writer.positions(self._unknown_floors)
        except TRANSIENT as exc:
            self._note_failure(exc)
            return False
        for partition in self._unknown_floors:
            position = positions.get(partition)
            self._floors[partition] = position.floor if position else Version(0, 0)
        self._unknown_floors.clear()
        if self._batch.empty:
            self._resume()
        return True

    # -- rebalances -----------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        try:
            positions = self._writer.positions(numbers)
        except TRANSIENT as exc:
            # Start from Kafka's committed offsets (never past green's) and pause until
            # green tells this partition's truncate floor.
            self.log.warning("green unreachable at assignment", error=str(exc).strip()[:200])
            self._unknown_floors.update(numbers)
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)
            self._paused = True
            self.metrics.consumer_paused.set(1)
            self._retry_at = time.monotonic() + self._retry_delay
            return
        for tp in partitions:
            position = positions.get(tp.partition)
            if position is not None:
                tp.offset = position.next_offset
                self._committed[tp.partition] = position.next_offset
            self._floors[tp.partition] = position.floor if position else Version(0, 0)
        consumer.incremental_assign(partitions)
        if self._paused:
            consumer.pause(partitions)
        self.log.info("partitions assigned", partitions=numbers)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions}
        if not self._flush():
            # Green refuses: what came from these partitions is redelivered to their next owner.
            self._batch.drop_partitions(revoked)
        self._forget(revoked)
        self.log.info("partitions revoked", partitions=sorted(revoked))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions}
        self._batch.drop_partitions(lost)
        self._forget(lost)
        self.log.warning("partitions lost", partitions=sorted(lost))

    def _forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self._floors.pop(partition, None)
            self._committed.pop(partition, None)
            self._unknown_floors.discard(partition)
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(str(partition))

    def _report_lag(self) -> None:
        self._last_lag = time.monotonic()
        for partition, committed in list(self._committed.items()):
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), cached=True
                )
            except KafkaException:
                continue
            if high >= 0:
                self.metrics.consumer_lag.labels(str(partition)).set(max(0, high - committed))

    @property
    def stats(self) -> dict[str, Any]:
        return {"applied": self.applied, "paused": self._paused}


class _Refused(Exception):  # noqa: N818 - internal signal, never leaves this module
    """Green refused a batch on its data (not a transient failure)."""
