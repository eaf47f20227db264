"""`bluegreen consume`: the long-lived apply service.

One loop: consume, run each message through decode -> transform -> validate into
the batch, and when the batch is full or old enough, hand it to the apply thread,
which applies it to green in one transaction; then write its dead letters' acks and
commit its offsets. Offsets are never committed before green committed (auto-commit
is refused by the client factory).

Where a partition starts is green's record (consumers/positions.py), read when the
partition is *claimed*: at assignment, and again after any doubt. Doubt is a failed
green connection (a transaction the client saw commit may be lost: green commits
asynchronously) or a batch whose position check failed (someone else applied the
partition, or green lost transactions). Then the consumer *rewinds*: it drops every
batch not durably applied, pauses its partitions, and — once green answers — seeks
each to green's stored position and resumes. Nothing is retried from memory, so
nothing a crash lost can be skipped.

Threads and connections: this thread consumes, builds batches and reads positions
on its own green connection (rebalance callbacks run here, inside ``consume``);
the apply thread owns the apply connection; one batch is in flight at a time.
Green or Kafka down: the service waits with capped backoff for
``consumer.reconnect_timeout_s``, then stops with one line naming the cause.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psycopg
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import SerializationError, TransformError
from bluegreen.core.kafka import ensure_topic, make_consumer
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from bluegreen.core.retry import Reconnector, one_line
from consumers.apply import TRANSIENT, GreenWriter, create_green
from consumers.batch import Batch, PartitionProgress, Rejected
from consumers.dlq import DlqLimit, DlqWriteError, DlqWriter
from consumers.gauges import MigrationGauges
from consumers.positions import PositionMovedError, PositionReader
from consumers.steps import decode, transform_rows, validate
from schemas.codec import Codec
from schemas.control import Fence, Heartbeat, Truncate, control_of
from schemas.domain import Domain
from schemas.envelope import Version, now_ms
from schemas.stage import InvalidRowError

_IDLE_POLL_S = 0.05  # an empty batch waits this long for its first messages
_KAFKA_DOWN = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT)


class ConsumerService:
    def __init__(
        self, settings: Settings, domain: Domain, metrics: Metrics, *, codec: Codec | None = None
    ):
        self.settings = settings
        self.domain = domain
        self.options = settings.consumer
        self.topic = settings.kafka.topic
        self.metrics = metrics
        self.log = get_logger(service="consume", group=settings.consumer.group_id)
        self._codec = codec or domain.codec()
        self._stop = threading.Event()
        self._batch = Batch()
        # Claimed partitions: the offset green will hold once every dispatched batch
        # committed (the next batch's expected position), and the truncate floor.
        self._owned: dict[int, int] = {}
        self._floors: dict[int, Version] = {}
        # Assigned partitions whose position green has not told yet: paused until claimed.
        self._unclaimed: set[int] = set()
        self._claim_at = 0.0
        self._committed: dict[int, int] = {}
        self._dead_lettered: set[tuple[int, int]] = set()  # (partition, offset) not yet behind
        self._limit = DlqLimit(self.options)
        self._last_lag = 0.0
        self._inflight: tuple[Batch, Future[float]] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="green-apply")
        self._gauges = MigrationGauges(settings, metrics, domain)
        timeout = self.options.reconnect_timeout_s
        self._green = Reconnector(
            "consume", "green", db.describe(settings.green_dsn), timeout,
            gauge=metrics.dependency_up,
            base_s=self.options.retry_backoff_base_s, max_s=self.options.retry_backoff_max_s,
        )  # fmt: skip
        self._kafka = Reconnector(
            "consume", "kafka", settings.kafka.bootstrap_servers, timeout,
            gauge=metrics.dependency_up,
        )  # fmt: skip
        self.applied = 0
        self.rewinds = 0

    def request_stop(self) -> None:
        """Signal-safe: only sets a flag."""
        self._stop.set()

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> None:
        settings = self.settings
        connect_errors = (psycopg.OperationalError,)
        self._green.call(
            lambda: create_green(settings.green_dsn, self.domain), connect_errors, self._stop
        )
        for topic in (self.topic, settings.kafka.dlq_topic):
            self._kafka.call(
                lambda t=topic: ensure_topic(settings.kafka, t, settings.kafka.partitions),  # type: ignore[misc]
                (KafkaException,),
                self._stop,
            )
        self._writer = GreenWriter(settings.green_dsn, self.topic, self.domain)  # apply thread's
        self._reader = PositionReader(settings.green_dsn, self.topic)  # this thread's
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
            if not self._flush():
                self.log.warning("stopping with an unapplied batch; it will be consumed again")
        except BaseException:
            self._batch = Batch()  # never apply or commit a batch the failure interrupted
            self._inflight = None
            raise
        finally:
            self._executor.shutdown(wait=True)
            self._consumer.close()
            self._writer.close()  # the apply thread has ended: its connection is free
            self._reader.close()
            self.log.info("stopped", applied=self.applied, rewinds=self.rewinds)

    def run_once(self) -> None:
        now = time.monotonic()
        if self._unclaimed and now >= self._claim_at:
            self._claim()
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
            self._audit_positions()
            self._gauges.maybe_refresh()

    # -- one message ----------------------------------------------------------------------------

    def _process(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            self._kafka_error(error)
            return
        partition, offset = int(message.partition() or 0), int(message.offset() or 0)
        if partition not in self._owned:
            return  # revoked, lost or rewinding: consumed again from green's position
        if self._kafka.down:
            self._kafka.succeeded()
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

    def _kafka_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaException(error)
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.code() in _KAFKA_DOWN:
            self._kafka.failed(KafkaException(error))  # raises once down for too long
            return
        self.log.warning("consumer error", error=str(error))

    def _change(
        self, message: Message, partition: int, progress: PartitionProgress, event: dict[str, Any]
    ) -> None:
        source = event["source"]
        if Version(source["lsn"], source["seq"]) <= self._floors.get(partition, Version(0, 0)):
            self._limit.observe(False)  # older than a TRUNCATE of blue: nothing to apply
            return
        try:
            rows = transform_rows(self.domain, event, partition)
        except TransformError as exc:
            self._reject(message, "transform", exc)
            return
        try:
            validate(self.domain, rows)
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
        if not self._flush():
            return  # rewinding: the truncate is consumed again
        batch = self._batch
        progress = batch.advance(partition, offset)
        self._batch = Batch()
        expected = self._owned[partition]
        job = self._executor.submit(
            self._writer.truncate, partition, control.version, progress, expected
        )
        if not self._settle(job):
            return
        self._owned[partition] = progress.next_offset
        self._floors[partition] = control.version
        self.log.warning("blue was truncated: partition cleared", partition=partition)
        self._commit(batch)

    # -- batches --------------------------------------------------------------------------------
    #
    # A batch is applied in the apply thread while the next one is built here; at most
    # one is in flight. Its dead letters are acknowledged before it is applied, and its
    # offsets are committed after green committed: green's position never passes a
    # message that is neither applied nor dead-lettered.

    def _dispatch(self) -> None:
        """Hand the current batch to the apply thread (after settling the previous one)."""
        if not self._complete(block=True) or self._batch.empty:
            return
        batch, self._batch = self._batch, Batch()
        try:
            self._dead_letters(batch.rejected)
        except DlqWriteError as exc:  # Kafka down: nothing of the batch may be applied
            self._doubt(exc)
            return
        batch.rejected.clear()
        for partition, progress in batch.progress.items():
            # Green must hold exactly what this consumer applied before, or nothing happens.
            batch.expected[partition] = self._owned[partition]
            self._owned[partition] = progress.next_offset
        self._inflight = (batch, self._executor.submit(self._timed_apply, batch))

    def _complete(self, *, block: bool) -> bool:
        """Settle the batch in flight: commit its offsets, or rewind if green failed it."""
        if self._inflight is None:
            return True
        batch, future = self._inflight
        if not block and not future.done():
            return True
        self._inflight = None
        try:
            seconds: float | None = future.result()
        except _Refused:
            seconds = self._bisect(batch)
        except (PositionMovedError, DlqWriteError, *TRANSIENT) as exc:
            self._doubt(exc)
            return False
        if seconds is None:
            return False
        self._finish(batch, seconds)
        return True

    def _flush(self) -> bool:
        """Apply the current batch now and wait for it (rebalance, truncate, stop)."""
        self._dispatch()
        return self._complete(block=True) and self._batch.empty

    def _timed_apply(self, batch: Batch) -> float:
        """Runs on the apply thread."""
        started = time.monotonic()
        try:
            self._writer.apply(batch)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
            raise _Refused(exc) from exc
        batch.committed_ms = now_ms()
        return time.monotonic() - started

    def _settle(self, job: Future[Any]) -> bool:
        """Wait for an apply-thread job; on a green failure rewind and return False."""
        try:
            job.result()
        except (PositionMovedError, DlqWriteError, *TRANSIENT) as exc:
            self._doubt(exc)
            return False
        return True

    def _bisect(self, batch: Batch) -> float | None:
        """Green refused the batch's data: dead-letter the bad messages, apply the rest."""
        started = time.monotonic()
        self.log.warning("batch refused by green; applying message by message")

        def dead_letter_first(refused: list[tuple[int, psycopg.Error]]) -> None:
            letters = [Rejected(batch.messages[owner], "apply", err) for owner, err in refused]
            for _ in letters:
                self._limit.observe(True)
            self._dead_letters(letters)

        job = self._executor.submit(self._writer.apply_each, batch, dead_letter_first)
        if not self._settle(job):
            return None
        batch.committed_ms = now_ms()
        return time.monotonic() - started

    def _dead_letters(self, rejected: list[Rejected]) -> None:
        sent = 0
        for letter in rejected:
            origin = (int(letter.message.partition() or 0), int(letter.message.offset() or 0))
            if origin in self._dead_lettered:
                continue  # consumed again after a rewind: written once is enough
            self._dlq.send(letter.message, letter.step, letter.error)
            self._dead_lettered.add(origin)
            sent += 1
        if sent:
            self._dlq.flush()

    def _finish(self, batch: Batch, seconds: float) -> None:
        self._green.succeeded()
        self._commit(batch)
        self._observe(batch, seconds)

    def _commit(self, batch: Batch) -> None:
        offsets = [TopicPartition(self.topic, p, g.next_offset) for p, g in batch.progress.items()]
        if not offsets:
            return
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Green holds the position already: the partition's next owner starts there.
            self.log.warning("offset commit failed", error=one_line(exc))
            return
        for tp in offsets:
            self._committed[tp.partition] = tp.offset
        if self._dead_lettered:  # those behind green's position are never consumed again
            self._dead_lettered = {
                (p, o) for p, o in self._dead_lettered if o >= self._committed.get(p, 0)
            }

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

    # -- doubt: rewind to green's positions -----------------------------------------------------

    def _doubt(self, exc: BaseException) -> None:
        """Green failed a batch, its position moved, or its dead letters could not be
        written: forget everything not durably applied and claim every partition again
        from green's record."""
        if isinstance(exc, PositionMovedError):
            delay = 0.0
            self.log.warning("green's position moved; rewinding", error=str(exc))
        elif isinstance(exc, DlqWriteError):
            delay = self._kafka.failed(exc)
        else:
            self.metrics.consumer_apply_retries.inc()
            delay = self._green.failed(exc)  # raises once green is down for too long
        self.rewinds += 1
        self._batch = Batch()
        self._unclaimed.update(self._owned)
        self._owned.clear()
        self._consumer.pause([TopicPartition(self.topic, p) for p in self._unclaimed])
        self.metrics.consumer_paused.set(1)
        self._claim_at = time.monotonic() + delay

    def _audit_positions(self) -> None:
        """While idle, check green still holds what this consumer applied.

        A green crash can lose transactions the client saw commit (asynchronous commit),
        and a quiet stream would never send a batch whose position check finds it; nor
        would a connection that broke while idle be noticed. Reading the positions on
        this thread's connection every lag interval finds both.
        """
        if self._inflight is not None or not self._batch.empty or not self._owned:
            return
        try:
            stored = self._reader.claim(self._owned)
        except TRANSIENT as exc:
            self._doubt(exc)
            return
        moved = {
            p: stored[p].next_offset
            for p, offset in self._owned.items()
            if stored[p].next_offset != offset
        }
        if moved:
            self._doubt(PositionMovedError(moved))

    def _claim(self) -> None:
        """Seek the unclaimed partitions to green's positions and resume them."""
        assigned = {tp.partition for tp in self._consumer.assignment()}
        self._unclaimed &= assigned
        wanted = sorted(self._unclaimed)
        if not wanted:
            return
        try:
            positions = self._reader.claim(wanted)
        except TRANSIENT as exc:
            self._claim_at = time.monotonic() + self._green.failed(exc)
            return
        self._green.succeeded()
        for partition in wanted:
            position = positions[partition]
            start = position.next_offset
            tp = TopicPartition(self.topic, partition, start)
            try:
                self._consumer.seek(tp)
            except KafkaException as exc:
                self.log.info("partition not seekable yet", partition=partition, error=str(exc))
                self._claim_at = time.monotonic() + 0.2
                continue
            self._owned[partition] = start
            self._floors[partition] = position.floor
            self._committed[partition] = start
            self._unclaimed.discard(partition)
        resumed = [TopicPartition(self.topic, p) for p in wanted if p in self._owned]
        if resumed:
            self._consumer.resume(resumed)
            self.log.info("partitions claimed from green's positions", partitions=wanted)
        if not self._unclaimed:
            self.metrics.consumer_paused.set(0)

    # -- rebalances -----------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        try:
            positions = self._reader.claim(numbers)
        except TRANSIENT as exc:
            # Paused until green tells where they stand.
            self.log.warning("green unreachable at assignment", error=one_line(exc))
            self._unclaimed.update(numbers)
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)
            self.metrics.consumer_paused.set(1)
            self._claim_at = time.monotonic() + self._green.failed(exc)
            return
        for tp in partitions:
            position = positions[tp.partition]
            tp.offset = position.next_offset
            self._owned[tp.partition] = position.next_offset
            self._floors[tp.partition] = position.floor
            self._committed[tp.partition] = position.next_offset
        consumer.incremental_assign(partitions)
        # librdkafka keeps a partition's pause across assignments: one paused here during
        # a rewind, revoked, and assigned back later would never be fetched again.
        consumer.resume(partitions)
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
            self._owned.pop(partition, None)
            self._floors.pop(partition, None)
            self._committed.pop(partition, None)
            self._unclaimed.discard(partition)
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(str(partition))

    def _report_lag(self) -> None:
        self._last_lag = time.monotonic()
        if self._kafka.down:
            try:  # a positive sign of life while no message arrives
                self._consumer.list_topics(self.topic, timeout=1.0)
                self._kafka.succeeded()
            except KafkaException as exc:
                self._kafka.failed(exc)
        for partition, committed in list(self._committed.items()):
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), cached=True
                )
            except KafkaException:
                continue
            if high >= 0:
                self.metrics.consumer_lag.labels(str(partition)).set(max(0, high - committed))


class _Refused(Exception):  # noqa: N818 - internal signal, never leaves this module
    """Green refused a batch on its data (not a transient failure)."""
