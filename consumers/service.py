"""`bluegreen consume`: the long-lived apply service.

One loop: consume, run each message through decode -> transform -> validate into
the batch, and when the batch is full or old enough, hand it to the apply thread,
which applies it to green in one transaction; then write its dead letters' acks and
commit its offsets. Offsets are never committed before green committed (auto-commit
is refused by the client factory).

The service wires three parts and runs the loop and the per-message steps:

* consumers/ownership.py — which partitions are claimed and from where (green's
  record, consumers/positions.py), truncate floors, the rewind on any doubt, the
  audit of green's positions while idle, lag;
* consumers/applier.py — the batch being built and the one in flight: dispatch to
  the apply thread, completion, flush, the split of a refused batch, dead letters
  (consumers/dead_letters.py), the offset commit;
* consumers/backoff.py — green and Kafka as the service sees them, and how long
  each kind of failure waits.

A doubt (a failed green connection, a moved position, dead letters Kafka would not
take) rewinds: the applier drops every batch not durably applied, ownership pauses
the partitions and, once green answers, seeks each to green's stored position.

Threads and connections: this thread consumes, builds batches and reads positions
on its own green connection (rebalance callbacks run here, inside ``consume``);
the apply thread owns the apply connection; one batch is in flight at a time.
Green or Kafka down: the service waits with capped backoff for
``consumer.reconnect_timeout_s``, then stops with one line naming the cause.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from confluent_kafka import (
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)

from bluegreen.core.config import Settings
from bluegreen.core.errors import SerializationError, TransformError
from bluegreen.core.kafka import ensure_topic, make_consumer
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from consumers.applier import Applier, Tally
from consumers.apply import TRANSIENT, GreenWriter, create_green
from consumers.backoff import Backoff
from consumers.batch import Batch, PartitionProgress, Rejected
from consumers.dead_letters import DeadLetters
from consumers.dlq import DlqLimit, DlqWriter
from consumers.gauges import MigrationGauges
from consumers.ownership import Ownership
from consumers.positions import PositionMovedError, PositionReader
from consumers.steps import decode, transform_rows, validate
from schemas.codec import Codec
from schemas.control import Fence, Heartbeat, Truncate, control_of
from schemas.domain import Domain
from schemas.envelope import Version
from schemas.stage import InvalidRowError

_IDLE_POLL_S = 0.05  # an empty batch waits this long for its first messages


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
        self._limit = DlqLimit(self.options)
        self._last_lag = 0.0
        self._gauges = MigrationGauges(settings, metrics, domain)
        self._backoff = Backoff(settings, metrics)
        self._tally = Tally()

    @property
    def applied(self) -> int:
        """Changes applied to green so far."""
        return self._tally.applied

    @property
    def rewinds(self) -> int:
        """Rewinds to green's positions so far."""
        return self._tally.rewinds

    def request_stop(self) -> None:
        """Signal-safe: only sets a flag."""
        self._stop.set()

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> None:
        settings = self.settings
        connect_errors = (psycopg.OperationalError,)
        green, kafka = self._backoff.green, self._backoff.kafka
        green.call(
            lambda: create_green(settings.green_dsn, self.domain), connect_errors, self._stop
        )
        for topic in (self.topic, settings.kafka.dlq_topic):
            kafka.call(
                lambda t=topic: ensure_topic(settings.kafka, t, settings.kafka.partitions),  # type: ignore[misc]
                (KafkaException,),
                self._stop,
            )
        self._writer = GreenWriter(settings.green_dsn, self.topic, self.domain)  # apply thread's
        self._reader = PositionReader(settings.green_dsn, self.topic)  # this thread's
        self._dlq = DlqWriter(settings.kafka, self.metrics)
        self._consumer: Consumer = make_consumer(settings.kafka, self.options.group_id)
        self._ownership = Ownership(
            self._consumer, self._reader, self.topic,
            metrics=self.metrics, backoff=self._backoff, log=self.log,
        )  # fmt: skip
        self._applier = Applier(
            self._writer, DeadLetters(self._dlq), self._consumer, self.topic,
            ownership=self._ownership, limit=self._limit, backoff=self._backoff,
            metrics=self.metrics, tally=self._tally, log=self.log, doubt=self._doubt,
        )  # fmt: skip
        self._consumer.subscribe(
            [self.topic],
            on_assign=self._ownership.on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.log.info("consuming", topic=self.topic)
        try:
            while not self._stop.is_set():
                self.run_once()
            if not self._applier.flush():
                self.log.warning("stopping with an unapplied batch; it will be consumed again")
        except BaseException:
            self._applier.abandon()  # never apply or commit a batch the failure interrupted
            raise
        finally:
            self._applier.shutdown()
            self._consumer.close()
            self._writer.close()  # the apply thread has ended: its connection is free
            self._reader.close()
            self.log.info("stopped", applied=self.applied, rewinds=self.rewinds)

    def run_once(self) -> None:
        now = time.monotonic()
        if self._ownership.claim_due(now):
            self._ownership.claim()
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
            self._applier.dispatch()
        else:
            self._applier.complete(block=False)
        if now - self._last_lag >= self.options.lag_interval_s:
            self._report_lag()
            self._audit_positions()
            self._gauges.maybe_refresh()

    @property
    def _batch(self) -> Batch:
        """The batch being built; the applier holds it (a dispatch or a rewind replaces it)."""
        return self._applier.batch

    # -- one message ----------------------------------------------------------------------------

    def _process(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            self._backoff.kafka_error(error)
            return
        partition, offset = int(message.partition() or 0), int(message.offset() or 0)
        if not self._ownership.owns(partition):
            return  # revoked, lost or rewinding: consumed again from green's position
        self._backoff.message_arrived()
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
            self._applier.truncate(partition, offset, control)
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
        if Version(source["lsn"], source["seq"]) <= self._ownership.floor(partition):
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

    # -- doubt: rewind to green's positions -----------------------------------------------------

    def _doubt(self, exc: BaseException) -> None:
        """Green failed a batch, its position moved, or its dead letters could not be
        written: forget everything not durably applied and claim every partition again
        from green's record."""
        delay = self._backoff.rewind_delay(exc)  # raises once a dependency is down too long
        self._tally.rewinds += 1
        self._applier.discard()
        self._ownership.rewind(delay)

    def _audit_positions(self) -> None:
        """While idle, check green still holds what this consumer applied (Ownership.audit)."""
        if not self._applier.idle:
            return
        try:
            self._ownership.audit()
        except (PositionMovedError, *TRANSIENT) as exc:
            self._doubt(exc)

    # -- rebalances -----------------------------------------------------------------------------

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions}
        if not self._applier.flush():
            # Green refuses: what came from these partitions is redelivered to their next owner.
            self._applier.drop(revoked)
        self._ownership.forget(revoked)
        self.log.info("partitions revoked", partitions=sorted(revoked))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions}
        self._applier.drop(lost)
        self._ownership.forget(lost)
        self.log.warning("partitions lost", partitions=sorted(lost))

    def _report_lag(self) -> None:
        self._last_lag = time.monotonic()
        self._backoff.probe_kafka(lambda: self._consumer.list_topics(self.topic, timeout=1.0))
        self._ownership.report_lag()
