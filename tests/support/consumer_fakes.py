"""Fakes of what the consumer's parts ask of Kafka and green (unit tests, no services)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import psycopg
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from consumers.batch import Batch, PartitionProgress, Rejected
from consumers.dlq import DlqWriteError
from consumers.positions import Position
from schemas.envelope import Version

TOPIC = "changes"
FLOOR = Version(0, 0)


class FakeConsumer:
    def __init__(self) -> None:
        self.assigned: set[int] = set()
        self.paused: set[int] = set()
        self.seeks: dict[int, int] = {}
        self.unseekable: set[int] = set()
        self.high: dict[int, int] = {}

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(TOPIC, p) for p in sorted(self.assigned)]

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned.update(tp.partition for tp in partitions)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update(tp.partition for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update(tp.partition for tp in partitions)

    def seek(self, partition: TopicPartition) -> None:
        if partition.partition in self.unseekable:
            raise KafkaException(KafkaError(KafkaError._STATE, "not yet"))
        self.seeks[partition.partition] = partition.offset

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        if partition.partition not in self.high:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION, "no"))
        return 0, self.high[partition.partition]


class FakeGreen:
    """Green's positions, and whether it answers."""

    def __init__(self) -> None:
        self.positions: dict[int, Position] = {}
        self.down = False
        self.reads: list[list[int]] = []

    def claim(self, partitions: Iterable[int]) -> dict[int, Position]:
        wanted = sorted(partitions)
        self.reads.append(wanted)
        if self.down:
            raise psycopg.OperationalError("green is down")
        return {p: self.positions.get(p, Position(0, FLOOR)) for p in wanted}


class Journal(list[str]):
    """What the fakes were asked, in order: dead letters, applies, commits."""


class FakeWriter:
    """Green as the apply thread sees it: refuses messages at `refused` offsets on their
    data, or fails the next call with `fail`."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.refused: set[int] = set()
        self.fail: BaseException | None = None

    def _failing(self) -> None:
        if self.fail is not None:
            fail, self.fail = self.fail, None
            raise fail

    def apply(self, batch: Batch) -> None:
        self._failing()
        if any(m.offset() in self.refused for m in batch.messages):
            raise psycopg.errors.DataError("value too long")
        self.journal.append(f"apply {offsets(batch)} expecting {batch.expected}")

    def apply_each(
        self, batch: Batch, before_commit: Callable[[list[tuple[int, psycopg.Error]]], None]
    ) -> list[tuple[int, psycopg.Error]]:
        self._failing()
        refused: list[tuple[int, psycopg.Error]] = [
            (i, psycopg.errors.DataError("value too long"))
            for i, m in enumerate(batch.messages)
            if m.offset() in self.refused
        ]
        before_commit(refused)
        kept = [m.offset() for m in batch.messages if m.offset() not in self.refused]
        self.journal.append(f"apply each {kept}")
        return refused

    def truncate(
        self, partition: int, version: Version, progress: PartitionProgress, expected: int
    ) -> None:
        self._failing()
        self.journal.append(f"truncate {partition} at {version} from {expected}")


class FakeSink:
    """The dead-letter topic; `down` makes Kafka refuse the letters."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.down = False

    def send(self, message: Message, step: str, error: BaseException) -> None:
        if self.down:
            raise DlqWriteError("kafka refused the dead letter")
        self.journal.append(f"dead letter {message.partition()}@{message.offset()} {step}")

    def flush(self, timeout_s: float = 30.0) -> None:
        self.journal.append("dead letters acknowledged")


class FakeCommitter:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.fail = False

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        if self.fail:
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS, "rebalancing"))
        committed = {tp.partition: tp.offset for tp in offsets}
        self.journal.append(f"commit {committed}")
        return offsets


def message(partition: int, offset: int) -> Message:
    return Message(topic=TOPIC, partition=partition, offset=offset, value=b"change")


def offsets(batch: Batch) -> list[int]:
    return [int(m.offset() or 0) for m in batch.messages]


def change(batch: Batch, partition: int, offset: int) -> None:
    """A change that becomes one row."""
    batch.advance(partition, offset)
    batch.add_rows(message(partition, offset), [(partition, offset)], "u")


def rejected(batch: Batch, partition: int, offset: int) -> None:
    """A message a step before the batch rejected."""
    batch.advance(partition, offset)
    batch.rejected.append(Rejected(message(partition, offset), "decode", ValueError("bad")))
