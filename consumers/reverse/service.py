"""`bluegreen reverse-apply`: the reverse applier, a member of a Kafka consumer group.

One loop on one thread: consume up to a batch of GreenChange events from the reverse
topic, and apply them to blue in one transaction (consumers/reverse/blue.py); commit
the Kafka offsets after blue committed. Blue's ``reverse_position`` is the position
that counts (Kafka's committed offsets are a copy): partitions are claimed from it at
assignment and after any doubt — a failed blue or green connection, a position someone
else moved — by pausing them and seeking each to blue's stored offset once blue
answers. Apply is synchronous (a reverse batch is small: keys, not rows), so a
rebalance never finds a batch in flight: a revoked partition's messages are consumed
again by its next owner from blue's position.

Blue, green or Kafka down: capped backoff, one log line per attempt, a one-line
``DependencyError`` after ``reverse_apply.reconnect_timeout_s``. A green state blue
cannot hold (``TransformError``) or an undecodable event stops the service: nothing
is skipped silently.
"""

from __future__ import annotations

import contextlib
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from bluegreen.core import db
from bluegreen.core.config import Settings
from bluegreen.core.errors import ConfigError
from bluegreen.core.kafka import ensure_topic, make_consumer
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from bluegreen.core.retry import Reconnector, one_line
from consumers.apply import TRANSIENT
from consumers.batch import PartitionProgress
from consumers.positions import REVERSE, PositionMovedError, PositionReader
from consumers.reverse.blue import (
    BlueWriter,
    GreenUnavailableError,
    ReverseBatch,
    create_tables,
)
from schemas import reverse
from schemas.control import FENCE_PREFIX, HEARTBEAT_PREFIX, Fence
from schemas.domain import Domain, ReverseSpec
from schemas.envelope import Op, now_ms

_KAFKA_DOWN = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT)
_ROW_OPS = (Op.CREATE, Op.UPDATE, Op.DELETE, Op.READ)


def reverse_spec(domain: Domain) -> ReverseSpec:
    spec = domain.reverse
    if spec is None or not spec.applies:
        raise ConfigError(f"domain {domain.ref} does not say how green's writes go back to blue")
    return spec


