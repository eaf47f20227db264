"""Partition ownership: which partitions this consumer applies, and from where.

Where a partition starts is green's record (consumers/positions.py), read when the
partition is *claimed*: at assignment, and again after any doubt. Doubt is a failed
green connection (a transaction the client saw commit may be lost: green commits
asynchronously) or a batch whose position check failed (someone else applied the
partition, or green lost transactions). Then the consumer *rewinds*: it drops every
batch not durably applied, pauses its partitions, and — once green answers — seeks
each to green's stored position and resumes. Nothing is retried from memory, so
nothing a crash lost can be skipped.

Runs on the consumer thread (rebalance callbacks run there, inside ``consume``) and
reads positions on that thread's own green connection. The Kafka consumer and the
position reader come in as the small protocols below, so the bookkeeping can be
tested with fakes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Protocol

import structlog
from confluent_kafka import KafkaException, TopicPartition

from bluegreen.core.metrics import Metrics
from bluegreen.core.retry import one_line
from consumers.apply import TRANSIENT
from consumers.backoff import Backoff
from consumers.batch import Batch
from consumers.positions import Position, PositionMovedError
from schemas.envelope import Version

_UNSEEKABLE_RETRY_S = 0.2  # a partition just assigned may not be seekable yet


class PartitionClient(Protocol):
    """What ownership asks of the Kafka consumer."""

    def assignment(self) -> list[TopicPartition]: ...
    def incremental_assign(self, partitions: list[TopicPartition]) -> None: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...
    def resume(self, partitions: list[TopicPartition]) -> None: ...
    def seek(self, partition: TopicPartition) -> None: ...
    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]: ...


class PositionSource(Protocol):
    """Green's positions (consumers.positions.PositionReader)."""

    def claim(self, partitions: Iterable[int]) -> dict[int, Position]: ...


class Ownership:
    def __init__(
        self,
        consumer: PartitionClient,
        reader: PositionSource,
        topic: str,
        *,
        metrics: Metrics,
        backoff: Backoff,
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self._consumer = consumer
        self._reader = reader
        self.topic = topic
        self._metrics = metrics
        self._backoff = backoff
        self._log = log
        # Claimed partitions: the offset green will hold once every dispatched batch
        # committed (the next batch's expected position), and the truncate floor.
        self._owned: dict[int, int] = {}
        self._floors: dict[int, Version] = {}
        # Assigned partitions whose position green has not told yet: paused until claimed.
        self._unclaimed: set[int] = set()
        self._claim_at = 0.0
        self._committed: dict[int, int] = {}  # offsets committed to Kafka (lag, dead letters)

    # -- what is owned ----------------------------------------------------------------------

    def owns(self, partition: int) -> bool:
        return partition in self._owned

    @property
    def owns_any(self) -> bool:
        return bool(self._owned)

    def floor(self, partition: int) -> Version:
        """Changes at or below it are older than a TRUNCATE of blue: nothing to apply."""
        return self._floors.get(partition, Version(0, 0))

    def position(self, partition: int) -> int:
        """The offset green will hold once every dispatched batch committed."""
        return self._owned[partition]

    @property
    def committed(self) -> Mapping[int, int]:
        return self._committed

    def expect(self, batch: Batch) -> None:
        """At dispatch: where green must stand for the batch, and where it stands after."""
        for partition, progress in batch.progress.items():
            # Green must hold exactly what this consumer applied before, or nothing happens.
            batch.expected[partition] = self._owned[partition]
            self._owned[partition] = progress.next_offset

    def truncated(self, partition: int, next_offset: int, floor: Version) -> None:
        self._owned[partition] = next_offset
        self._floors[partition] = floor

    def confirm(self, offsets: Iterable[TopicPartition]) -> None:
        """These offsets are committed to Kafka."""
        for tp in offsets:
            self._committed[tp.partition] = tp.offset

    # -- rebalances -------------------------------------------------------------------------

    def on_assign(self, consumer: PartitionClient, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        try:
            positions = self._reader.claim(numbers)
        except TRANSIENT as exc:
            # Paused until green tells where they stand.
            self._log.warning("green unreachable at assignment", error=one_line(exc))
            self._unclaimed.update(numbers)
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)
            self._metrics.consumer_paused.set(1)
            self._claim_at = time.monotonic() + self._backoff.green.failed(exc)
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
        self._log.info("partitions assigned", partitions=numbers)

    def forget(self, partitions: set[int]) -> None:
        """Revoked or lost: no longer this consumer's to apply."""
        for partition in partitions:
            self._owned.pop(partition, None)
            self._floors.pop(partition, None)
            self._committed.pop(partition, None)
            self._unclaimed.discard(partition)
            with contextlib.suppress(KeyError):
                self._metrics.consumer_lag.remove(str(partition))

    # -- doubt: rewind to green's positions -------------------------------------------------

    def rewind(self, delay: float) -> None:
        """Pause every owned partition; claim them again from green's record after delay."""
        self._unclaimed.update(self._owned)
        self._owned.clear()
        self._consumer.pause([TopicPartition(self.topic, p) for p in self._unclaimed])
        self._metrics.consumer_paused.set(1)
        self._claim_at = time.monotonic() + delay

    def audit(self) -> None:
        """While idle, check green still holds what this consumer applied.

        A green crash can lose transactions the client saw commit (asynchronous commit),
        and a quiet stream would never send a batch whose position check finds it; nor
        would a connection that broke while idle be noticed. Reading the positions on
        this thread's connection every lag interval finds both: raises
        PositionMovedError, or the connection's transient error, for the caller to rewind.
        """
        if not self._owned:
            return
        stored = self._reader.claim(self._owned)
        moved = {
            p: stored[p].next_offset
            for p, offset in self._owned.items()
            if stored[p].next_offset != offset
        }
        if moved:
            raise PositionMovedError(moved)

    def claim_due(self, now: float) -> bool:
        return bool(self._unclaimed) and now >= self._claim_at

    def claim(self) -> None:
        """Seek the unclaimed partitions to green's positions and resume them."""
        assigned = {tp.partition for tp in self._consumer.assignment()}
        self._unclaimed &= assigned
        wanted = sorted(self._unclaimed)
        if not wanted:
            return
        try:
            positions = self._reader.claim(wanted)
        except TRANSIENT as exc:
            self._claim_at = time.monotonic() + self._backoff.green.failed(exc)
            return
        self._backoff.green.succeeded()
        for partition in wanted:
            position = positions[partition]
            start = position.next_offset
            tp = TopicPartition(self.topic, partition, start)
            try:
                self._consumer.seek(tp)
            except KafkaException as exc:
                self._log.info("partition not seekable yet", partition=partition, error=str(exc))
                self._claim_at = time.monotonic() + _UNSEEKABLE_RETRY_S
                continue
            self._owned[partition] = start
            self._floors[partition] = position.floor
            self._committed[partition] = start
            self._unclaimed.discard(partition)
        resumed = [TopicPartition(self.topic, p) for p in wanted if p in self._owned]
        if resumed:
            self._consumer.resume(resumed)
            self._log.info("partitions claimed from green's positions", partitions=wanted)
        if not self._unclaimed:
            self._metrics.consumer_paused.set(0)

    # -- lag --------------------------------------------------------------------------------

    def report_lag(self) -> None:
        for partition, committed in list(self._committed.items()):
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), cached=True
                )
            except KafkaException:
                continue
            if high >= 0:
                self._metrics.consumer_lag.labels(str(partition)).set(max(0, high - committed))
