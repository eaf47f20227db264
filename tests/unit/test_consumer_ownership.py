"""Partition ownership: claims, doubt and rewind, floors and lag, with a fake consumer."""

from __future__ import annotations

import psycopg
import pytest
from confluent_kafka import TopicPartition

from bluegreen.core.config import ConsumerSettings, Settings
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from consumers.backoff import Backoff
from consumers.batch import Batch
from consumers.ownership import Ownership
from consumers.positions import Position, PositionMovedError
from schemas.envelope import Version
from tests.support.consumer_fakes import FLOOR, TOPIC, FakeConsumer, FakeGreen


class Setup:
    def __init__(self) -> None:
        self.consumer = FakeConsumer()
        self.green = FakeGreen()
        self.metrics = Metrics()
        self.backoff = Backoff(Settings(consumer=ConsumerSettings()), self.metrics)
        self.ownership = Ownership(
            self.consumer,
            self.green,
            TOPIC,
            metrics=self.metrics,
            backoff=self.backoff,
            log=get_logger(test="ownership"),
        )

    def assign(self, *partitions: int) -> list[TopicPartition]:
        tps = [TopicPartition(TOPIC, p) for p in partitions]
        self.ownership.on_assign(self.consumer, tps)
        return tps

    @property
    def paused_gauge(self) -> float:
        value: float = self.metrics.consumer_paused._value.get()
        return value


@pytest.fixture
def setup() -> Setup:
    return Setup()


def batch_of(**next_offsets: int) -> Batch:
    batch = Batch()
    for name, next_offset in next_offsets.items():
        batch.advance(int(name.removeprefix("p")), next_offset - 1)
    return batch


def test_assignment_starts_where_green_stands_whatever_kafka_says(setup: Setup) -> None:
    setup.green.positions = {0: Position(40, Version(7, 1)), 1: Position(0, FLOOR)}
    setup.consumer.paused = {0}  # paused in an earlier assignment
    tps = setup.assign(0, 1)
    assert [tp.offset for tp in tps] == [40, 0]
    assert setup.ownership.owns(0) and setup.ownership.owns(1)
    assert setup.ownership.position(0) == 40
    assert setup.ownership.floor(0) == Version(7, 1)
    assert setup.ownership.committed == {0: 40, 1: 0}
    assert setup.consumer.paused == set()  # a pause must not outlive an assignment


def test_green_down_at_assignment_pauses_until_claimed(setup: Setup) -> None:
    setup.green.down = True
    setup.assign(0, 1)
    assert setup.consumer.assigned == {0, 1} and setup.consumer.paused == {0, 1}
    assert not setup.ownership.owns_any
    assert setup.paused_gauge == 1
    assert setup.backoff.green.down
    assert not setup.ownership.claim_due(0.0)  # backing off

    setup.green.down = False
    setup.green.positions = {1: Position(9, FLOOR)}
    assert setup.ownership.claim_due(float("inf"))
    setup.ownership.claim()
    assert setup.consumer.seeks == {0: 0, 1: 9}
    assert setup.consumer.paused == set()
    assert setup.ownership.position(1) == 9
    assert setup.paused_gauge == 0
    assert not setup.backoff.green.down
    assert not setup.ownership.claim_due(float("inf"))


def test_dispatch_expects_what_was_applied_before(setup: Setup) -> None:
    setup.green.positions = {0: Position(10, FLOOR)}
    setup.assign(0, 1)
    first, second = batch_of(p0=15, p1=3), batch_of(p0=20)
    setup.ownership.expect(first)
    setup.ownership.expect(second)  # pipelined: expects what the first will leave
    assert first.expected == {0: 10, 1: 0}
    assert second.expected == {0: 15}
    assert setup.ownership.position(0) == 20


def test_rewind_pauses_everything_and_claims_again_from_green(setup: Setup) -> None:
    setup.assign(0, 1)
    setup.ownership.expect(batch_of(p0=50, p1=60))
    setup.ownership.rewind(0.0)
    assert not setup.ownership.owns_any
    assert setup.consumer.paused == {0, 1}
    assert setup.paused_gauge == 1
    setup.green.positions = {0: Position(45, FLOOR), 1: Position(60, FLOOR)}  # lost some
    assert setup.ownership.claim_due(float("inf"))
    setup.ownership.claim()
    assert setup.consumer.seeks == {0: 45, 1: 60}
    assert setup.ownership.position(0) == 45


def test_a_partition_not_seekable_yet_is_claimed_later(setup: Setup) -> None:
    setup.assign(0, 1)
    setup.ownership.rewind(0.0)
    setup.consumer.unseekable = {1}
    setup.ownership.claim()
    assert setup.ownership.owns(0) and not setup.ownership.owns(1)
    assert setup.consumer.paused == {1}
    assert setup.paused_gauge == 1
    setup.consumer.unseekable = set()
    setup.ownership.claim()
    assert setup.ownership.owns(1) and setup.paused_gauge == 0


def test_partitions_no_longer_assigned_are_not_claimed(setup: Setup) -> None:
    setup.assign(0, 1)
    setup.ownership.rewind(0.0)
    setup.consumer.assigned = {0}
    setup.ownership.claim()
    assert setup.green.reads[-1] == [0]
    assert not setup.ownership.claim_due(float("inf"))


def test_audit_finds_positions_green_lost(setup: Setup) -> None:
    setup.assign(0, 1)
    setup.ownership.expect(batch_of(p0=30))
    setup.green.positions = {0: Position(30, FLOOR)}
    setup.ownership.audit()  # where it should be: nothing to do
    setup.green.positions = {0: Position(25, FLOOR)}  # a crash lost the last commit
    with pytest.raises(PositionMovedError) as moved:
        setup.ownership.audit()
    assert moved.value.moved == {0: 25}
    setup.green.down = True
    with pytest.raises(psycopg.OperationalError):
        setup.ownership.audit()


def test_audit_reads_nothing_without_partitions(setup: Setup) -> None:
    setup.ownership.audit()
    assert setup.green.reads == []


def test_truncate_raises_the_floor(setup: Setup) -> None:
    setup.assign(0)
    setup.ownership.truncated(0, 12, Version(99, 3))
    assert setup.ownership.position(0) == 12
    assert setup.ownership.floor(0) == Version(99, 3)
    assert setup.ownership.floor(5) == Version(0, 0)  # not owned: no floor


def test_forget_drops_everything_of_a_partition(setup: Setup) -> None:
    setup.consumer.high = {0: 100, 1: 10}
    setup.assign(0, 1)
    setup.ownership.report_lag()
    assert setup.metrics.consumer_lag.labels("0")._value.get() == 100
    setup.ownership.forget({0})
    assert not setup.ownership.owns(0) and setup.ownership.owns(1)
    assert dict(setup.ownership.committed) == {1: 0}
    samples = [s.labels for m in setup.metrics.consumer_lag.collect() for s in m.samples]
    assert samples == [{"partition": "1"}]


def test_lag_is_measured_from_the_committed_offsets(setup: Setup) -> None:
    setup.consumer.high = {0: 100}
    setup.assign(0, 1)  # partition 1 has no watermark: skipped
    setup.ownership.confirm([TopicPartition(TOPIC, 0, 80)])
    setup.ownership.report_lag()
    assert setup.metrics.consumer_lag.labels("0")._value.get() == 20