class ReverseApplyService:
    def __init__(self, settings: Settings, domain: Domain, metrics: Metrics) -> None:
        self.settings = settings
        self.spec = reverse_spec(domain)
        self.options = settings.reverse_apply
        self.topic = settings.kafka.reverse_topic
        self.metrics = metrics
        self.log = get_logger(service="reverse-apply", group=self.options.group_id)
        self._stop = threading.Event()
        timeout = self.options.reconnect_timeout_s
        gauge = metrics.dependency_up
        self._blue = Reconnector(
            "reverse-apply", "blue", db.describe(settings.blue_dsn), timeout, gauge=gauge
        )
        self._green = Reconnector(
            "reverse-apply", "green", db.describe(settings.green_dsn), timeout, gauge=gauge
        )
        self._kafka = Reconnector(
            "reverse-apply", "kafka", settings.kafka.bootstrap_servers, timeout, gauge=gauge
        )
        self._owned: dict[int, int] = {}  # partition -> the offset blue holds
        self._unclaimed: set[int] = set()  # assigned, paused until blue tells where
        self._claim_at = 0.0
        self._last_lag = 0.0
        self.applied = 0  # aggregates applied
        self.rewinds = 0

    def request_stop(self) -> None:
        """Signal-safe: only sets a flag."""
        self._stop.set()

    @property
    def origin(self) -> str | None:
        """The replication origin this process's blue session carries (None: no session)."""
        writer: BlueWriter | None = getattr(self, "_writer", None)
        return writer.origin if writer is not None else None

    def run(self) -> None:
        settings = self.settings
        self._blue.call(lambda: create_tables(settings.blue_dsn), TRANSIENT, self._stop)
        self._kafka.call(
            lambda: ensure_topic(settings.kafka, self.topic, settings.kafka.partitions),
            (KafkaException,),
            self._stop,
        )
        self._writer = BlueWriter(
            settings.blue_dsn, settings.green_dsn, self.topic, self.spec, self.options.origins
        )
        self._reader = PositionReader(settings.blue_dsn, self.topic, REVERSE)
        self._consumer: Consumer = make_consumer(settings.kafka, self.options.group_id)
        self._consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._forget, on_lost=self._forget
        )
        self.log.info("applying green's changes to blue", topic=self.topic)
        try:
            while not self._stop.is_set():
                self.run_once()
        finally:
            self._consumer.close()
            self._writer.close()
            self._reader.close()
            self.log.info("stopped", applied=self.applied, rewinds=self.rewinds)

    def run_once(self) -> None:
        if self._unclaimed and time.monotonic() >= self._claim_at:
            self._claim()
        messages = self._consumer.consume(
            num_messages=self.options.batch_max_messages, timeout=self.options.batch_max_wait_s
        )
        batch = self._batch(messages)
        if batch.progress:
            self._apply(batch)
        if time.monotonic() - self._last_lag >= self.options.lag_interval_s:
            self._report_lag()

    # -- a batch -------------------------------------------------------------------------------

    def _batch(self, messages: list[Message]) -> ReverseBatch:
        batch = ReverseBatch()
        for message in messages:
            error = message.error()
            if error is not None:
                self._kafka_error(error)
                continue
            partition, offset = int(message.partition() or 0), int(message.offset() or 0)
            if partition not in self._owned or offset < self._owned[partition]:
                continue  # revoked, rewinding, or fetched before a seek: blue holds it
            if self._kafka.down:
                self._kafka.succeeded()
            change = reverse.decode(message.value())  # SerializationError stops the service
            progress = batch.progress.get(partition)
            if progress is None:
                progress = batch.progress[partition] = PartitionProgress(offset + 1)
                batch.expected[partition] = self._owned[partition]
            progress.next_offset = offset + 1
            batch.size += 1
            if change.op == Op.MESSAGE:
                if change.prefix == FENCE_PREFIX:
                    progress.fence = Fence(change.content or "", change.version.lsn)
                elif change.prefix == HEARTBEAT_PREFIX:
                    progress.src_ts_ms = max(progress.src_ts_ms, change.ts_ms)
            elif change.op in _ROW_OPS and change.key:
                lsn = change.version.lsn
                batch.keys[change.key] = max(batch.keys.get(change.key, 0), lsn)
                if change.xid:
                    batch.xids.add(change.xid)
                progress.src_lsn = max(progress.src_lsn, lsn)
                progress.src_ts_ms = max(progress.src_ts_ms, change.ts_ms)
                batch.green_commit_ms.append(change.ts_ms)
        return batch

    def _apply(self, batch: ReverseBatch) -> None:
        started = time.monotonic()
        try:
            applied = self._writer.apply(batch)
        except PositionMovedError as exc:
            self.log.warning("blue's position moved; rewinding", error=str(exc))
            self._rewind(0.0)
            return
        except GreenUnavailableError as exc:
            self._rewind(self._green.failed(exc))
            return
        except TRANSIENT as exc:
            self._rewind(self._blue.failed(exc))
            return
        blue_ms = now_ms()
        self._blue.succeeded()
        if batch.keys:
            self._green.succeeded()
        for partition, progress in batch.progress.items():
            self._owned[partition] = progress.next_offset
        self._commit(batch)
        self.applied += applied.aggregates
        self.metrics.reverse_batch_seconds.observe(time.monotonic() - started)
        for action, count in (("upserted", applied.upserted), ("deleted", applied.deleted)):
            if count:
                self.metrics.reverse_applied.labels(action).inc(count)
        for green_ms in batch.green_commit_ms:
            self.metrics.reverse_latency_seconds.observe(max(0, blue_ms - green_ms) / 1000)

    def _commit(self, batch: ReverseBatch) -> None:
        offsets = [TopicPartition(self.topic, p, g.next_offset) for p, g in batch.progress.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Blue holds the position already: the partition's next owner starts there.
            self.log.warning("offset commit failed", error=one_line(exc))

    # -- ownership: blue's positions -------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        try:
            stored = self._reader.claim(numbers)
        except TRANSIENT as exc:
            self.log.warning("blue unreachable at assignment", error=one_line(exc))
            self._unclaimed.update(numbers)
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)
            self._claim_at = time.monotonic() + self._blue.failed(exc)
            return
        for tp in partitions:
            tp.offset = stored[tp.partition].next_offset
            self._owned[tp.partition] = tp.offset
        consumer.incremental_assign(partitions)
        consumer.resume(partitions)
        self.log.info("partitions assigned", partitions=numbers)

    def _forget(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._owned.pop(tp.partition, None)
            self._unclaimed.discard(tp.partition)
            with contextlib.suppress(KeyError):
                self.metrics.reverse_lag.remove(str(tp.partition))

    def _rewind(self, delay: float) -> None:
        """Doubt: pause every owned partition; claim them again from blue after delay."""
        self.rewinds += 1
        self._unclaimed.update(self._owned)
        self._owned.clear()
        self._consumer.pause([TopicPartition(self.topic, p) for p in self._unclaimed])
        self._claim_at = time.monotonic() + delay

    def _claim(self) -> None:
        assigned = {tp.partition for tp in self._consumer.assignment()}
        self._unclaimed &= assigned
        wanted = sorted(self._unclaimed)
        if not wanted:
            return
        try:
            stored = self._reader.claim(wanted)
        except TRANSIENT as exc:
            self._claim_at = time.monotonic() + self._blue.failed(exc)
            return
        self._blue.succeeded()
        resumed = []
        for partition in wanted:
            tp = TopicPartition(self.topic, partition, stored[partition].next_offset)
            try:
                self._consumer.seek(tp)
            except KafkaException as exc:  # just assigned: not seekable yet
                self.log.info("partition not seekable yet", partition=partition, error=str(exc))
                self._claim_at = time.monotonic() + 0.2
                continue
            self._owned[partition] = tp.offset
            self._unclaimed.discard(partition)
            resumed.append(tp)
        if resumed:
            self._consumer.resume(resumed)
            self.log.info("partitions claimed from blue's positions", partitions=wanted)

    # -- Kafka ------------------------------------------------------------------------------

    def _kafka_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaException(error)
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.code() in _KAFKA_DOWN:
            self._kafka.failed(KafkaException(error))  # raises once down for too long
            return
        self.log.warning("consumer error", error=str(error))

    def _report_lag(self) -> None:
        self._last_lag = time.monotonic()
        for partition, offset in list(self._owned.items()):
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), cached=True
                )
            except KafkaException:
                continue
            if high >= 0:
                self.metrics.reverse_lag.labels(str(partition)).set(max(0, high - offset))
        if self._kafka.down:
            with contextlib.suppress(KafkaException):
                self._consumer.list_topics(self.topic, timeout=1.0)
                self._kafka.succeeded()
