"""The batch applier: batches to green on the apply thread, then their offsets to Kafka.

A batch is applied in the apply thread while the next one is built on the consumer
thread; at most one is in flight. Its dead letters are acknowledged before it is
applied, and its offsets are committed after green committed: green's position never
passes a message that is neither applied nor dead-lettered. A batch green refuses on
its data is applied again message by message, and the messages green refuses go to
the dead-letter topic before green commits past them.

Any other failure — a broken green connection, a moved position, dead letters Kafka
would not take — is a *doubt*: the applier hands it to the ``doubt`` callback (the
service rewinds to green's positions, consumers/ownership.py) and applies nothing
more of what it held.

The GreenWriter (consumers/apply.py) is used by the apply thread only: every call to
it is submitted to the one-thread executor.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import psycopg
import structlog
from confluent_kafka import KafkaException, TopicPartition

from bluegreen.core.metrics import Metrics
from bluegreen.core.retry import one_line
from consumers.apply import TRANSIENT
from consumers.backoff import Backoff
from consumers.batch import Batch, PartitionProgress, Rejected
from consumers.dead_letters import DeadLetters
from consumers.dlq import DlqLimit, DlqWriteError
from consumers.ownership import Ownership
from consumers.positions import PositionMovedError
from schemas.control import Truncate
from schemas.envelope import Version, now_ms


@dataclass
class Tally:
    """What the service did so far: read by the stop line and by tests, from any thread."""

    applied: int = 0  # changes applied to green
    rewinds: int = 0  # rewinds to green's positions


class BatchWriter(Protocol):
    """consumers.apply.GreenWriter: one green transaction per call."""

    def apply(self, batch: Batch) -> None: ...
    def apply_each(
        self, batch: Batch, before_commit: Callable[[list[tuple[int, psycopg.Error]]], None]
    ) -> list[tuple[int, psycopg.Error]]: ...
    def truncate(
        self, partition: int, version: Version, progress: PartitionProgress, expected: int
    ) -> None: ...


class OffsetCommitter(Protocol):
    """What the applier asks of the Kafka consumer."""

    def commit(
        self, *, offsets: list[TopicPartition], asynchronous: Literal[False]
    ) -> list[TopicPartition]: ...


class Applier:
    def __init__(
        self,
        writer: BatchWriter,
        letters: DeadLetters,
        consumer: OffsetCommitter,
        topic: str,
        *,
        ownership: Ownership,
        limit: DlqLimit,
        backoff: Backoff,
        metrics: Metrics,
        tally: Tally,
        log: structlog.stdlib.BoundLogger,
        doubt: Callable[[BaseException], None],
    ) -> None:
        self._writer = writer  # the apply thread's: only ever called through the executor
        self._letters = letters
        self._consumer = consumer
        self.topic = topic
        self._ownership = ownership
        self._limit = limit
        self._backoff = backoff
        self._metrics = metrics
        self._tally = tally
        self._log = log
        self._doubt = doubt
        self.batch = Batch()  # the batch being built on the consumer thread
        self._inflight: tuple[Batch, Future[float]] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="green-apply")

    @property
    def idle(self) -> bool:
        """No batch in flight, none being built."""
        return self._inflight is None and self.batch.empty

    def discard(self) -> None:
        """Forget the batch being built (a rewind consumes it again)."""
        self.batch = Batch()

    def abandon(self) -> None:
        """Never apply or commit a batch a failure interrupted."""
        self.batch = Batch()
        self._inflight = None

    def drop(self, partitions: set[int]) -> None:
        """Forget what the batch being built holds of these partitions (revoked, lost)."""
        self.batch.drop_partitions(partitions)

    def shutdown(self) -> None:
        """Wait for the apply thread to end: the writer's connection is free after this."""
        self._executor.shutdown(wait=True)

    # -- batches ----------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Hand the current batch to the apply thread (after settling the previous one)."""
        if not self.complete(block=True) or self.batch.empty:
            return
        batch, self.batch = self.batch, Batch()
        try:
            self._letters.send(batch.rejected)
        except DlqWriteError as exc:  # Kafka down: nothing of the batch may be applied
            self._doubt(exc)
            return
        batch.rejected.clear()
        self._ownership.expect(batch)
        self._inflight = (batch, self._executor.submit(self._timed_apply, batch))

    def complete(self, *, block: bool) -> bool:
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

    def flush(self) -> bool:
        """Apply the current batch now and wait for it (rebalance, truncate, stop)."""
        self.dispatch()
        return self.complete(block=True) and self.batch.empty

    def truncate(self, partition: int, offset: int, control: Truncate) -> None:
        """Blue was truncated: apply everything before it, then the truncate on its own."""
        if not self.flush():
            return  # rewinding: the truncate is consumed again
        batch = self.batch
        progress = batch.advance(partition, offset)
        self.batch = Batch()
        expected = self._ownership.position(partition)
        job = self._executor.submit(
            self._writer.truncate, partition, control.version, progress, expected
        )
        if not self._settle(job):
            return
        self._ownership.truncated(partition, progress.next_offset, control.version)
        self._log.warning("blue was truncated: partition cleared", partition=partition)
        self._commit(batch)

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
        self._log.warning("batch refused by green; applying message by message")

        def dead_letter_first(refused: list[tuple[int, psycopg.Error]]) -> None:
            letters = [Rejected(batch.messages[owner], "apply", err) for owner, err in refused]
            for _ in letters:
                self._limit.observe(True)
            self._letters.send(letters)

        job = self._executor.submit(self._writer.apply_each, batch, dead_letter_first)
        if not self._settle(job):
            return None
        batch.committed_ms = now_ms()
        return time.monotonic() - started

    def _finish(self, batch: Batch, seconds: float) -> None:
        self._backoff.green.succeeded()
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
            self._log.warning("offset commit failed", error=one_line(exc))
            return
        self._ownership.confirm(offsets)
        self._letters.committed(self._ownership.committed)

    def _observe(self, batch: Batch, seconds: float) -> None:
        self._metrics.consumer_batch_seconds.observe(seconds)
        for op, count in batch.applied_ops.items():
            self._metrics.consumer_applied.labels(op).inc(count)
            self._tally.applied += count
        green_ms = batch.committed_ms or now_ms()
        for commit_ms in batch.cdc_commit_ms:
            self._metrics.end_to_end_seconds.observe(max(0, green_ms - commit_ms) / 1000)
        lsns = [g.src_lsn for g in batch.progress.values() if g.src_lsn]
        if lsns:
            self._metrics.consumer_last_lsn.set(max(lsns))


class _Refused(Exception):  # noqa: N818 - internal signal, never leaves this module
    """Green refused a batch on its data (not a transient failure)."""
