"""The batch applier with fakes: what reaches green, the dead-letter topic and Kafka, in
which order, and what a failure leaves behind."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from confluent_kafka import TopicPartition

from bluegreen.core.config import ConsumerSettings, Settings
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import Metrics
from consumers.applier import Applier, Tally
from consumers.backoff import Backoff
from consumers.batch import Rejected
from consumers.dead_letters import DeadLetters
from consumers.dlq import DlqLimit, DlqLimitExceededError, DlqWriteError
from consumers.ownership import Ownership
from consumers.positions import PositionMovedError
from schemas.control import Truncate
from schemas.envelope import Version
from tests.support.consumer_fakes import (
    TOPIC,
    FakeCommitter,
    FakeConsumer,
    FakeGreen,
    FakeSink,
    FakeWriter,
    Journal,
    change,
    message,
    rejected,
)


class Setup:
    def __init__(self) -> None:
        self.journal = Journal()
        self.writer = FakeWriter(self.journal)
        self.sink = FakeSink(self.journal)
        self.committer = FakeCommitter(self.journal)
        self.consumer = FakeConsumer()
        self.metrics = Metrics()
        settings = Settings(consumer=ConsumerSettings(dlq_max_consecutive=3))
        self.backoff = Backoff(settings, self.metrics)
        log = get_logger(test="applier")
        self.ownership = Ownership(
            self.consumer, FakeGreen(), TOPIC, metrics=self.metrics, backoff=self.backoff, log=log
        )
        self.tally = Tally()
        self.doubts: list[BaseException] = []
        self.applier = Applier(
            self.writer,
            DeadLetters(self.sink),
            self.committer,
            TOPIC,
            ownership=self.ownership,
            limit=DlqLimit(settings.consumer),
            backoff=self.backoff,
            metrics=self.metrics,
            tally=self.tally,
            log=log,
            doubt=self.doubts.append,
        )
        self.ownership.on_assign(self.consumer, [TopicPartition(TOPIC, p) for p in (0, 1)])


@pytest.fixture
def setup() -> Iterator[Setup]:
    s = Setup()
    yield s
    s.applier.shutdown()


def test_dead_letters_first_then_green_then_kafka(setup: Setup) -> None:
    change(setup.applier.batch, 0, 0)
    rejected(setup.applier.batch, 0, 1)
    change(setup.applier.batch, 1, 0)
    assert setup.applier.flush()
    assert setup.journal == [
        "dead letter 0@1 decode",
        "dead letters acknowledged",
        "apply [0, 0] expecting {0: 0, 1: 0}",
        "commit {0: 2, 1: 1}",
    ]
    assert setup.tally.applied == 2
    assert setup.ownership.committed == {0: 2, 1: 1}
    assert setup.applier.idle and not setup.doubts


def test_the_next_batch_expects_what_the_one_in_flight_leaves(setup: Setup) -> None:
    change(setup.applier.batch, 0, 0)
    setup.applier.dispatch()  # in flight
    change(setup.applier.batch, 0, 1)
    assert setup.applier.flush()
    assert setup.journal == [
        "apply [0] expecting {0: 0}",
        "commit {0: 1}",
        "apply [1] expecting {0: 1}",
        "commit {0: 2}",
    ]


def test_a_refused_batch_is_split_and_its_poison_dead_lettered_before_commit(
    setup: Setup,
) -> None:
    for offset in range(3):
        change(setup.applier.batch, 0, offset)
    setup.writer.refused = {1}
    assert setup.applier.flush()
    assert setup.journal == [
        "dead letter 0@1 apply",
        "dead letters acknowledged",
        "apply each [0, 2]",
        "commit {0: 3}",
    ]
    assert setup.tally.applied == 3  # what the batch held, poison included, as before
    assert not setup.doubts


def test_too_many_refused_messages_stop_the_service(setup: Setup) -> None:
    for offset in range(3):
        change(setup.applier.batch, 0, offset)
    setup.writer.refused = {0, 1, 2}
    with pytest.raises(DlqLimitExceededError, match="in a row failed"):
        setup.applier.flush()
    assert not any(line.startswith("commit") for line in setup.journal)


@pytest.mark.parametrize(
    "failure",
    [
        psycopg.OperationalError("server closed the connection"),
        PositionMovedError({0: 7}),
    ],
    ids=["green connection", "position moved"],
)
def test_a_failed_apply_commits_nothing_and_doubts(setup: Setup, failure: Exception) -> None:
    change(setup.applier.batch, 0, 0)
    setup.writer.fail = failure
    assert not setup.applier.flush()
    assert setup.doubts == [failure]
    assert setup.journal == []
    assert setup.tally.applied == 0


def test_dead_letters_kafka_refuses_apply_nothing(setup: Setup) -> None:
    change(setup.applier.batch, 0, 0)
    rejected(setup.applier.batch, 0, 1)
    setup.sink.down = True
    setup.applier.flush()
    assert len(setup.doubts) == 1 and isinstance(setup.doubts[0], DlqWriteError)
    assert setup.journal == []
    assert setup.ownership.position(0) == 0  # nothing expected of green yet


def test_a_failed_offset_commit_leaves_green_ahead(setup: Setup) -> None:
    change(setup.applier.batch, 0, 0)
    setup.committer.fail = True
    assert setup.applier.flush()  # green holds the position: the next owner starts there
    assert setup.ownership.committed == {0: 0, 1: 0}
    assert setup.ownership.position(0) == 1
    assert not setup.doubts


def test_truncate_applies_what_came_before_then_raises_the_floor(setup: Setup) -> None:
    change(setup.applier.batch, 0, 0)
    setup.applier.truncate(0, 1, Truncate(version=Version(500, 2)))
    assert setup.journal == [
        "apply [0] expecting {0: 0}",
        "commit {0: 1}",
        f"truncate 0 at {Version(500, 2)} from 1",
        "commit {0: 2}",
    ]
    assert setup.ownership.floor(0) == Version(500, 2)
    assert setup.ownership.position(0) == 2


def test_truncate_waits_for_green(setup: Setup) -> None:
    setup.writer.fail = psycopg.OperationalError("green is restarting")
    setup.applier.truncate(0, 0, Truncate(version=Version(500, 2)))
    assert len(setup.doubts) == 1
    assert setup.ownership.floor(0) == Version(0, 0)
    assert setup.journal == []


def test_drop_forgets_what_came_from_revoked_partitions(setup: Setup) -> None:
    change(setup.applier.batch, 0, 0)
    change(setup.applier.batch, 1, 0)
    setup.applier.drop({1})
    assert setup.applier.flush()
    assert setup.journal == ["apply [0] expecting {0: 0}", "commit {0: 1}"]


def test_a_dead_letter_is_written_once_until_committed_past() -> None:
    journal = Journal()
    letters = DeadLetters(FakeSink(journal))
    letter = Rejected(message(0, 5), "validate", ValueError("bad"))
    letters.send([letter])
    letters.send([letter])  # consumed again after a rewind
    assert journal == ["dead letter 0@5 validate", "dead letters acknowledged"]
    letters.committed({0: 5})
    assert letters.pending == {(0, 5)}
    letters.committed({0: 6})
    assert letters.pending == frozenset()
